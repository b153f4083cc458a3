"""OmniVec: modality encoders, one shared transformer backbone, task heads.

"OmniVec: Learning robust representations with cross modal sharing", Srivastava & Sharma, WACV
2024, arXiv 2311.05709. One network learns from images, video, audio, 3D point clouds and text:

1. a **modality-specific encoder** turns one modality into a sequence of tokens of one common
   width D (section 3.1, "modality encoders"; each input carries ONE modality at a time);
2. a **shared transformer backbone** maps the tokens of every modality into one embedding space
   with the same parameters (section 3.2);
3. **task-specific heads** read the backbone's tokens (section 3.3): classification for images,
   video actions, audio events and point clouds; a text-summarisation decoder;
4. training (section 3.4): **masked self-supervised pre-training** of encoders + backbone, then
   **sequential fine-tuning** on the tasks one after another, carrying the backbone along.

Architecture at a glance (``omnivec_tiny``; ``omnivec_base`` has ViT-B/16's backbone):

    modality   input                 encoder                                    tokens (+1 class)
    image      (B, 16, 16, 3)        4x4 patches, linear (ViT)                  16
    video      (B, 8, 32, 32, 1)     2x8x8 tubelets, linear (ViViT)             64
    audio      (B, 8000) waveform    log-mel 64x32 -> 8x8 patches (AST)         32
    points     (B, 256, 3)           32 FPS centres x 16 neighbours, PointNet   32
                                      (Point-MAE)
    text       (B, 64) token ids     token + position embedding                 64
    backbone   (B, 1+N, 128)         4 pre-LN ViT blocks, 4 heads, scanned      (B, 1+N, 128)
    heads      class token -> linear (image 10, video 6, audio 6, points 7 classes);
               text: 2-block decoder, causal self-attention + cross-attention, a copy
               (pointer) gate, greedy decoding

What comes from the paper and what is this project's reading of it. The paper gives the
structure above, the list of modalities and tasks, masked pre-training followed by sequential
training, and the backbone being a standard transformer; it gives no code and leaves most
details open. The choices here, each from the nearest open design:

* Encoders: the ViT patch embedding with a class token and learned position embedding (ViT,
  arXiv 2010.11929) for images - so ``omnivec_base``'s image path IS ViT-B/16 and loads its
  weights (:func:`from_vit_params`); tubelet embedding for video (ViViT, arXiv 2103.15691,
  "tubelet embedding"); log-mel spectrogram patches for audio (AST, arXiv 2104.01778), with
  non-overlapping patches (AudioMAE's choice; AST overlaps them) and each spectrogram
  standardised on its own instead of with data-set statistics; farthest-point-sampled centres,
  k-nearest-neighbour groups and a mini-PointNet for points (Point-MAE, arXiv 2203.06604), with
  LayerNorm in place of its BatchNorm so that no modality keeps batch statistics; word embeddings
  for text (a word-level vocabulary, :mod:`jaxvision.data.text`). One set of encoders for all,
  one backbone, as PolyViT (arXiv 2111.12993) does with its per-modality tokenizers.
* Every encoder prepends its own class token; the classification heads read the backbone's
  class token (as ViT).
* Masked pre-training follows MAE (arXiv 2111.06377) / OmniMAE (arXiv 2206.08356): drop a random
  ``mask_ratios`` fraction of each example's tokens (75% for image, video and audio; 60% for
  points as Point-MAE; 30% for text), encode the visible ones (plus the class token) with the
  backbone, and reconstruct the dropped ones with a light decoder shared by every modality
  (OmniMAE shares one) that ends in one linear prediction layer per modality. Targets: the pixels
  of each patch/tubelet and the spectrogram values of each audio patch, normalised per patch
  (MAE's ``norm_pix_loss``); each point group's coordinates relative to its centre (compared by
  Chamfer distance, Point-MAE); each text token's id (cross-entropy, as BERT's masked tokens).
  The decoder's position for a token is a linear map of the encoder's position embedding of that
  token (so point clouds, whose positions come from their centres, need nothing special).
* The summarisation head is a small transformer decoder (Vaswani et al., arXiv 1706.03762):
  causal self-attention, cross-attention to all the backbone's text tokens, an MLP, pre-LN;
  trained with teacher forcing; at inference it decodes greedily inside ``jit`` for a fixed
  ``summary_length`` steps (a ``lax.fori_loop``; every step reruns the decoder on the whole
  fixed-length prefix, which keeps shapes static). Its output is a pointer-generator's (See et
  al., arXiv 1704.04368; ``summary_copy``, on by default): a gate mixes the vocabulary's softmax
  with an attention over the document's tokens that copies their words - on the generated
  headlines it lifted ROUGE-L from 0.24 to 0.73 in the same 370 steps.
* Padding of text is masked out of every attention (backbone, pre-training decoder, cross-
  attention).

Shape legend: B batch, N tokens of a modality (class token excluded), D backbone width,
T reconstruction-target width, S summary length, V vocabulary size.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.constants import BOS_ID, CLASSIFIED_MODALITIES, MODALITIES, PAD_ID
from jaxvision.layers.attention import MultiHeadSelfAttention, attention_kernel_init
from jaxvision.layers.inputs import check_images
from jaxvision.layers.mlp import Mlp
from jaxvision.layers.patch_embed import PatchEmbed, patchify
from jaxvision.layers.pos_embed import PositionEmbedding
from jaxvision.models.vit import (
    HEAD_INIT_STD,
    LAYER_NORM_EPSILON,
    loop_to_scan_params,
    transformer_encoder,
)
from jaxvision.ops.audio import log_mel_spectrogram
from jaxvision.ops.points import group_points
from jaxvision.registry import INCEPTION_MEAN, INCEPTION_STD, Preprocessing, register_model

OBJECTIVES = ("tasks", "pretrain")


class Tokens(NamedTuple):
    """What an encoder hands on: ``tokens`` (B, 1+N, D) class token first, position embeddings
    included; ``positions`` (B, N, D) the position embedding of each non-class token;
    ``targets`` (B, N, T) what masked pre-training reconstructs ((B, N) token ids for text);
    ``key_mask`` (B, 1+N) True for real tokens (None: all real)."""

    tokens: jax.Array
    positions: jax.Array
    targets: jax.Array
    key_mask: jax.Array | None = None


def normalize_per_token(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Each target token standardised over its own values (MAE's ``norm_pix_loss``)."""
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / jnp.sqrt(var + eps)


