"""Solutions to the exercises of tutorials/04_omnivec.ipynb.

Tested by tests/test_tutorial_solutions_omnivec.py.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

import numpy as np


def video_tokens(num_frames: int, frame_size: int, tubelet: tuple[int, int]) -> int:
    """Exercise 1: tokens (class token excluded) of a ``num_frames`` x ``frame_size`` x
    ``frame_size`` clip cut into tubelets of ``t`` frames by ``p`` x ``p`` pixels:
    ``(F / t) (S / p)^2``. The tubelets must tile the clip exactly."""
    t, p = tubelet
    if num_frames % t or frame_size % p:
        raise ValueError(
            f"{t} x {p} x {p} tubelets do not tile a {num_frames}-frame {frame_size}-pixel clip"
        )
    return (num_frames // t) * (frame_size // p) ** 2


def masked_mse(prediction: np.ndarray, target: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """Exercise 2: per example (B,), the mean over the masked tokens of each token's mean squared
    error. ``prediction`` and ``target`` (B, N, T), ``masked`` (B, N) 1 where a token was hidden.
    An example with no masked token scores 0 (the denominator is at least 1)."""
    prediction = np.asarray(prediction, np.float64)
    target = np.asarray(target, np.float64)
    masked = np.asarray(masked, np.float64)
    per_token = np.mean((prediction - target) ** 2, axis=-1)  # (B, N)
    return np.sum(per_token * masked, axis=1) / np.maximum(np.sum(masked, axis=1), 1.0)


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Exercise 3: length of the longest common subsequence of ``a`` and ``b``, by dynamic
    programming: ``table[i][j]`` is the LCS of ``a[:i]`` and ``b[:j]``."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a, start=1):
        for j, y in enumerate(b, start=1):
            if x == y:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i - 1][j], table[i][j - 1])
    return table[len(a)][len(b)]


def rouge_l_f1(prediction: str, reference: str) -> float:
    """Exercise 3: ROUGE-L F1 of two texts on their lower-cased alphanumeric words: precision
    LCS / predicted words, recall LCS / reference words, their harmonic mean (0 if either text
    has no words or they share none)."""
    words = lambda text: re.findall(r"[a-z0-9]+", text.lower())
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return 0.0
    lcs = lcs_length(ref, pred)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)
