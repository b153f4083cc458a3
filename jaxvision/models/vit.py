"""Vision Transformer (ViT).

"An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale", Dosovitskiy et al.,
arXiv 2010.11929. Implemented: section 3.1 (eq. 1-4) and Table 1 (Base, Large, Huge); the Tiny
and Small sizes come from DeiT (Touvron et al., arXiv 2012.12877, Table 1) and AugReg (Steiner et
al., arXiv 2106.10270). Position-embedding interpolation for another resolution (section 3.2) is
:func:`jaxvision.layers.pos_embed.resize_pos_embed`; attention rollout (Abnar & Zuidema, arXiv
2005.00928) is :func:`attention_rollout`.

The network is :class:`ViTEncoder` (patches to encoded tokens) and a linear head on the class
token (:class:`VisionTransformer`). Features: ``ViTEncoder(...)`` returns the tokens
``(B, N+1, D)``, class token first; from a classifier, ``model.apply(variables, x, train=False,
method="forward_features")`` returns the same.

Architecture at a glance (ViT-Ti/16 at 224 px):

    input                                     (B, 224, 224, 3)
    patch_embed     16x16 patches -> 192      (B, 196, 192)      N = (224 / 16)^2 = 196
    class_token     prepended                 (B, 197, 192)
    pos_embed       learned, + dropout        (B, 197, 192)
    encoder_block0..11                        (B, 197, 192)
        x + DropPath(MSA(LN(x)))              3 heads of 64
        x + DropPath(MLP(LN(x)))              192 -> 768 -> 192, exact GELU
    encoder_norm    LayerNorm                 (B, 197, 192)      the encoder's output
    head            on the class token        (B, 1000)

Shape legend: B batch, H/W image height/width, p patch size, N = HW / p^2 patches, D hidden size,
M MLP width, K heads, L encoder blocks.

Choices and deviations, each with its origin:

* LayerNorm epsilon 1e-6 everywhere (timm, torchvision and big_vision; PyTorch's default is 1e-5).
* Dropout (``drop_rate``) where the paper puts it: after the position embedding and after every
  dense layer except the query/key/value projection (as torchvision; timm's ``proj_drop_rate``).
* Stochastic depth rates increase linearly from 0 at the first block to ``drop_path_rate`` at the
  last (timm's ``calculate_drop_path_rates``). With ``scan_blocks=True`` the per-block rates are
  scanned inputs, so scanned and looped models train identically.
* ``scan_blocks=True`` runs the L identical blocks with ``nn.scan``: one block is compiled instead
  of L, which cuts compile time for the deep variants (ViT-B/16 ``jax.jit(model.init)`` on this
  project's shared 2-core CPU: 22 s looped, 11 s scanned). Its parameters live under
  ``encoder_blocks`` with a leading axis of length L; :func:`scan_to_loop_params` and
  :func:`loop_to_scan_params` convert between the two layouts.
* A model is built for one ``image_size``; its position embedding has ``(image_size / p)^2 + 1``
  rows. To run at another size, create the model with that ``image_size`` and resize trained
  position embeddings with ``resize_pos_embed`` (the weight converters do this).
* Initialisation follows big_vision (LeCun-normal patch embedding, Xavier-uniform dense layers,
  zero class token) except the position embedding (normal, std 0.02, as timm) and the head,
  which gets timm's truncated normal of std 0.02 rather than big_vision's zeros, so that every
  parameter receives a gradient from the first step.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.layers.attention import MultiHeadSelfAttention
from jaxvision.layers.drop_path import drop_path
from jaxvision.layers.inputs import check_images
from jaxvision.layers.mlp import Mlp
from jaxvision.layers.patch_embed import PatchEmbed
from jaxvision.layers.pos_embed import PositionEmbedding
from jaxvision.registry import INCEPTION_MEAN, INCEPTION_STD, Preprocessing, register_model

LAYER_NORM_EPSILON = 1e-6  # timm / torchvision / big_vision ViTs
HEAD_INIT_STD = 0.02  # timm's init of the classifier


# ---------------------------------------------------------------------------------------------
# Variant table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int


# ViT paper Table 1 (Base, Large, Huge); DeiT Table 1 / AugReg for Tiny and Small.
VARIANTS: dict[str, ViTConfig] = {
    "ti16": ViTConfig(patch_size=16, hidden_size=192, num_layers=12, num_heads=3, mlp_dim=768),
    "s16": ViTConfig(patch_size=16, hidden_size=384, num_layers=12, num_heads=6, mlp_dim=1536),
    "b16": ViTConfig(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "b32": ViTConfig(patch_size=32, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072),
    "l16": ViTConfig(patch_size=16, hidden_size=1024, num_layers=24, num_heads=16, mlp_dim=4096),
    "h14": ViTConfig(patch_size=14, hidden_size=1280, num_layers=32, num_heads=16, mlp_dim=5120),
}


def drop_path_rates(drop_path_rate: float, num_layers: int) -> list[float]:
    """Per-block stochastic depth rates: linear from 0 (first block) to ``drop_path_rate`` (last),
    timm's stochastic depth decay rule."""
    return [float(r) for r in np.linspace(0.0, drop_path_rate, num_layers)]