def _class_token_and_positions(
    module: nn.Module, tokens: jax.Array, drop_rate: float, *, train: bool
) -> tuple[jax.Array, jax.Array]:
    """ViT's prefix: prepend a learned class token, add a learned position embedding (one row
    per token, class token included), dropout. Call inside a compact method: the parameters are
    the caller's ``class_token`` and ``pos_embed`` (ViT's names). Returns the sequence
    (B, 1+N, D) and the N non-class position embeddings broadcast to (B, N, D)."""
    batch, _, width = tokens.shape
    class_token = module.param("class_token", nn.initializers.zeros, (1, 1, width))
    class_token = jnp.broadcast_to(class_token.astype(tokens.dtype), (batch, 1, width))
    pos_embed = PositionEmbedding(name="pos_embed")
    x = pos_embed(jnp.concatenate([class_token, tokens], axis=1))  # (B, 1+N, D)
    x = nn.Dropout(drop_rate, deterministic=not train)(x)
    positions = pos_embed.variables["params"]["embedding"][:, 1:].astype(tokens.dtype)
    return x, jnp.broadcast_to(positions, tokens.shape)


def _check_shape(modality: str, x: jax.Array, expected: tuple[int, ...], what: str) -> None:
    shape = tuple(getattr(x, "shape", ()))
    if shape[1:] != expected:
        raise ValueError(
            f"OmniVec's {modality} encoder was built for {what} of shape (B, "
            f"{', '.join(map(str, expected))}), got {shape}; build the model for this input "
            "size (see the fields of jaxvision.models.omnivec.OmniVec)"
        )


# ---------------------------------------------------------------------------------------------
# Modality encoders: one modality -> tokens of width D
# ---------------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """Images (B, S, S, C) -> p x p patches, linear projection, class token, position
    embedding: ViT's embedding (eq. 1), with ViT's parameter names."""

    hidden_size: int
    image_size: int
    patch_size: int
    channels: int = 3
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool) -> Tokens:
        check_images(images, model="OmniVec's image encoder", channels=self.channels)
        size = self.image_size
        _check_shape("image", images, (size, size, self.channels), "images")
        x = PatchEmbed(self.hidden_size, self.patch_size, dtype=self.dtype, name="patch_embed")(
            images
        )  # (B, S, S, C) -> (B, N, D)
        x, positions = _class_token_and_positions(self, x, self.drop_rate, train=train)
        targets = normalize_per_token(patchify(images.astype(jnp.float32), self.patch_size))
        return Tokens(x, positions, targets)  # targets (B, N, p*p*C)


class VideoEncoder(nn.Module):
    """Clips (B, F, S, S, C) -> t x p x p tubelets, linear projection, class token, position
    embedding (ViViT's tubelet embedding)."""

    hidden_size: int
    num_frames: int
    frame_size: int
    tubelet: tuple[int, int]  # (frames t, pixels p) per tubelet
    channels: int = 3
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, clips: jax.Array, *, train: bool) -> Tokens:
        t, p = self.tubelet
        size = self.frame_size
        _check_shape("video", clips, (self.num_frames, size, size, self.channels), "clips")
        tubelets = einops.rearrange(
            clips.astype(jnp.float32),
            "b (f t) (h p1) (w p2) c -> b (f h w) (t p1 p2 c)",
            t=t,
            p1=p,
            p2=p,
        )  # (B, F, S, S, C) -> (B, N, t*p*p*C), N = (F/t)(S/p)^2
        x = nn.Dense(self.hidden_size, dtype=self.dtype, name="tubelet_embed")(tubelets)
        x, positions = _class_token_and_positions(self, x, self.drop_rate, train=train)
        return Tokens(x, positions, normalize_per_token(tubelets))


