"""ROUGE-L (Lin, "ROUGE: A Package for Automatic Evaluation of Summaries", ACL workshop 2004),
in plain Python, equal to Google's ``rouge-score`` package (``RougeScorer(["rougeL"])``, no
stemmer), which is not needed at run time.

1. Tokens
---------
:func:`tokenize` is ``rouge_score.tokenize.tokenize(text, stemmer=None)``: lowercase the text
(Python's ``str.lower``, so e.g. "É" becomes "é"), replace every run of characters outside
``[a-z0-9]`` by a space, split on whitespace and drop empty strings. Tokens are therefore runs
of ASCII letters and digits: punctuation separates words ("don't" -> "don", "t"), and accented
or non-Latin letters are dropped ("café" -> "caf"; a Chinese sentence has no tokens).

2. Longest common subsequence
-----------------------------
A *common subsequence* of token lists ``a`` and ``b`` is a list that can be obtained from each by
deleting items (not necessarily contiguous). Its longest length ``LCS(a, b)`` rewards in-order
matches without asking them to be adjacent. The textbook dynamic programme fills the table
``L[i][j] = L[i-1][j-1] + 1 if a_i == b_j else max(L[i-1][j], L[i][j-1])`` in
``O(|a| |b|)`` steps; :func:`lcs_length` computes the same numbers one row at a time, holding a
row as the bits of a Python integer (the bit-parallel form of that recurrence: Allison & Dix
1986, Crochemore et al. 2001, Hyyrö 2004), which takes ``|b|`` big-integer operations instead
of ``|a| |b|`` Python steps.

In the row for a prefix of ``b``, let bit ``i`` of ``V`` be 0 exactly where ``L`` steps up
(``L[i+1] = L[i] + 1``); initially no bit is 0. With ``U = V & match(y)`` (the positions of
token ``y`` in ``a`` where ``L`` does not already step), the next row is
``V' = (V + U) | (V - U)``, and ``LCS`` is the number of 0 bits among the low ``|a|``.

3. Scores
---------
With ``P`` the prediction's tokens and ``R`` the reference's::

    precision = LCS / |P|,   recall = LCS / |R|,   F = 2 precision recall / (precision + recall)

(``F = 0`` when both are 0), and all three are 0 when either text has no tokens - as rouge-score
computes them, in the same floating-point operations, so the numbers are identical. (Lin's
``F_beta`` with ``beta = 1``.) Note rouge-score's argument order, ``score(target, prediction)``;
:func:`rouge_l` takes ``(prediction, reference)``.

:class:`RougeL` averages the F-measure over a corpus, one pair at a time, as summarisation
papers report "ROUGE-L" (the mean of per-example F, not the F of summed counts). This is
sentence-level ROUGE-L, not rouge-score's newline-aware ``rougeLsum``.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")  # rouge_score.tokenize.NON_ALPHANUM_RE


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokens (no stemming): lowercase ``[a-z0-9]+`` runs, in order."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, not {type(text).__name__}")
    return _NON_ALPHANUMERIC.sub(" ", text.lower()).split()


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (items compared with ``==``;
    they must be hashable). Bit-parallel dynamic programming, see the module docstring."""
    if len(a) == 0 or len(b) == 0:
        return 0
    positions: dict[Hashable, int] = {}  # item -> bitmask of its positions in a
    for i, item in enumerate(a):
        positions[item] = positions.get(item, 0) | (1 << i)
    mask = (1 << len(a)) - 1
    v = mask  # all ones: the row L[.][0] = 0 never steps
    for item in b:
        u = v & positions.get(item, 0)
        v = ((v + u) | (v - u)) & mask
    return len(a) - v.bit_count()


def _fmeasure(precision: float, recall: float) -> float:
    # rouge_score.scoring.fmeasure
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def rouge_l(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-L of ``prediction`` against ``reference``: ``{"precision", "recall", "fmeasure"}``,
    equal to ``RougeScorer(["rougeL"]).score(target=reference, prediction=prediction)["rougeL"]``
    (all 0 if either text has no tokens)."""
    if not isinstance(prediction, str) or not isinstance(reference, str):
        raise ValueError(
            "prediction and reference must be str, not "
            f"{type(prediction).__name__} and {type(reference).__name__}"
        )
    pred, ref = tokenize(prediction), tokenize(reference)
    if not pred or not ref:
        return {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    lcs = lcs_length(ref, pred)
    precision, recall = lcs / len(pred), lcs / len(ref)
    return {"precision": precision, "recall": recall, "fmeasure": _fmeasure(precision, recall)}


class RougeL:
    """Mean ROUGE-L F-measure over a corpus, accumulated batch by batch.

    >>> metric = RougeL()
    >>> metric.update(["the cat sat"], ["the cat sat on the mat"])
    >>> metric.update(["a dog"], ["the cat"])
    >>> metric.result()
    {'rougeL': 0.3333333333333333}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every pair added so far."""
        self.count = 0
        self._total = 0.0

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        """Adds the pairs ``(predictions[i], references[i])``."""
        if isinstance(predictions, str) or isinstance(references, str):
            raise ValueError("predictions and references must be sequences of str, not a str")
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        scores = [rouge_l(p, r)["fmeasure"] for p, r in zip(predictions, references, strict=True)]
        self._total += sum(scores)
        self.count += len(scores)

    def result(self) -> dict[str, float]:
        """``{"rougeL": mean F-measure}`` over all pairs added."""
        if self.count == 0:
            raise ValueError("RougeL.result() before any pair was added")
        return {"rougeL": self._total / self.count}


__all__ = ["RougeL", "lcs_length", "rouge_l", "tokenize"]
