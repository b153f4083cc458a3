"""Log-mel spectrogram: the HTK filterbank and the whole pipeline against NumPy loops written
here from the definitions, a pure tone, batching, jit, gradients, shapes and bad arguments."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxvision.ops.audio import hann_window, log_mel_spectrogram, mel_filterbank

SR = 16000


# ----------------------------------------------------------------------------------------------
# Independent references: explicit loops, float64.
# ----------------------------------------------------------------------------------------------


def _band_edges(n_mels, f_min, f_max):
    """The n_mels + 2 HTK-mel-spaced corner frequencies (Hz) of the triangles."""
    mel_lo = 2595.0 * np.log10(1.0 + f_min / 700.0)
    mel_hi = 2595.0 * np.log10(1.0 + f_max / 700.0)
    mels = [mel_lo + (mel_hi - mel_lo) * i / (n_mels + 1) for i in range(n_mels + 2)]
    return [700.0 * (10.0 ** (m / 2595.0) - 1.0) for m in mels]


def _bin_hz(k, sample_rate, n_fft, torchaudio_grid=True):
    """Frequency of rfft bin k. torchaudio's melscale_fbanks puts the F = n_fft // 2 + 1 bins on
    linspace(0, sample_rate // 2, F); that is the true k * sample_rate / n_fft when n_fft and
    sample_rate are even, and slightly stretched otherwise."""
    if torchaudio_grid:
        return k * (sample_rate // 2) / (n_fft // 2)
    return k * sample_rate / n_fft


def _filterbank_ref(sample_rate, n_fft, n_mels, f_min=0.0, f_max=None, torchaudio_grid=True):
    """Triangles written point by point: band j rising from edge j to edge j+1 and falling to
    edge j+2, peak 1."""
    f_max = sample_rate // 2 if f_max is None else f_max
    edges = _band_edges(n_mels, f_min, f_max)
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for j in range(n_mels):
        left, centre, right = edges[j], edges[j + 1], edges[j + 2]
        for k in range(n_fft // 2 + 1):
            f = _bin_hz(k, sample_rate, n_fft, torchaudio_grid)
            if left < f <= centre:
                fb[k, j] = (f - left) / (centre - left)
            elif centre < f < right:
                fb[k, j] = (right - f) / (right - centre)
    return fb


def _power_ref(x, n_fft, hop):
    """|rfft|^2 of centred, reflect-padded, periodic-Hann-windowed frames, frame by frame."""
    pad = n_fft // 2
    padded = np.pad(np.asarray(x, np.float64), pad, mode="reflect")
    window = np.array([0.5 - 0.5 * np.cos(2 * np.pi * k / n_fft) for k in range(n_fft)])
    frames, start = [], 0
    while start + n_fft <= len(padded):
        frames.append(np.abs(np.fft.rfft(padded[start : start + n_fft] * window)) ** 2)
        start += hop
    return np.array(frames)  # (frames, F)


def _log_mel_ref(x, sample_rate, n_fft, hop, n_mels, f_min=0.0, f_max=None, floor=1e-10):
    mel = _power_ref(x, n_fft, hop) @ _filterbank_ref(sample_rate, n_fft, n_mels, f_min, f_max)
    return np.log(np.maximum(mel, floor)), mel


def _assert_log_close(ours, ref_log, ref_mel, rel_floor=1e-3):
    """Log values agree to ~1e-4 wherever the band energy is not tiny next to the frame's."""
    ours = np.asarray(ours)
    assert ours.shape == ref_log.shape
    assert ours.dtype == np.float32
    mask = ref_mel > rel_floor * ref_mel.max(axis=-1, keepdims=True)
    assert mask.mean() > 0.5
    np.testing.assert_allclose(ours[mask], ref_log[mask], rtol=1e-4, atol=1e-4)


def _noise(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Window and filterbank
# ----------------------------------------------------------------------------------------------


def test_periodic_hann_window():
    w = hann_window(8)
    assert w.dtype == np.float32 and w.shape == (8,)
    # Periodic: the first 8 samples of the symmetric window of length 9.
    np.testing.assert_allclose(w, np.hanning(9)[:8], atol=1e-7)
    assert w[0] == 0 and w[4] == pytest.approx(1.0)
    np.testing.assert_array_equal(hann_window(1), [1.0])  # torch.hann_window(1)


@pytest.mark.parametrize(
    "n_fft, n_mels, f_min, f_max",
    [(512, 40, 0.0, None), (400, 128, 0.0, None), (256, 23, 50.0, 7000.0), (64, 8, 300.0, 4000.0)],
)
def test_filterbank_equals_htk_triangles(n_fft, n_mels, f_min, f_max):
    fb = mel_filterbank(sample_rate=SR, n_fft=n_fft, n_mels=n_mels, f_min=f_min, f_max=f_max)
    assert fb.shape == (n_fft // 2 + 1, n_mels) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, _filterbank_ref(SR, n_fft, n_mels, f_min, f_max), atol=1e-6)
    assert fb.min() >= 0 and fb.max() <= 1


def test_filterbank_bin_grid_is_torchaudios():
    # Even n_fft: the grid is the true bin frequencies. Odd n_fft: torchaudio's stretched grid
    # (the last bin at sample_rate // 2 instead of just below it), kept for equality with it.
    for n_fft in (64, 63):
        fb = mel_filterbank(sample_rate=SR, n_fft=n_fft, n_mels=8)
        np.testing.assert_allclose(fb, _filterbank_ref(SR, n_fft, 8), atol=1e-6)
        true_grid = _filterbank_ref(SR, n_fft, 8, torchaudio_grid=False)
        assert np.allclose(fb, true_grid, atol=1e-6) == (n_fft % 2 == 0)


def test_filterbank_peaks_are_one_at_band_centres():
    # n_fft = sample_rate puts a bin on every integer Hz; pick edges that land on integers.
    n_mels = 6
    edges = _band_edges(n_mels, 0.0, 4000.0)
    fb = mel_filterbank(sample_rate=8000, n_fft=8000, n_mels=n_mels, f_max=4000.0)
    for j in range(n_mels):
        k = int(np.argmax(fb[:, j]))
        assert abs(k - edges[j + 1]) <= 0.5  # the peak bin is the one nearest the centre
        assert fb[k, j] == pytest.approx(1.0, abs=2e-3)
        assert fb[int(np.floor(edges[j])), j] == 0 and fb[int(np.ceil(edges[j + 2])), j] == 0


# ----------------------------------------------------------------------------------------------
# The spectrogram
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_fft, hop, n_mels, length",
    [(400, 160, 64, 4000), (512, 128, 40, 3000), (256, 100, 32, 2001), (255, 64, 16, 1000)],
)
def test_log_mel_equals_numpy_loop(n_fft, hop, n_mels, length):
    rng = np.random.default_rng(n_fft)
    t = np.arange(length) / SR
    # Noise plus a chirp: energy in every band, varying from frame to frame.
    x = 0.3 * rng.standard_normal(length) + np.sin(2 * np.pi * (200 + 3000 * t) * t)
    x = x.astype(np.float32)
    ours = log_mel_spectrogram(x, sample_rate=SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    _assert_log_close(ours, *_log_mel_ref(x, SR, n_fft, hop, n_mels))


def test_log_mel_band_limits_and_floor():
    x = _noise(2000, seed=1)
    kw = dict(sample_rate=SR, n_fft=256, hop_length=128, n_mels=20, f_min=100.0, f_max=6000.0)
    ours = log_mel_spectrogram(x, **kw)
    ref_log, ref_mel = _log_mel_ref(x, SR, 256, 128, 20, 100.0, 6000.0)
    _assert_log_close(ours, ref_log, ref_mel)
    # Silence: every value is log(floor).
    silent = log_mel_spectrogram(np.zeros(2000, np.float32), **kw, floor=1e-6)
    np.testing.assert_allclose(silent, np.log(1e-6), rtol=1e-6)


@pytest.mark.parametrize("band", [8, 15, 24, 33])
def test_pure_tone_lands_in_its_band(band):
    n_fft, hop, n_mels = 512, 160, 40
    edges = _band_edges(n_mels, 0.0, SR / 2)
    k0 = round(edges[band + 1] * n_fft / SR)  # the FFT bin nearest the band's centre
    f0 = k0 * SR / n_fft
    assert edges[band] < f0 < edges[band + 2]
    x = np.sin(2 * np.pi * f0 * np.arange(8000) / SR).astype(np.float32)
    spec = np.asarray(
        log_mel_spectrogram(x, sample_rate=SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    )
    interior = spec[5:-5]  # frames away from the reflected ends
    assert np.all(np.argmax(interior, axis=-1) == band)
    # Far bands hold only window leakage: many orders of magnitude less energy.
    far = [j for j in range(n_mels) if abs(j - band) > 3]
    assert np.all(interior[:, band] - interior[:, far].max(axis=-1) > np.log(1e4))


def test_leading_batch_dimensions():
    x = _noise((2, 3, 1600), seed=2)
    fn = functools.partial(
        log_mel_spectrogram, sample_rate=SR, n_fft=256, hop_length=160, n_mels=24
    )
    out = np.asarray(fn(x))
    assert out.shape == (2, 3, 1 + 1600 // 160, 24)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], fn(x[i, j]), rtol=1e-5, atol=1e-5)
            _assert_log_close(out[i, j], *_log_mel_ref(x[i, j], SR, 256, 160, 24))


def test_jit_equals_eager():
    x = _noise((2, 1600), seed=3)
    fn = functools.partial(
        log_mel_spectrogram, sample_rate=SR, n_fft=400, hop_length=160, n_mels=32
    )
    np.testing.assert_allclose(jax.jit(fn)(x), fn(x), rtol=1e-5, atol=1e-5)


def test_gradient_matches_finite_differences():
    x = _noise(256, seed=4)
    fn = functools.partial(log_mel_spectrogram, sample_rate=SR, n_fft=32, hop_length=16, n_mels=6)
    loss = lambda w: jnp.mean(fn(w))
    grad = np.asarray(jax.grad(loss)(x))
    assert grad.shape == x.shape and np.all(np.isfinite(grad)) and np.any(grad != 0)
    direction = _noise(256, seed=5)
    direction /= np.linalg.norm(direction)
    h = 1e-2
    fd = (float(loss(x + h * direction)) - float(loss(x - h * direction))) / (2 * h)
    assert float(grad @ direction) == pytest.approx(fd, rel=2e-2, abs=1e-4)


@given(
    n_fft=st.integers(2, 64),
    hop=st.integers(1, 48),
    extra=st.integers(0, 300),
)
def test_frame_count_and_values_for_any_shape(n_fft, hop, extra):
    length = n_fft // 2 + 1 + extra  # the shortest waveform that reflect padding allows, and up
    x = _noise(length, seed=length)
    ours = log_mel_spectrogram(x, sample_rate=SR, n_fft=n_fft, hop_length=hop, n_mels=4)
    ref_log, ref_mel = _log_mel_ref(x, SR, n_fft, hop, 4)
    assert ours.shape == ref_log.shape  # the reference counts frames by sliding a window
    if n_fft % 2 == 0:
        assert ours.shape[0] == 1 + length // hop
    mask = ref_mel > 1e-3 * ref_mel.max()
    np.testing.assert_allclose(np.asarray(ours)[mask], ref_log[mask], rtol=1e-4, atol=1e-4)


@pytest.mark.reference
@pytest.mark.parametrize("n_fft, hop", [(400, 160), (255, 64)])
def test_power_spectrum_equals_torch_stft(n_fft, hop):
    torch = pytest.importorskip("torch")
    x = _noise((2, 3000), seed=6)
    stft = torch.stft(
        torch.tensor(x, dtype=torch.float64),
        n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft, dtype=torch.float64),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = (stft.abs() ** 2).numpy().transpose(0, 2, 1)  # (B, frames, F)
    fb = _filterbank_ref(SR, n_fft, 24)
    ours = log_mel_spectrogram(x, sample_rate=SR, n_fft=n_fft, hop_length=hop, n_mels=24)
    for b in range(2):
        mel = power[b] @ fb
        _assert_log_close(ours[b], np.log(np.maximum(mel, 1e-10)), mel)


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------

GOOD = dict(sample_rate=SR, n_fft=64, hop_length=16, n_mels=8)


@pytest.mark.parametrize(
    "length, changes, message",
    [
        (32, {}, "too short"),  # needs n_fft // 2 + 1 = 33 samples
        (0, {}, "too short"),
        (100, {"n_fft": 1}, "n_fft"),
        (100, {"n_fft": 64.0}, "n_fft must be an int"),
        (100, {"hop_length": 0}, "hop_length"),
        (100, {"n_mels": 0}, "n_mels"),
        (100, {"sample_rate": 0}, "sample_rate"),
        (100, {"f_max": 9000.0}, "f_max"),
        (100, {"f_min": 5000.0, "f_max": 4000.0}, "f_min"),
        (100, {"f_min": -1.0}, "f_min"),
        (100, {"floor": 0.0}, "floor"),
        (100, {"floor": float("nan")}, "floor"),
    ],
)
def test_bad_arguments_are_named(length, changes, message):
    with pytest.raises(ValueError, match=message):
        log_mel_spectrogram(np.zeros(length, np.float32), **{**GOOD, **changes})


def test_bad_waveforms_are_named():
    with pytest.raises(ValueError, match="scalar"):
        log_mel_spectrogram(np.float32(1.0), **GOOD)
    with pytest.raises(ValueError, match="real"):
        log_mel_spectrogram(np.zeros(100, np.complex64), **GOOD)
    log_mel_spectrogram(np.zeros(33, np.float32), **GOOD)  # the shortest allowed
    with pytest.raises(ValueError, match="n >= 1|n must be"):
        hann_window(0)
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(sample_rate=SR, n_fft=64, n_mels=8, f_max=float("inf"))