class AudioEncoder(nn.Module):
    """Waveforms (B, samples) -> log-mel spectrogram (frames x mels, computed here in JAX) ->
    p x p patches of the spectrogram as an image, class token, position embedding (AST)."""

    hidden_size: int
    num_samples: int
    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    num_frames: int  # the spectrogram is cropped or zero-padded to this many frames
    patch_size: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    def spectrogram(self, waveforms: jax.Array) -> jax.Array:
        """(B, samples) -> standardised log-mel spectrogram (B, num_frames, n_mels, 1)."""
        spec = log_mel_spectrogram(
            waveforms.astype(jnp.float32),
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
        )  # (B, frames, mels)
        mean = spec.mean(axis=(1, 2), keepdims=True)
        std = spec.std(axis=(1, 2), keepdims=True)
        spec = (spec - mean) / (std + 1e-5)
        frames = spec.shape[1]
        if frames >= self.num_frames:
            spec = spec[:, : self.num_frames]
        else:
            spec = jnp.pad(spec, ((0, 0), (0, self.num_frames - frames), (0, 0)))
        return spec[..., None]

    @nn.compact
    def __call__(self, waveforms: jax.Array, *, train: bool) -> Tokens:
        _check_shape("audio", waveforms, (self.num_samples,), "waveforms")
        spec = self.spectrogram(waveforms)  # (B, frames, mels, 1)
        x = PatchEmbed(self.hidden_size, self.patch_size, dtype=self.dtype, name="patch_embed")(
            spec
        )  # -> (B, N, D), N = (frames / p)(mels / p)
        x, positions = _class_token_and_positions(self, x, self.drop_rate, train=train)
        return Tokens(x, positions, normalize_per_token(patchify(spec, self.patch_size)))


class MiniPointNet(nn.Module):
    """One token per point group (Point-MAE's encoder): a shared per-point MLP, max-pool over the
    group, the pooled feature concatenated back onto every point, a second MLP, max-pool.
    (B, G, K, 3) -> (B, G, D)."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, groups: jax.Array) -> jax.Array:
        def mlp(x: jax.Array, widths: tuple[int, int], name: str) -> jax.Array:
            x = nn.Dense(widths[0], dtype=self.dtype, name=f"{name}_fc1")(x)
            x = nn.gelu(nn.LayerNorm(dtype=self.dtype, name=f"{name}_norm")(x), approximate=False)
            return nn.Dense(widths[1], dtype=self.dtype, name=f"{name}_fc2")(x)

        x = mlp(groups, (self.features // 2, self.features // 2), "first")  # (B, G, K, D/2)
        pooled = jnp.max(x, axis=2, keepdims=True)  # (B, G, 1, D/2)
        x = jnp.concatenate([jnp.broadcast_to(pooled, x.shape), x], axis=-1)  # (B, G, K, D)
        x = mlp(x, (self.features, self.features), "second")  # (B, G, K, D)
        return jnp.max(x, axis=2)  # (B, G, D)


class PointEncoder(nn.Module):
    """Point clouds (B, P, 3) -> G centres by farthest-point sampling, each with its K nearest
    neighbours relative to it -> a mini-PointNet token per group, plus a position embedding that
    an MLP computes from the centre (Point-MAE)."""

    hidden_size: int
    num_points: int
    num_groups: int
    group_size: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, points: jax.Array, *, train: bool) -> Tokens:
        _check_shape("points", points, (self.num_points, 3), "point clouds")
        centres, groups = group_points(
            points.astype(jnp.float32), self.num_groups, self.group_size
        )  # (B, G, 3), (B, G, K, 3)
        x = MiniPointNet(self.hidden_size, dtype=self.dtype, name="group_embed")(groups)
        positions = nn.Sequential(
            [
                nn.Dense(128, dtype=self.dtype),
                functools.partial(nn.gelu, approximate=False),
                nn.Dense(self.hidden_size, dtype=self.dtype),
            ],
            name="pos_mlp",
        )(centres)  # (B, G, D)
        batch = points.shape[0]
        class_token = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden_size))
        class_pos = self.param("class_pos", nn.initializers.normal(0.02), (1, 1, self.hidden_size))
        prefix = jnp.broadcast_to(
            (class_token + class_pos).astype(x.dtype), (batch, 1, x.shape[-1])
        )
        x = jnp.concatenate([prefix, x + positions], axis=1)  # (B, 1+G, D)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        targets = groups.reshape(*groups.shape[:2], -1)  # (B, G, K*3)
        return Tokens(x, positions, targets)


class TextEncoder(nn.Module):
    """Token ids (B, L) (0 = padding) -> word embeddings, class token, position embedding; the
    padding is masked out of attention."""

    hidden_size: int
    vocab_size: int
    text_length: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids: jax.Array, *, train: bool) -> Tokens:
        _check_shape("text", ids, (self.text_length,), "token ids")
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"OmniVec's text encoder takes integer token ids, got {ids.dtype}")
        x = nn.Embed(self.vocab_size, self.hidden_size, dtype=self.dtype, name="token_embed")(ids)
        x, positions = _class_token_and_positions(self, x, self.drop_rate, train=train)
        real = jnp.concatenate([jnp.ones_like(ids[:, :1], bool), ids != PAD_ID], axis=1)
        return Tokens(x, positions, ids, key_mask=real)


# ---------------------------------------------------------------------------------------------
# The shared backbone
# ---------------------------------------------------------------------------------------------


class SharedBackbone(nn.Module):
    """L pre-LN ViT encoder blocks and a final LayerNorm, the same parameters for every modality:
    ``(B, 1+N, D) -> (B, 1+N, D)``. Parameters ``encoder_blocks`` (scanned) or
    ``encoder_block<i>``, and ``encoder_norm`` - ViT's names."""

    num_layers: int
    num_heads: int
    mlp_dim: int
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    scan_blocks: bool = True
    attention_implementation: str = "auto"

    @nn.compact
    def __call__(
        self, x: jax.Array, key_mask: jax.Array | None = None, *, train: bool
    ) -> jax.Array:
        return transformer_encoder(
            x,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            drop_rate=self.drop_rate,
            attention_drop_rate=self.attention_drop_rate,
            drop_path_rate=self.drop_path_rate,
            dtype=self.dtype,
            scan_blocks=self.scan_blocks,
            attention_implementation=self.attention_implementation,
            mask=None if key_mask is None else key_mask[:, None, None, :],
            train=train,
        )


