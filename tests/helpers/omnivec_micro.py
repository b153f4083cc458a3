"""A very small OmniVec configuration (overrides of omnivec_tiny) that compiles in seconds."""

from __future__ import annotations

import numpy as np

MICRO = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "mlp_dim": 64,
    "image_size": 16,
    "patch_size": 8,
    "video_frames": 4,
    "video_size": 16,
    "tubelet": (2, 8),
    "audio_samples": 2000,
    "n_fft": 128,
    "hop_length": 64,
    "n_mels": 16,
    "audio_frames": 32,
    "audio_patch_size": 8,
    "num_points": 64,
    "num_groups": 8,
    "group_size": 8,
    "text_length": 64,
    "summary_length": 8,
    "summary_layers": 1,
    "decoder_width": 16,
    "decoder_layers": 1,
    "decoder_heads": 2,
}

# The inputs of a MICRO model: (shape without the batch axis, dtype)
SHAPES = {
    "image": ((16, 16, 3), np.float32),
    "video": ((4, 16, 16, 1), np.float32),
    "audio": ((2000,), np.float32),
    "points": ((64, 3), np.float32),
    "text": ((64,), np.int32),
    "summary": ((8,), np.int32),
}


def random_inputs(batch: int, seed: int = 0, modalities=None) -> dict[str, np.ndarray]:
    """Random inputs of every (or the given) modality; text ids in [4, 120) with padding at the
    end of the second half of the batch, summaries ending in <eos>."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in SHAPES.items():
        if modalities is not None and name not in modalities and name != "summary":
            continue
        if dtype == np.int32:
            ids = rng.integers(4, 120, size=(batch, *shape)).astype(np.int32)
            if name == "text":
                ids[batch // 2 :, shape[0] // 2 :] = 0
            else:
                ids[:, -1] = 2
            out[name] = ids
        else:
            out[name] = rng.normal(size=(batch, *shape)).astype(np.float32)
    if modalities is not None and "text" not in modalities:
        out.pop("summary", None)
    return out
