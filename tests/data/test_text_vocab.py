"""The word-level vocabulary of jaxvision.data.text."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxvision.data.text import BOS, EOS, PAD, SPECIALS, UNK, Vocabulary, tokenize


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Hi, Bo!  It's 3pm.") == ["hi", ",", "bo", "!", "it", "'", "s", "3pm", "."]
    assert tokenize("snake_case  tabs\tand\nlines") == ["snake_case", "tabs", "and", "lines"]
    assert tokenize("") == []


def test_build_orders_by_count_then_alphabet():
    vocab = Vocabulary.build(["The cat sat.", "the cat, a mat.", "A the"])
    # counts by hand: the 3; ".", a, cat 2; ",", mat, sat 1 (ties in code-point order)
    assert vocab.tokens == (*SPECIALS, "the", ".", "a", "cat", ",", "mat", "sat")
    assert len(vocab) == 11
    assert [vocab.id(w) for w in SPECIALS] == [PAD, BOS, EOS, UNK]
    # the same texts in another order give the same vocabulary
    assert Vocabulary.build(["A the", "the cat, a mat.", "The cat sat."]) == vocab


def test_build_max_size_counts_the_specials_and_min_count_filters():
    texts = ["x x x y y z"]
    assert Vocabulary.build(texts, max_size=5).tokens == (*SPECIALS, "x")
    assert Vocabulary.build(texts, min_count=2).tokens == (*SPECIALS, "x", "y")
    assert Vocabulary.build(texts, max_size=4).tokens == SPECIALS
    with pytest.raises(ValueError, match="max_size"):
        Vocabulary.build(texts, max_size=3)
    with pytest.raises(ValueError, match="min_count"):
        Vocabulary.build(texts, min_count=0)


def test_encode_truncates_adds_eos_and_pads():
    vocab = Vocabulary([*SPECIALS, "a", "b", "c"])  # a=4, b=5, c=6
    assert vocab.encode("a b c", 5).tolist() == [4, 5, 6, 0, 0]
    assert vocab.encode("a b c", 5, eos=True).tolist() == [4, 5, 6, 2, 0]
    assert vocab.encode("a b c", 2).tolist() == [4, 5]
    assert vocab.encode("a b c", 3, eos=True).tolist() == [4, 5, 2]  # truncated to make room
    assert vocab.encode("", 3, eos=True).tolist() == [2, 0, 0]
    assert vocab.encode("A zebra b", 4).tolist() == [4, UNK, 5, 0]  # unknown words -> <unk>
    out = vocab.encode("a", 3)
    assert out.dtype == np.int32 and out.shape == (3,)
    with pytest.raises(ValueError, match="length"):
        vocab.encode("a", 1, eos=True)


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    vocab = Vocabulary([*SPECIALS, "a", "b", "c"])
    assert vocab.decode([BOS, 4, PAD, 5, EOS, 6, 6]) == "a b"
    assert vocab.decode(np.array([[4], [3]])) == "a <unk>"
    assert vocab.decode([EOS, 4]) == ""
    with pytest.raises(ValueError, match="outside"):
        vocab.decode([4, 7])


def test_round_trip_of_known_text():
    text = "The cat sat on the mat, then left."
    vocab = Vocabulary.build([text])
    assert vocab.decode(vocab.encode(text, 20, eos=True)) == " ".join(tokenize(text))


@given(
    words=st.lists(st.sampled_from(["a", "b", "c", "zz", ",", "."]), max_size=30),
    length=st.integers(2, 12),
)
def test_eos_always_present_when_asked(words, length):
    vocab = Vocabulary.build(["a b c , ."])
    ids = vocab.encode(" ".join(words), length, eos=True)
    assert ids.shape == (length,)
    assert (ids == EOS).sum() == 1
    n = min(len(words), length - 1)
    assert ids[n] == EOS and np.all(ids[n + 1 :] == PAD)
    expected = " ".join("<unk>" if w == "zz" else w for w in words[:n])
    assert vocab.decode(ids) == expected


def test_to_dict_is_json_and_round_trips():
    vocab = Vocabulary.build(["héllo wörld, hello again"])
    data = json.loads(json.dumps(vocab.to_dict()))
    again = Vocabulary.from_dict(data)
    assert again == vocab and again.tokens == vocab.tokens
    assert hash(again) == hash(vocab)
    assert Vocabulary.from_dict(data) != Vocabulary.build(["other words"])
    assert vocab != vocab.tokens  # not equal to a non-vocabulary


def test_invalid_vocabularies_are_rejected():
    with pytest.raises(ValueError, match="specials"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="repeated"):
        Vocabulary([*SPECIALS, "a", "a"])
    with pytest.raises(ValueError, match="format"):
        Vocabulary.from_dict({"tokens": list(SPECIALS)})
    with pytest.raises(ValueError, match="tokens"):
        Vocabulary.from_dict({"format": Vocabulary.build([]).to_dict()["format"], "tokens": 3})