# ---------------------------------------------------------------------------------------------
# Heads: classification (a Dense layer, in OmniVec.setup) and text summarisation
# ---------------------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    """Multi-head attention of queries (B, S, D) to a memory (B, N, D); ``memory_mask`` (B, N)
    True for real memory tokens. Parameters ``query`` (D, D), ``key_value`` (D, 2D), ``output``."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None) -> jax.Array:
        width = x.shape[-1]
        dense = lambda n, name: nn.Dense(
            n, dtype=self.dtype, kernel_init=attention_kernel_init, name=name
        )
        query = einops.rearrange(dense(width, "query")(x), "b s (k d) -> b k s d", k=self.num_heads)
        key, value = einops.rearrange(
            dense(2 * width, "key_value")(memory),
            "b n (two k d) -> two b k n d",
            two=2,
            k=self.num_heads,
        )
        scores = jnp.einsum("bksd,bknd->bksn", query * query.shape[-1] ** -0.5, key)
        scores = scores.astype(jnp.float32)
        if memory_mask is not None:
            scores = jnp.where(memory_mask[:, None, None, :], scores, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
        attended = einops.rearrange(
            jnp.einsum("bksn,bknd->bksd", weights, value), "b k s d -> b s (k d)"
        )
        return dense(width, "output")(attended)


class DecoderBlock(nn.Module):
    """Pre-LN transformer decoder block: causal self-attention, cross-attention, MLP."""

    num_heads: int
    mlp_dim: int
    drop_rate: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, memory, memory_mask, *, train: bool) -> jax.Array:
        norm = lambda name: nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name=name)
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))[None, None]
        x = x + MultiHeadSelfAttention(
            self.num_heads, drop_rate=self.drop_rate, dtype=self.dtype, name="self_attention"
        )(norm("self_attention_norm")(x), train=train, mask=causal)
        x = x + CrossAttention(self.num_heads, dtype=self.dtype, name="cross_attention")(
            norm("cross_attention_norm")(x), memory, memory_mask
        )
        y = Mlp(self.mlp_dim, drop_rate=self.drop_rate, dtype=self.dtype, name="mlp")
        return x + y(norm("mlp_norm")(x), train=train)


