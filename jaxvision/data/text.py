"""A word-level vocabulary: text to fixed-length int32 token ids and back.

Why words and not sub-words: the text the library trains on is small - the generated
summarisation task of :mod:`jaxvision.data.modalities` has about 150 distinct words, and a user's
JSONL corpus for a CPU-sized model is rarely larger than a few thousand documents. A word
vocabulary built from the training split is then small (a small embedding table, a small softmax),
needs no trained merge table or extra dependency, works on any user JSONL out of the box, and keeps
every token readable, so a decoded prediction is plain words that ROUGE can score directly. Words
that the training split never saw become ``<unk>``.

Tokenisation: lowercase, then the regular expression ``\\w+|[^\\w\\s]`` - runs of letters, digits
and underscores are words, every other non-space character (punctuation) is a token of its own.
Decoding joins tokens with single spaces, so ``decode(encode(t))`` is the tokens of ``t`` joined
by spaces, not ``t`` itself.

Ids 0-3 are the specials ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; the words follow by count
(most frequent first), ties in alphabetical order, so the same texts always give the same ids.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable, Sequence

import numpy as np

from jaxvision.constants import BOS_ID, EOS_ID, PAD_ID, UNK_ID

# The ids of SPECIALS, in that order (jaxvision.constants: the model and the tasks use them too).
PAD, BOS, EOS, UNK = PAD_ID, BOS_ID, EOS_ID, UNK_ID
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
VOCABULARY_FORMAT = "jaxvision-word-vocabulary-v1"

_TOKEN = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lowercased words and single punctuation characters: ``"Hi, Bo!"`` -> ``["hi", ",", "bo",
    "!"]``."""
    return _TOKEN.findall(text.lower())


class Vocabulary:
    """Word <-> id. ``tokens[i]`` is the word of id ``i``; the first four are :data:`SPECIALS`."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(
                f"a vocabulary starts with the specials {list(SPECIALS)}, got {tokens[:4]}"
            )
        if len(set(tokens)) != len(tokens):
            seen, repeated = set(), []
            for t in tokens:
                if t in seen:
                    repeated.append(t)
                seen.add(t)
            raise ValueError(f"a vocabulary lists each token once; repeated: {repeated[:5]}")
        self.tokens: tuple[str, ...] = tuple(tokens)
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(
        cls, texts: Iterable[str], max_size: int | None = None, min_count: int = 1
    ) -> Vocabulary:
        """The words of ``texts`` seen at least ``min_count`` times, most frequent first (ties
        alphabetical). ``max_size`` caps the whole vocabulary, the four specials included (it is
        the size of the embedding table)."""
        if max_size is not None and max_size < len(SPECIALS):
            raise ValueError(f"max_size must be >= {len(SPECIALS)} (the specials), got {max_size}")
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts = collections.Counter(t for text in texts for t in tokenize(text))
        words = sorted(
            (w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w)
        )
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, word: object) -> bool:
        return word in self._ids

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(self.tokens)

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    def id(self, word: str) -> int:
        """The id of ``word`` (already tokenised), ``UNK`` if the vocabulary lacks it."""
        return self._ids.get(word, UNK)

    def encode(self, text: str, length: int, *, eos: bool = False) -> np.ndarray:
        """(length,) int32 ids of ``text``: truncated to ``length`` tokens (``length - 1`` with
        ``eos=True``, so the ``<eos>`` always fits), then ``<eos>`` if asked, then ``<pad>``."""
        if length < (2 if eos else 1):
            raise ValueError(f"length must be >= {2 if eos else 1}, got {length}")
        ids = [self._ids.get(t, UNK) for t in tokenize(text)]
        ids = ids[: length - 1] + [EOS] if eos else ids[:length]
        out = np.full(length, PAD, np.int32)
        out[: len(ids)] = ids
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` joined by spaces, up to the first ``<eos>``; ``<pad>`` and
        ``<bos>`` are skipped, ``<unk>`` is kept as the string ``"<unk>"``."""
        words = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == EOS:
                break
            if i in (PAD, BOS):
                continue
            if not 0 <= i < len(self.tokens):
                raise ValueError(f"token id {i} outside this vocabulary of {len(self)} tokens")
            words.append(self.tokens[i])
        return " ".join(words)

    def to_dict(self) -> dict:
        """A JSON-able description (for checkpoint headers); :meth:`from_dict` reads it back."""
        return {"format": VOCABULARY_FORMAT, "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != VOCABULARY_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"not a {VOCABULARY_FORMAT} description (format: {found!r})")
        tokens = data.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise ValueError("a vocabulary description needs 'tokens': a list of strings")
        return cls(tokens)


__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocabulary", "tokenize"]