# ---------------------------------------------------------------------------------------------
# Encoder block
# ---------------------------------------------------------------------------------------------


def _drop_path(module: nn.Module, x: jax.Array, rate: Any, *, train: bool) -> jax.Array:
    """:class:`jaxvision.layers.drop_path.DropPath` with the rate as an argument rather than a
    module field, so that ``nn.scan`` can feed each block its own (traced) rate."""
    if not train or (isinstance(rate, (int, float)) and rate == 0.0):
        return x
    return drop_path(x, rate, module.make_rng("drop_path"))


class EncoderBlock(nn.Module):
    """Pre-LN Transformer encoder block (eq. 2-3): ``(B, N, D) -> (B, N, D)``."""

    num_heads: int
    mlp_dim: int
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    dtype: Any = jnp.float32
    attention_implementation: str = "auto"
    sow_attention: bool = False

    @nn.compact
    def __call__(
        self, x: jax.Array, drop_path_rate: Any, *, train: bool, mask: jax.Array | None = None
    ) -> jax.Array:
        norm = functools.partial(nn.LayerNorm, epsilon=LAYER_NORM_EPSILON, dtype=self.dtype)

        # Multi-head self-attention sub-layer: z' = MSA(LN(z)) + z
        y = norm(name="attention_norm")(x)
        y = MultiHeadSelfAttention(
            num_heads=self.num_heads,
            attention_drop_rate=self.attention_drop_rate,
            drop_rate=self.drop_rate,
            dtype=self.dtype,
            implementation=self.attention_implementation,
            sow_attention=self.sow_attention,
            name="attention",
        )(y, train=train, mask=mask)
        x = x + _drop_path(self, y, drop_path_rate, train=train)

        # MLP sub-layer: z = MLP(LN(z')) + z'
        y = norm(name="mlp_norm")(x)
        y = Mlp(self.mlp_dim, drop_rate=self.drop_rate, dtype=self.dtype, name="mlp")(
            y, train=train
        )  # (B, N, D) -> (B, N, M) -> (B, N, D)
        x = x + _drop_path(self, y, drop_path_rate, train=train)
        self.sow("intermediates", "tokens", x)
        return x


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


def transformer_encoder(
    x: jax.Array,
    *,
    num_layers: int,
    num_heads: int,
    mlp_dim: int,
    drop_rate: float = 0.0,
    attention_drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    dtype: Any = jnp.float32,
    scan_blocks: bool = False,
    attention_implementation: str = "auto",
    sow_attention: bool = False,
    mask: jax.Array | None = None,
    train: bool,
) -> jax.Array:
    """L pre-LN :class:`EncoderBlock` s and the final LayerNorm: ``(B, N, D) -> (B, N, D)``.

    Call it inside a module's ``nn.compact`` method: the blocks (``encoder_block0`` ..., or
    ``encoder_blocks`` scanned) and ``encoder_norm`` become that module's submodules, so the ViT
    and OmniVec's shared backbone have the same parameter tree. ``mask``: as
    :class:`~jaxvision.layers.attention.MultiHeadSelfAttention`'s, the same for every block.
    """
    rates = drop_path_rates(drop_path_rate, num_layers)
    block = functools.partial(
        EncoderBlock,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        drop_rate=drop_rate,
        attention_drop_rate=attention_drop_rate,
        dtype=dtype,
        attention_implementation=attention_implementation,
        sow_attention=sow_attention,
    )
    if scan_blocks:
        use_rates = drop_path_rate > 0.0

        def body(encoder_block: EncoderBlock, x: jax.Array, rate: jax.Array):
            rate = rate if use_rates else 0.0
            return encoder_block(x, rate, train=train, mask=mask), None

        scan = nn.scan(
            body,
            variable_axes={"params": 0, "intermediates": 0},
            split_rngs={"params": True, "dropout": True, "drop_path": True},
            in_axes=0,
            length=num_layers,
        )
        x, _ = scan(block(name="encoder_blocks"), x, jnp.asarray(rates, jnp.float32))
    else:
        for i, rate in enumerate(rates):
            x = block(name=f"encoder_block{i}")(x, rate, train=train, mask=mask)  # (B, N, D)
    return nn.LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype=dtype, name="encoder_norm")(x)


