"""ROUGE-L: tokens, LCS and scores by hand, against a textbook LCS table, and equal to Google's
rouge-score package on random texts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxvision.metrics.rouge import RougeL, lcs_length, rouge_l, tokenize

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
rouge_tokenize = pytest.importorskip("rouge_score.tokenize")

SCORER = rouge_scorer.RougeScorer(["rougeL"])


def _reference(prediction, reference):
    s = SCORER.score(target=reference, prediction=prediction)["rougeL"]
    return {"precision": s.precision, "recall": s.recall, "fmeasure": s.fmeasure}


def _lcs_table(a, b):
    """The O(|a| |b|) table, row by row."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


# Random texts: a small vocabulary in mixed case so that tokens often repeat and match, glued by
# spaces, punctuation, digits and the odd non-ASCII letter.
WORDS = ["the", "The", "CAT", "cat", "sat", "on", "mat", "a", "dog", "x1", "42", "naïve", "É"]
SEPARATORS = [" ", " ", " ", "  ", ", ", ". ", "-", "'", "\n", "\t", "!?", "", "/", " é "]
texts = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), min_size=0, max_size=25
).map(lambda parts: "".join(w + s for w, s in parts))


# ----------------------------------------------------------------------------------------------
# Tokens
# ----------------------------------------------------------------------------------------------


def test_tokenize_by_hand():
    assert tokenize("The cat's hat, 2nd-best!") == ["the", "cat", "s", "hat", "2nd", "best"]
    assert tokenize("  Café  NAÏVE\tx\n") == ["caf", "na", "ve", "x"]
    assert tokenize("") == [] and tokenize("!!! ...") == [] and tokenize("日本語") == []


@given(texts)
def test_tokenize_equals_rouge_score(text):
    assert tokenize(text) == rouge_tokenize.tokenize(text, None)


@given(st.text(max_size=40))
def test_tokenize_equals_rouge_score_on_any_unicode(text):
    assert tokenize(text) == rouge_tokenize.tokenize(text, None)


# ----------------------------------------------------------------------------------------------
# LCS
# ----------------------------------------------------------------------------------------------


def test_lcs_by_hand():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # CLRS: "BCBA"
    assert lcs_length(["a", "b", "c"], ["a", "b", "c"]) == 3
    assert lcs_length(["a", "b", "c"], ["c", "b", "a"]) == 1
    assert lcs_length([], ["a"]) == 0 and lcs_length(["a"], []) == 0
    assert lcs_length([1, 2, 3, 4, 1], [3, 4, 1, 2, 1, 3]) == 3


@given(
    st.lists(st.integers(0, 4), max_size=60),
    st.lists(st.integers(0, 4), max_size=60),
)
def test_lcs_equals_the_table(a, b):
    assert lcs_length(a, b) == _lcs_table(a, b) == lcs_length(b, a)


def test_lcs_of_long_sequences():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 20, 300).tolist()
    b = rng.integers(0, 20, 250).tolist()
    assert lcs_length(a, b) == _lcs_table(a, b)


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------


def test_rouge_l_by_hand():
    # Reference 6 tokens, prediction 4, LCS "the cat on mat" = 4 -> P 1, R 2/3, F 0.8.
    s = rouge_l("The cat on mat.", "the cat sat on the mat")
    assert s == pytest.approx({"precision": 1.0, "recall": 2 / 3, "fmeasure": 0.8})
    # Order matters: reversed words share a subsequence of one.
    s = rouge_l("c b a", "a b c")
    assert s == pytest.approx({"precision": 1 / 3, "recall": 1 / 3, "fmeasure": 1 / 3})


@given(prediction=texts, reference=texts)
def test_rouge_l_equals_rouge_score(prediction, reference):
    ours, ref = rouge_l(prediction, reference), _reference(prediction, reference)
    assert set(ours) == {"precision", "recall", "fmeasure"}
    for key in ours:
        assert abs(ours[key] - ref[key]) <= 1e-12, (key, ours, ref)


def test_rouge_l_argument_order_matters_like_rouge_score():
    prediction, reference = "the cat", "the cat sat on the mat"
    ours = rouge_l(prediction, reference)
    assert ours["precision"] == 1.0 and ours["recall"] == pytest.approx(1 / 3)
    assert ours == pytest.approx(_reference(prediction, reference))
    swapped = rouge_l(reference, prediction)
    assert swapped["precision"] == pytest.approx(1 / 3) and swapped["recall"] == 1.0


@pytest.mark.parametrize(
    "prediction, reference",
    [
        ("", ""),
        ("", "the cat"),
        ("the cat", ""),
        ("!!!", "the cat"),
        ("the cat", "..., ;"),
        ("日本", "日本"),
    ],
)
def test_empty_texts_score_zero_like_rouge_score(prediction, reference):
    ours = rouge_l(prediction, reference)
    assert ours == {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    assert ours == _reference(prediction, reference)


def test_non_strings_are_rejected():
    with pytest.raises(ValueError, match="str"):
        rouge_l(None, "a")
    with pytest.raises(ValueError, match="str"):
        rouge_l("a", ["a"])
    with pytest.raises(ValueError, match="str"):
        tokenize(b"bytes")


# ----------------------------------------------------------------------------------------------
# The accumulator
# ----------------------------------------------------------------------------------------------


@given(st.lists(st.tuples(texts, texts), min_size=1, max_size=8), st.integers(1, 3))
def test_accumulator_is_the_mean_fmeasure(pairs, batch_size):
    metric = RougeL()
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        metric.update([p for p, _ in chunk], [r for _, r in chunk])
    expected = np.mean([_reference(p, r)["fmeasure"] for p, r in pairs])
    assert metric.count == len(pairs)
    assert metric.result()["rougeL"] == pytest.approx(expected, abs=1e-12)


def test_accumulator_by_hand_and_errors():
    metric = RougeL()
    with pytest.raises(ValueError, match="before any pair"):
        metric.result()
    metric.update([], [])  # nothing added
    with pytest.raises(ValueError, match="before any pair"):
        metric.result()
    metric.update(["the cat sat", "a dog"], ["the cat sat on the mat", "the cat"])
    assert metric.result() == {"rougeL": pytest.approx((2 / 3 + 0) / 2)}
    metric.update([""], ["x"])
    assert metric.result() == {"rougeL": pytest.approx((2 / 3) / 3)}
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        metric.update(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="not a str"):
        metric.update("the cat", "the cat")
    assert metric.count == 3  # failed updates add nothing
    metric.reset()
    with pytest.raises(ValueError, match="before any pair"):
        metric.result()