class SummaryDecoder(nn.Module):
    """The text-summarisation head: an autoregressive decoder over the summary's tokens that
    cross-attends to the backbone's text tokens. ``__call__`` gives next-token log-probabilities
    (B, S, V) for teacher forcing; :meth:`generate` decodes greedily (B, S) inside ``jit``.

    ``copy`` (default on): a pointer-generator output (See et al., "Get To The Point", arXiv
    1704.04368). Besides the softmax over the vocabulary, each step points at the document:
    one attention head from the decoder's state to the backbone's text tokens gives a
    distribution over the document's positions, which lands on those positions' word ids; a
    learned gate per step mixes the two, ``p(w) = g p_vocab(w) + (1 - g) sum_{i: id_i = w}
    a_i``. A headline mostly reuses the document's words, and pointing at them is far quicker
    to learn than producing each through the vocabulary (the README's OmniVec section: ROUGE-L
    0.24 -> 0.73 in the same 370 steps). With ``copy`` off the output is the vocabulary's
    log-softmax alone.
    """

    vocab_size: int
    summary_length: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    drop_rate: float = 0.0
    copy: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, memory, memory_mask, source_ids, previous: jax.Array, *, train: bool
    ) -> jax.Array:
        """``memory`` (B, 1+L, D) the backbone's text tokens (class token first), ``memory_mask``
        (B, 1+L) True for real tokens, ``source_ids`` (B, L) the document's token ids,
        ``previous`` (B, S) the decoder's input ids -> log-probabilities (B, S, V)."""
        x = nn.Embed(self.vocab_size, memory.shape[-1], dtype=self.dtype, name="token_embed")(
            previous
        )  # (B, S) -> (B, S, D)
        x = PositionEmbedding(name="pos_embed")(x)
        for i in range(self.num_layers):
            x = DecoderBlock(
                self.num_heads, self.mlp_dim, self.drop_rate, self.dtype, name=f"block{i}"
            )(x, memory, memory_mask, train=train)
        x = nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=self.dtype, name="norm")(x)
        logits = nn.Dense(self.vocab_size, dtype=self.dtype, name="logits")(x)
        log_vocab = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)  # (B, S, V)
        if not self.copy:
            return log_vocab

        # Pointing: one attention head over the document's tokens (the class token excluded)
        width = memory.shape[-1]
        query = nn.Dense(width, dtype=self.dtype, name="copy_query")(x)  # (B, S, D)
        key = nn.Dense(width, dtype=self.dtype, name="copy_key")(memory[:, 1:])  # (B, L, D)
        scores = jnp.einsum("bsd,bld->bsl", query, key).astype(jnp.float32) / np.sqrt(width)
        real = source_ids != PAD_ID if memory_mask is None else memory_mask[:, 1:]
        scores = jnp.where(real[:, None, :], scores, -1e9)
        pointer = jax.nn.softmax(scores, axis=-1)  # (B, S, L)
        # Each position's share lands on its word id (added up where a word repeats)
        batch, steps = pointer.shape[:2]
        rows = jnp.arange(batch)[:, None, None]
        cols = jnp.arange(steps)[None, :, None]
        p_copy = jnp.zeros((batch, steps, self.vocab_size), jnp.float32)
        p_copy = p_copy.at[rows, cols, source_ids[:, None, :]].add(pointer)  # (B, S, V)
        gate = nn.Dense(1, dtype=self.dtype, name="copy_gate")(x).astype(jnp.float32)
        p = jax.nn.sigmoid(gate) * jnp.exp(log_vocab) + jax.nn.sigmoid(-gate) * p_copy
        return jnp.log(p + 1e-9)

    def generate(
        self, memory: jax.Array, memory_mask: jax.Array | None, source_ids: jax.Array
    ) -> jax.Array:
        """Greedy decoding of ``summary_length`` tokens, starting from ``<bos>``: a
        ``lax.fori_loop`` whose step reruns the decoder on the whole fixed-length prefix (static
        shapes; the causal mask hides the not yet decoded positions) and appends the argmax."""
        batch, length = memory.shape[0], self.summary_length
        params = self.variables["params"]
        decoder = self.clone(parent=None)  # the same decoder as a pure function of ``params``

        def step(i: jax.Array, carry: tuple[jax.Array, jax.Array]):
            previous, out = carry
            logits = decoder.apply(
                {"params": params}, memory, memory_mask, source_ids, previous, train=False
            )
            token = jnp.argmax(logits[:, i], axis=-1).astype(jnp.int32)  # (B,)
            out = out.at[:, i].set(token)
            previous = previous.at[:, i + 1].set(token, mode="drop")  # past the end: dropped
            return previous, out

        previous = jnp.zeros((batch, length), jnp.int32).at[:, 0].set(BOS_ID)
        _, out = jax.lax.fori_loop(0, length, step, (previous, jnp.zeros_like(previous)))
        return out


def shift_right(summary: jax.Array) -> jax.Array:
    """Teacher forcing's decoder input: ``<bos>`` then the summary without its last token."""
    bos = jnp.full_like(summary[:, :1], BOS_ID)
    return jnp.concatenate([bos, summary[:, :-1]], axis=1)


# ---------------------------------------------------------------------------------------------
# Masked pre-training: a light decoder shared by all modalities
# ---------------------------------------------------------------------------------------------


def random_keep(rng: jax.Array, batch: int, num_tokens: int, mask_ratio: float) -> jax.Array:
    """Per example, the indices (B, n_keep) of the tokens left visible, n_keep = N - round(ratio
    * N) (at least one): the first n_keep of a random permutation, as MAE's random masking."""
    keep = max(1, num_tokens - int(round(mask_ratio * num_tokens)))
    noise = jax.random.uniform(rng, (batch, num_tokens))
    return jnp.argsort(noise, axis=1)[:, :keep].astype(jnp.int32)


def masked_positions(keep: jax.Array, num_tokens: int) -> jax.Array:
    """(B, N) float: 1 where a token was masked (to reconstruct), 0 where it was visible."""
    visible = jnp.zeros((keep.shape[0], num_tokens)).at[jnp.arange(keep.shape[0])[:, None], keep]
    return 1.0 - visible.set(1.0)