class ViTEncoder(nn.Module):
    """The ViT encoder: patches -> class token + position embedding -> L encoder blocks -> LN.

    ``(B, image_size, image_size, 3) -> (B, N+1, D)``, the class token first. The embedded tokens
    and the output are sown into ``intermediates`` as ``embeddings`` and ``encoded``;
    ``sow_attention=True`` also stores every block's attention weights (B, K, N+1, N+1) (see
    :func:`collect_attention`, :func:`attention_rollout`). Fields as :class:`VisionTransformer`'s.
    """

    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    scan_blocks: bool = False
    sow_attention: bool = False
    attention_implementation: str = "auto"
    patch_embed_implementation: str = "auto"

    @property
    def grid_size(self) -> int:
        """Patches per side: the position embedding covers ``grid_size ** 2 + 1`` tokens."""
        return self.image_size // self.patch_size

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        # The work is in forward_features, which a classifier sharing this scope calls directly.
        return self.forward_features(x, train=train)

    @nn.compact
    def forward_features(self, x: jax.Array, *, train: bool) -> jax.Array:
        check_images(x, model="VisionTransformer")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}"
            )
        if x.shape[1:3] != (self.image_size, self.image_size):
            raise ValueError(
                f"this VisionTransformer was built for {self.image_size}x{self.image_size} "
                f"images (its position embedding has one row per patch), got "
                f"{x.shape[1]}x{x.shape[2]}; create the model with image_size=... (and resize "
                "trained position embeddings with jaxvision.layers.pos_embed.resize_pos_embed)"
            )
        batch = x.shape[0]

        # Patch embedding (eq. 1): x_p E
        x = PatchEmbed(
            self.hidden_size,
            self.patch_size,
            dtype=self.dtype,
            implementation=self.patch_embed_implementation,
            name="patch_embed",
        )(x)  # (B, H, W, 3) -> (B, N, D)

        # Class token, prepended; its final state is the image representation (eq. 4)
        class_token = self.param("class_token", nn.initializers.zeros, (1, 1, self.hidden_size))
        class_token = jnp.broadcast_to(class_token.astype(x.dtype), (batch, 1, self.hidden_size))
        x = jnp.concatenate([class_token, x], axis=1)  # (B, N, D) -> (B, N+1, D)

        # Learned position embedding
        x = PositionEmbedding(name="pos_embed")(x)  # (B, N+1, D)
        x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
        self.sow("intermediates", "embeddings", x)

        # Transformer encoder: L identical pre-LN blocks, then LayerNorm
        x = transformer_encoder(
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
            sow_attention=self.sow_attention,
            train=train,
        )  # (B, N+1, D)
        self.sow("intermediates", "encoded", x)
        return x  # (B, N+1, D)


