"""Audio front end: the log-mel spectrogram, in JAX (the input of an Audio Spectrogram Transformer).

A waveform becomes an image-like ``(frames, n_mels)`` array in four steps.

1. **Framing.** The signal is cut into overlapping frames of ``n_fft`` samples, one every
   ``hop_length`` samples. Frames are *centred*: the waveform is first reflect-padded by
   ``n_fft // 2`` samples on both sides (``x[-1], x[-2], ...`` mirrored about the end sample,
   which is not repeated), so frame ``t`` is centred on sample ``t * hop_length``. This is
   ``torch.stft(..., center=True, pad_mode="reflect")``. With ``p = n_fft // 2`` there are
   ``1 + (T + 2p - n_fft) // hop_length`` frames, i.e. ``1 + T // hop_length`` for even
   ``n_fft`` (and ``1 + (T - 1) // hop_length`` for odd ``n_fft``, as torch.stft gives).
   Reflection needs ``T > p``, so ``T >= n_fft // 2 + 1``. The frames are gathered with one
   index array ``t * hop + arange(n_fft)``, no Python loop.
2. **Window and power spectrum.** Each frame is multiplied by the *periodic* Hann window
   ``w[k] = 0.5 - 0.5 cos(2 pi k / n)``, ``k = 0 .. n-1`` (:func:`hann_window`, the default of
   ``torch.hann_window``: the symmetric window of length ``n + 1`` without its last sample, which
   tiles exactly at 50 % overlap), and its power spectrum ``|rfft|^2`` (``n_fft // 2 + 1`` bins;
   bin ``k`` is the frequency ``k * sample_rate / n_fft``) is taken.
3. **Mel filterbank.** The bins are pooled into ``n_mels`` bands by triangular filters evenly
   spaced on the HTK mel scale ``mel(f) = 2595 log10(1 + f / 700)`` (Young et al., *The HTK
   Book*; O'Shaughnessy 1987) between ``f_min`` and ``f_max`` (:func:`mel_filterbank`). The
   ``n_mels + 2`` points ``m_0 < m_1 < ... < m_{n_mels+1}`` evenly spaced in mel from
   ``mel(f_min)`` to ``mel(f_max)`` are mapped back to Hz, ``f_i = 700 (10^(m_i / 2595) - 1)``;
   band ``j`` rises linearly from 0 at ``f_j`` to 1 at ``f_{j+1}`` and falls back to 0 at
   ``f_{j+2}``. The peaks are 1 (no area, "slaney", normalisation). This is
   ``torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate,
   norm=None, mel_scale="htk")``, written here from its definition (torchaudio is not a
   dependency), including its bin frequencies ``linspace(0, sample_rate // 2, n_fft // 2 + 1)``
   (the true ``k * sample_rate / n_fft`` for the even sample rates used in practice).
4. **Log.** ``log(max(mel energy, floor))``, natural logarithm; the floor keeps silence finite.

This is the librosa / torchaudio ``MelSpectrogram(power=2)`` recipe followed by a log. The
original AST (Gong et al., "AST: Audio Spectrogram Transformer", arXiv 2104.01778) feeds Kaldi
``fbank`` features instead (25 ms Povey-windowed frames, no centring, pre-emphasis, dither);
those are close in spirit but not equal to these numbers.

Shapes: ``T`` samples, ``F = n_fft // 2 + 1`` frequency bins, ``M = n_mels`` bands, ``...`` any
leading (batch, channel) dimensions.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return int(value)


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window (n,) float32, ``0.5 - 0.5 cos(2 pi k / n)``, as ``torch.hann_window(n)``
    (which returns ``[1.0]`` for ``n = 1``)."""
    n = _check_int("n", n, 1)
    if n == 1:
        return np.ones(1, np.float32)
    k = np.arange(n, dtype=np.float64)
    return (0.5 - 0.5 * np.cos(2 * np.pi * k / n)).astype(np.float32)


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`: ``700 (10^(m / 2595) - 1)``."""
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def _check_band(sample_rate: int, f_min: float, f_max: float | None) -> tuple[float, float]:
    nyquist = sample_rate / 2
    f_max = float(sample_rate // 2) if f_max is None else float(f_max)  # torchaudio's default
    f_min = float(f_min)
    if not (math.isfinite(f_min) and math.isfinite(f_max)):
        raise ValueError(f"f_min and f_max must be finite, not {f_min} and {f_max}")
    if not 0 <= f_min < f_max <= nyquist:
        raise ValueError(
            f"need 0 <= f_min < f_max <= sample_rate / 2 = {nyquist}, "
            f"got f_min={f_min}, f_max={f_max}"
        )
    return f_min, f_max


def mel_filterbank(
    *,
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """Triangular HTK-mel filters (F, M) float32, ``F = n_fft // 2 + 1``, peak 1, no area
    normalisation: ``power (..., F) @ filterbank`` gives the mel energies. ``f_max`` defaults
    to ``sample_rate // 2``. Equal to ``torchaudio.functional.melscale_fbanks(F, f_min, f_max,
    n_mels, sample_rate, norm=None, mel_scale="htk")`` (see the module docstring).

    With many bands and a small ``n_fft`` a band can fall between two bins and be all zero
    (torchaudio warns about it); its log-mel is then ``log(floor)``.
    """
    sample_rate = _check_int("sample_rate", sample_rate, 1)
    n_fft = _check_int("n_fft", n_fft, 2)
    n_mels = _check_int("n_mels", n_mels, 1)
    f_min, f_max = _check_band(sample_rate, f_min, f_max)
    freqs = np.linspace(0.0, sample_rate // 2, n_fft // 2 + 1)  # (F,) bin centres, in Hz
    f_pts = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # (M + 2,)
    f_diff = np.diff(f_pts)  # (M + 1,) widths of the half-triangles
    slopes = f_pts[None, :] - freqs[:, None]  # (F, M + 2): f_i - f
    down = -slopes[:, :-2] / f_diff[:-1]  # rising edge (f - f_j) / (f_{j+1} - f_j)
    up = slopes[:, 2:] / f_diff[1:]  # falling edge (f_{j+2} - f) / (f_{j+2} - f_{j+1})
    return np.maximum(0.0, np.minimum(down, up)).astype(np.float32)


def num_frames(num_samples: int, *, n_fft: int, hop_length: int) -> int:
    """Frames of a centred STFT of ``num_samples`` samples: ``1 + (T + 2 (n_fft // 2) - n_fft)
    // hop_length`` (``1 + T // hop_length`` for even ``n_fft``)."""
    return 1 + (num_samples + 2 * (n_fft // 2) - n_fft) // hop_length


def log_mel_spectrogram(
    waveform: jax.Array,
    *,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    floor: float = 1e-10,
) -> jax.Array:
    """Log-mel spectrogram of ``waveform`` (..., T) -> (..., frames, n_mels) float32.

    Centred, reflect-padded frames of ``n_fft`` samples every ``hop_length`` samples, periodic
    Hann window, power spectrum ``|rfft|^2``, HTK mel filterbank (:func:`mel_filterbank`),
    ``log(max(mel, floor))``. ``frames = 1 + T // hop_length`` for even ``n_fft`` (see
    :func:`num_frames`). Jittable with the keyword arguments static (e.g. bound with
    ``functools.partial``), differentiable in ``waveform``; computed in float32.
    """
    sample_rate = _check_int("sample_rate", sample_rate, 1)
    n_fft = _check_int("n_fft", n_fft, 2)
    hop_length = _check_int("hop_length", hop_length, 1)
    n_mels = _check_int("n_mels", n_mels, 1)
    floor = float(floor)
    if not (math.isfinite(floor) and floor > 0):
        raise ValueError(f"floor must be a positive finite number, not {floor}")
    fbank = mel_filterbank(
        sample_rate=sample_rate, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max
    )
    if not hasattr(waveform, "shape"):
        waveform = np.asarray(waveform)
    if waveform.ndim < 1:
        raise ValueError(
            f"waveform must have shape (..., T), got a scalar of shape {waveform.shape}"
        )
    if jnp.issubdtype(waveform.dtype, jnp.complexfloating):
        raise ValueError(f"waveform must be real, not {waveform.dtype}")
    length = waveform.shape[-1]
    pad = n_fft // 2
    if length <= pad:
        raise ValueError(
            f"waveform of {length} samples is too short for n_fft={n_fft}: reflect padding by "
            f"n_fft // 2 = {pad} needs at least {pad + 1} samples"
        )

    return _log_mel(
        jnp.asarray(waveform, jnp.float32), fbank, n_fft=n_fft, hop_length=hop_length, floor=floor
    )


@functools.partial(jax.jit, static_argnames=("n_fft", "hop_length", "floor"))
def _log_mel(
    x: jax.Array, fbank: jax.Array, *, n_fft: int, hop_length: int, floor: float
) -> jax.Array:
    """The computation, compiled as one program (also when called eagerly)."""
    pad = n_fft // 2
    frames = num_frames(x.shape[-1], n_fft=n_fft, hop_length=hop_length)
    x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")  # (..., T + 2p)
    index = np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :]  # (frames, n_fft)
    x = x[..., index] * hann_window(n_fft)  # (..., frames, n_fft)
    spec = jnp.fft.rfft(x, axis=-1)  # (..., frames, F)
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2  # |.|^2 without abs: smooth at 0
    mel = jnp.matmul(power, fbank, precision=jax.lax.Precision.HIGHEST)  # (..., frames, M)
    return jnp.log(jnp.maximum(mel, floor))


__all__ = [
    "hann_window",
    "hz_to_mel",
    "log_mel_spectrogram",
    "mel_filterbank",
    "mel_to_hz",
    "num_frames",
]