class PretrainDecoder(nn.Module):
    """MAE's decoder: the visible tokens' backbone states and a learned mask token at every
    masked position, each with its position, through a few narrow transformer blocks, then one
    linear prediction layer per modality (``<modality>_prediction``)."""

    width: int
    num_layers: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        modality: str,
        encoded: jax.Array,
        keep: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array | None,
        target_width: int,
        *,
        train: bool,
    ) -> jax.Array:
        batch, num_tokens = positions.shape[:2]
        x = nn.Dense(self.width, dtype=self.dtype, name="embed")(encoded)  # (B, 1+n_keep, d)
        mask_token = self.param("mask_token", nn.initializers.normal(0.02), (1, 1, self.width))
        full = jnp.broadcast_to(mask_token.astype(x.dtype), (batch, num_tokens, self.width))
        full = full.at[jnp.arange(batch)[:, None], keep].set(x[:, 1:])  # visible back in place
        full = full + nn.Dense(self.width, dtype=self.dtype, name="positions")(positions)
        x = jnp.concatenate([x[:, :1], full], axis=1)  # (B, 1+N, d)
        x = transformer_encoder(
            x,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=4 * self.width,
            dtype=self.dtype,
            mask=None if key_mask is None else key_mask[:, None, None, :],
            train=train,
        )
        prediction = nn.Dense(target_width, dtype=self.dtype, name=f"{modality}_prediction")
        return prediction(x[:, 1:]).astype(jnp.float32)  # (B, N, T)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class OmniVec(nn.Module):
    """Encoders + shared backbone + heads. ``__call__(inputs, *, train)`` takes a dict holding
    any of ``"image"`` (B, S, S, C), ``"video"`` (B, F, S, S, C), ``"audio"`` (B, samples),
    ``"points"`` (B, P, 3), ``"text"`` (B, L) int ids (and ``"summary"`` (B, S) ids for teacher
    forcing) and returns a dict with one entry per modality present:

    * ``objective="tasks"``: class logits (B, classes) for image, video, audio, points; for text
      ``{"logits": (B, S, V)}`` when ``"summary"`` is given, plus ``{"tokens": (B, S)}`` (greedy
      decoding) when ``train=False``;
    * ``objective="pretrain"``: ``{"prediction": (B, N, T), "target": (B, N, T), "masked": (B,
      N)}`` (text: prediction (B, N, V) logits, target (B, N) ids). In training the masked tokens
      are drawn from the ``"masking"`` random stream; in evaluation from a fixed key, so a
      validation loss is comparable from epoch to epoch.

    Each batch usually carries one modality (a step then runs only that encoder and head);
    initialise with every modality present so that every part is created.
    ``num_classes`` is the image head's (as for every jaxvision classifier).
    """

    objective: str = "tasks"
    # shared backbone
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    scan_blocks: bool = True
    attention_implementation: str = "auto"
    # image
    image_size: int = 224
    patch_size: int = 16
    image_channels: int = 3
    num_classes: int = 1000
    # video
    video_frames: int = 16
    video_size: int = 224
    tubelet: tuple[int, int] = (2, 16)
    video_channels: int = 3
    video_classes: int = 400
    # audio
    sample_rate: int = 16000
    audio_samples: int = 160000
    n_fft: int = 400
    hop_length: int = 160
    n_mels: int = 128
    audio_frames: int = 1024
    audio_patch_size: int = 16
    audio_classes: int = 527
    # points
    num_points: int = 1024
    num_groups: int = 64
    group_size: int = 32
    points_classes: int = 40
    # text
    vocab_size: int = 32000
    text_length: int = 512
    summary_length: int = 64
    summary_layers: int = 4
    summary_copy: bool = True  # the summary decoder's pointer-generator output
    # masked pre-training (MODALITIES order) and its decoder
    mask_ratios: tuple[float, ...] = (0.75, 0.75, 0.75, 0.6, 0.3)
    decoder_width: int = 512
    decoder_layers: int = 8
    decoder_heads: int = 16

    def setup(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if not isinstance(self.summary_copy, bool):
            raise ValueError(f"summary_copy must be True or False, got {self.summary_copy!r}")
        if len(self.mask_ratios) != len(MODALITIES):
            raise ValueError(f"mask_ratios needs one ratio per modality {MODALITIES}")
        common = {"hidden_size": self.hidden_size, "drop_rate": self.drop_rate, "dtype": self.dtype}
        self.image_encoder = ImageEncoder(
            image_size=self.image_size,
            patch_size=self.patch_size,
            channels=self.image_channels,
            **common,
        )
        self.video_encoder = VideoEncoder(
            num_frames=self.video_frames,
            frame_size=self.video_size,
            tubelet=tuple(self.tubelet),
            channels=self.video_channels,
            **common,
        )
        self.audio_encoder = AudioEncoder(
            num_samples=self.audio_samples,
            sample_rate=self.sample_rate,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            n_mels=self.n_mels,
            num_frames=self.audio_frames,
            patch_size=self.audio_patch_size,
            **common,
        )
        self.points_encoder = PointEncoder(
            num_points=self.num_points,
            num_groups=self.num_groups,
            group_size=self.group_size,
            **common,
        )
        self.text_encoder = TextEncoder(
            vocab_size=self.vocab_size, text_length=self.text_length, **common
        )
        self.backbone = SharedBackbone(
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            drop_rate=self.drop_rate,
            attention_drop_rate=self.attention_drop_rate,
            drop_path_rate=self.drop_path_rate,
            dtype=self.dtype,
            scan_blocks=self.scan_blocks,
            attention_implementation=self.attention_implementation,
        )
        if self.objective == "tasks":
            head = functools.partial(
                nn.Dense,
                dtype=self.dtype,
                kernel_init=nn.initializers.truncated_normal(HEAD_INIT_STD),
            )
            self.image_head = head(self.num_classes)
            self.video_head = head(self.video_classes)
            self.audio_head = head(self.audio_classes)
            self.points_head = head(self.points_classes)
            self.text_head = SummaryDecoder(
                vocab_size=self.vocab_size,
                summary_length=self.summary_length,
                num_layers=self.summary_layers,
                copy=self.summary_copy,
                num_heads=self.num_heads,
                mlp_dim=self.mlp_dim,
                drop_rate=self.drop_rate,
                dtype=self.dtype,
            )
        else:
            self.decoder = PretrainDecoder(
                width=self.decoder_width,
                num_layers=self.decoder_layers,
                num_heads=self.decoder_heads,
                dtype=self.dtype,
            )

    def encode(self, modality: str, x: jax.Array, *, train: bool) -> Tokens:
        """The modality's encoder: ``x`` -> :class:`Tokens`."""
        return getattr(self, f"{modality}_encoder")(x, train=train)

    def features(self, inputs: Mapping[str, jax.Array], *, train: bool) -> dict[str, jax.Array]:
        """The backbone's tokens (B, 1+N, D) per modality, class token first: the shared
        embedding space."""
        out = {}
        for modality in _modalities(inputs):
            encoded = self.encode(modality, inputs[modality], train=train)
            out[modality] = self.backbone(encoded.tokens, encoded.key_mask, train=train)
        return out

    def __call__(self, inputs: Mapping[str, jax.Array], *, train: bool) -> dict[str, Any]:
        out = {}
        for modality in _modalities(inputs):
            encoded = self.encode(modality, inputs[modality], train=train)
            if self.objective == "pretrain":
                out[modality] = self._reconstruct(modality, encoded, train=train)
            elif modality == "text":
                out[modality] = self._summarise(encoded, inputs.get("summary"), train=train)
            else:
                x = self.backbone(encoded.tokens, encoded.key_mask, train=train)
                head = getattr(self, f"{modality}_head")
                out[modality] = head(x[:, 0]).astype(jnp.float32)  # class token -> logits
        return out

    def _summarise(self, encoded: Tokens, summary: jax.Array | None, *, train: bool) -> dict:
        memory = self.backbone(encoded.tokens, encoded.key_mask, train=train)  # (B, 1+L, D)
        out = {}
        if summary is not None:  # teacher forcing
            out["logits"] = self.text_head(
                memory, encoded.key_mask, encoded.targets, shift_right(summary), train=train
            )
        if not train and not self.is_initializing():  # (decoding creates no parameters)
            out["tokens"] = self.text_head.generate(memory, encoded.key_mask, encoded.targets)
        return out

    def _reconstruct(self, modality: str, encoded: Tokens, *, train: bool) -> dict[str, Any]:
        batch, num_tokens = encoded.positions.shape[:2]
        if train:
            rng = self.make_rng("masking")
        else:  # a fixed mask per modality: comparable evaluation losses
            rng = jax.random.fold_in(jax.random.key(0), MODALITIES.index(modality))
        ratio = self.mask_ratios[MODALITIES.index(modality)]
        keep = random_keep(rng, batch, num_tokens, ratio)  # (B, n_keep)
        rows = jnp.arange(batch)[:, None]

        # Encode the class token and the visible tokens only
        visible = encoded.tokens[:, 1:][rows, keep]  # (B, n_keep, D)
        x = jnp.concatenate([encoded.tokens[:, :1], visible], axis=1)
        key_mask = None
        if encoded.key_mask is not None:
            key_mask = jnp.concatenate(
                [encoded.key_mask[:, :1], encoded.key_mask[:, 1:][rows, keep]], 1
            )
        x = self.backbone(x, key_mask, train=train)  # (B, 1+n_keep, D)

        # Reconstruct every token; the loss reads only the masked ones
        if modality == "text":
            target_width = self.vocab_size  # logits over the vocabulary
        else:
            target_width = encoded.targets.shape[-1]
        prediction = self.decoder(
            modality, x, keep, encoded.positions, encoded.key_mask, target_width, train=train
        )
        return {
            "prediction": prediction,
            "target": encoded.targets,
            "masked": masked_positions(keep, num_tokens),
        }


def _modalities(inputs: Mapping[str, Any]) -> list[str]:
    if not isinstance(inputs, Mapping):
        raise ValueError(
            "OmniVec takes a dict of inputs keyed by modality "
            f"({', '.join(MODALITIES)}), got {type(inputs).__name__}"
        )
    unknown = sorted(set(inputs) - set(MODALITIES) - {"summary"})
    if unknown:
        raise ValueError(f"unknown OmniVec inputs {unknown}; known: {', '.join(MODALITIES)}")
    present = [m for m in MODALITIES if m in inputs]
    if not present:
        raise ValueError(f"OmniVec's inputs hold none of the modalities {MODALITIES}")
    return present


# ---------------------------------------------------------------------------------------------
# Parameters: the three parts, and ViT's weights in OmniVec's image path
# ---------------------------------------------------------------------------------------------

PARTS = ("encoders", "backbone", "heads")


def part_of(name: str) -> str:
    """Which part a top-level parameter collection belongs to: ``encoders``, ``backbone`` or
    ``heads`` (the task heads and the pre-training decoder)."""
    if name.endswith("_encoder"):
        return "encoders"
    if name == "backbone":
        return "backbone"
    return "heads"


def count_parts(params: Mapping[str, Any]) -> dict[str, int]:
    """Parameter counts as encoders + backbone + heads (how the paper describes OmniVec's size),
    and per top-level module."""
    out = {part: 0 for part in PARTS}
    for name, tree in params.items():
        n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
        out[part_of(name)] += n
        out[name] = n
    return out


def from_vit_params(vit_params: Mapping[str, Any], *, scanned: bool = True) -> dict[str, Any]:
    """ViT classifier parameters (jaxvision's ``VisionTransformer``) placed where OmniVec's image
    path has them: ``patch_embed``, ``class_token``, ``pos_embed`` -> ``image_encoder``; the
    blocks and ``encoder_norm`` -> ``backbone``; ``head`` -> ``image_head``. Load the result with
    :func:`jaxvision.train.finetune.merge_matching` (the other modalities keep their own)."""
    vit_params = dict(vit_params.get("params", vit_params))
    blocks = {k: v for k, v in vit_params.items() if k.startswith("encoder_block")}
    if scanned and "encoder_blocks" not in blocks:
        blocks = loop_to_scan_params(blocks)
    return {
        "image_encoder": {k: vit_params[k] for k in ("patch_embed", "class_token", "pos_embed")},
        "backbone": {**blocks, "encoder_norm": vit_params["encoder_norm"]},
        "image_head": vit_params["head"],
    }


# ---------------------------------------------------------------------------------------------
# Registered variants
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Variant:
    description: str
    resolution: int
    fields: dict[str, Any]


TINY = {
    "hidden_size": 128,
    "num_layers": 4,
    "num_heads": 4,
    "mlp_dim": 512,
    "image_size": 16,
    "patch_size": 4,
    "num_classes": 10,
    "video_frames": 8,
    "video_size": 32,
    "tubelet": (2, 8),
    "video_channels": 1,
    "video_classes": 6,
    "sample_rate": 8000,
    "audio_samples": 8000,
    "n_fft": 256,
    "hop_length": 128,
    "n_mels": 32,
    "audio_frames": 64,
    "audio_patch_size": 8,
    "audio_classes": 6,
    "num_points": 256,
    "num_groups": 32,
    "group_size": 16,
    "points_classes": 7,
    "vocab_size": 512,
    "text_length": 64,
    "summary_length": 12,
    "summary_layers": 2,
    "decoder_width": 64,
    "decoder_layers": 1,
    "decoder_heads": 4,
}
# The backbone is exactly ViT-B/16's encoder (12 blocks, 768 wide, 12 heads, MLP 3072); the
# encoders follow their sources' base settings: AST (16 kHz, 10 s, 128 mels, 1024 frames,
# 16x16 patches), ViViT (2x16x16 tubelets), Point-MAE (1024 points, 64 groups of 32), MAE's
# decoder (512 wide, 8 blocks).
BASE = {"image_size": 224, "patch_size": 16}

VARIANTS = {
    "omnivec_tiny": Variant(
        "OmniVec tiny: 128-wide 4-block shared backbone, five modality encoders at toy sizes "
        "(trains end to end on a CPU in minutes)",
        16,
        TINY,
    ),
    "omnivec_base": Variant(
        "OmniVec base: ViT-B/16's encoder as the shared backbone; AST / ViViT / Point-MAE "
        "encoders at their base settings",
        224,
        BASE,
    ),
}

OMNIVEC_PREPROCESSING = Preprocessing(
    mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_fraction=1.0, interpolation="bilinear"
)

for _name, _variant in VARIANTS.items():
    register_model(
        _name,
        family="omnivec",
        resolution=_variant.resolution,
        preprocessing=OMNIVEC_PREPROCESSING,
        description=_variant.description,
        task="omnivec",
    )(functools.partial(OmniVec, **_variant.fields))


__all__ = [
    "CLASSIFIED_MODALITIES",
    "MODALITIES",
    "AudioEncoder",
    "ImageEncoder",
    "OmniVec",
    "PointEncoder",
    "PretrainDecoder",
    "SharedBackbone",
    "SummaryDecoder",
    "TextEncoder",
    "Tokens",
    "VideoEncoder",
    "count_parts",
    "from_vit_params",
    "masked_positions",
    "normalize_per_token",
    "random_keep",
]