class VisionTransformer(nn.Module):
    """ViT classifier: :class:`ViTEncoder`, then a linear head on the class token.
    ``__call__(x, *, train)`` takes (B, image_size, image_size, 3).

    ``sow_attention=True`` stores every block's attention weights (B, K, N+1, N+1) in
    ``intermediates`` (see :func:`collect_attention`, :func:`attention_rollout`). The encoder
    shares this module's scope, so its parameters keep their top-level names (``patch_embed``,
    ``encoder_block0``, ...) beside ``head``; ``method="forward_features"`` returns its tokens.
    """

    num_classes: int = 1000
    image_size: int = 224
    patch_size: int = 16
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    drop_rate: float = 0.0
    attention_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    dtype: Any = jnp.float32
    scan_blocks: bool = False
    sow_attention: bool = False
    attention_implementation: str = "auto"
    patch_embed_implementation: str = "auto"

    @property
    def grid_size(self) -> int:
        """Patches per side: the position embedding covers ``grid_size ** 2 + 1`` tokens."""
        return self.image_size // self.patch_size

    def setup(self) -> None:
        self.encoder = ViTEncoder(
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            mlp_dim=self.mlp_dim,
            drop_rate=self.drop_rate,
            attention_drop_rate=self.attention_drop_rate,
            drop_path_rate=self.drop_path_rate,
            dtype=self.dtype,
            scan_blocks=self.scan_blocks,
            sow_attention=self.sow_attention,
            attention_implementation=self.attention_implementation,
            patch_embed_implementation=self.patch_embed_implementation,
        )
        nn.share_scope(self, self.encoder)

    def forward_features(self, x: jax.Array, *, train: bool) -> jax.Array:
        """The encoder's tokens, ``(B, N+1, D)``, class token first."""
        # The encoder's forward_features rather than its __call__: in a shared scope,
        # capture_intermediates would record the encoder's __call__ output as this model's own.
        return self.encoder.forward_features(x, train=train)

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = self.forward_features(x, train=train)  # (B, H, W, 3) -> (B, N+1, D)

        # Classification head on the class token
        x = x[:, 0]  # (B, N+1, D) -> (B, D)
        logits = nn.Dense(
            self.num_classes,
            dtype=self.dtype,
            kernel_init=nn.initializers.truncated_normal(HEAD_INIT_STD),
            name="head",
        )(x)  # (B, D) -> (B, num_classes)
        return logits.astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Looped <-> scanned parameter layouts
# ---------------------------------------------------------------------------------------------

_BLOCK_KEY = re.compile(r"encoder_block(\d+)$")
_SCANNED_KEY = "encoder_blocks"


def _is_variables(tree: Mapping[str, Any]) -> bool:
    return "params" in tree and not any(_BLOCK_KEY.match(k) for k in tree)


def loop_to_scan_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``encoder_block0 .. encoder_block{L-1}`` -> ``encoder_blocks`` with a leading axis L.

    Accepts the ``params`` tree or a variables dict holding it under ``"params"``.
    """
    if _is_variables(params):
        return {**params, "params": loop_to_scan_params(params["params"])}
    blocks = sorted(
        ((int(m.group(1)), k) for k in params if (m := _BLOCK_KEY.match(k))), key=lambda t: t[0]
    )
    if not blocks:
        raise ValueError("no encoder_block<i> entries found; are these parameters already scanned?")
    if [i for i, _ in blocks] != list(range(len(blocks))):
        raise ValueError(f"encoder blocks are not numbered 0..{len(blocks) - 1}: {blocks}")
    out = {k: v for k, v in params.items() if not _BLOCK_KEY.match(k)}
    out[_SCANNED_KEY] = jax.tree.map(lambda *xs: jnp.stack(xs), *(params[k] for _, k in blocks))
    return out


def scan_to_loop_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``encoder_blocks`` (leading axis L) -> ``encoder_block0 .. encoder_block{L-1}``.

    Accepts the ``params`` tree or a variables dict holding it under ``"params"``.
    """
    if _is_variables(params) and _SCANNED_KEY not in params:
        return {**params, "params": scan_to_loop_params(params["params"])}
    if _SCANNED_KEY not in params:
        raise ValueError("no encoder_blocks entry found; are these parameters already looped?")
    stacked = params[_SCANNED_KEY]
    num_layers = jax.tree.leaves(stacked)[0].shape[0]
    out = {k: v for k, v in params.items() if k != _SCANNED_KEY}
    for i in range(num_layers):
        out[f"encoder_block{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
    return out


# ---------------------------------------------------------------------------------------------
# Attention maps
# ---------------------------------------------------------------------------------------------


def collect_attention(intermediates: Mapping[str, Any]) -> jax.Array:
    """The sown attention weights of every block, ``(L, B, K, N+1, N+1)``, from the
    ``intermediates`` of ``model.apply(..., mutable=["intermediates"])`` (looped or scanned; the
    outer ``{"intermediates": ...}`` level may be included). Needs ``sow_attention=True``."""
    tree = intermediates.get("intermediates", intermediates)
    if _SCANNED_KEY in tree:
        return tree[_SCANNED_KEY]["attention"]["attention"][0]
    blocks = sorted((int(m.group(1)), k) for k in tree if (m := _BLOCK_KEY.match(k)))
    layers = [tree[k].get("attention", {}).get("attention") for _, k in blocks]
    if not layers or any(a is None for a in layers):
        raise ValueError("no attention weights found: create the model with sow_attention=True")
    return jnp.stack([a[0] for a in layers])


def attention_rollout(attentions: Any) -> jax.Array:
    """Attention rollout (Abnar & Zuidema, arXiv 2005.00928, section 3): ``(B, N+1, N+1)``.

    Per layer, average the heads, add the identity for the residual connection and renormalise the
    rows; then multiply the layers together, first layer rightmost. Row 0 of the result says how
    much each input token contributes to the class token's final state.

    ``attentions``: ``(L, B, K, N, N)``, a sequence of L ``(B, K, N, N)`` arrays, or the sown
    ``intermediates`` (see :func:`collect_attention`).
    """
    if isinstance(attentions, Mapping):
        attentions = collect_attention(attentions)
    elif isinstance(attentions, Sequence):
        attentions = jnp.stack(list(attentions))
    attentions = jnp.asarray(attentions, jnp.float32)
    if attentions.ndim != 5:
        raise ValueError(f"expected (L, B, K, N, N) attention weights, got {attentions.shape}")
    num_tokens = attentions.shape[-1]
    mixed = attentions.mean(axis=2) + jnp.eye(num_tokens)  # (L, B, N, N)
    mixed = mixed / mixed.sum(axis=-1, keepdims=True)
    rollout = mixed[0]
    for layer in mixed[1:]:
        rollout = layer @ rollout  # (B, N, N)
    return rollout


# ---------------------------------------------------------------------------------------------
# Registered variants: one register_model(name, ...)(partial(VisionTransformer, **config)) per row.
# ---------------------------------------------------------------------------------------------

# timm's AugReg checkpoints (vit_*_patch*_224.augreg*): mean/std 0.5, crop_pct 0.9, bicubic.
AUGREG_PREPROCESSING = Preprocessing(
    mean=INCEPTION_MEAN, std=INCEPTION_STD, crop_fraction=0.9, interpolation="bicubic"
)
# torchvision's ViT_H_14 transforms at 224: resize 224 then centre-crop 224, ImageNet statistics.
TORCHVISION_H14_PREPROCESSING = Preprocessing(crop_fraction=1.0, interpolation="bicubic")


# name -> (row of VARIANTS, evaluation preprocessing, description)
REGISTERED: dict[str, tuple[str, Preprocessing, str]] = {
    "vit_ti16": (
        "ti16",
        AUGREG_PREPROCESSING,
        "ViT-Ti/16: 192 wide, 12 blocks, 3 heads (DeiT / AugReg)",
    ),
    "vit_s16": (
        "s16",
        AUGREG_PREPROCESSING,
        "ViT-S/16: 384 wide, 12 blocks, 6 heads (DeiT / AugReg)",
    ),
    "vit_b16": (
        "b16",
        AUGREG_PREPROCESSING,
        "ViT-B/16: 768 wide, 12 blocks, 12 heads (ViT paper Table 1)",
    ),
    "vit_b32": (
        "b32",
        AUGREG_PREPROCESSING,
        "ViT-B/32: 768 wide, 12 blocks, 12 heads, 32 px patches (ViT paper Table 1)",
    ),
    "vit_l16": (
        "l16",
        AUGREG_PREPROCESSING,
        "ViT-L/16: 1024 wide, 24 blocks, 16 heads (ViT paper Table 1)",
    ),
    "vit_h14": (
        "h14",
        TORCHVISION_H14_PREPROCESSING,
        "ViT-H/14: 1280 wide, 32 blocks, 16 heads (ViT paper Table 1; torchvision)",
    ),
}

for _name, (_variant, _preprocessing, _description) in REGISTERED.items():
    register_model(
        _name,
        family="vit",
        resolution=224,
        preprocessing=_preprocessing,
        description=_description,
    )(functools.partial(VisionTransformer, **dataclasses.asdict(VARIANTS[_variant])))
