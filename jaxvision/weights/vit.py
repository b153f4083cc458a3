"""Vision Transformer weights from timm and torchvision checkpoints.

Both references store the same parameters under different names (and both lay out the fused
query/key/value projection as ``[query | key | value]``, head-major, like ``attention/qkv`` here):

===================  ==================  =============================================
jaxvision            timm                torchvision
===================  ==================  =============================================
patch_embed          patch_embed.proj    conv_proj
class_token          cls_token           class_token
pos_embed            pos_embed           encoder.pos_embedding
encoder_block{i}     blocks.{i}          encoder.layers.encoder_layer_{i}
  attention_norm     norm1               ln_1
  attention/qkv      attn.qkv            self_attention.in_proj_weight, in_proj_bias
  attention/output   attn.proj           self_attention.out_proj
  mlp_norm           norm2               ln_2
  mlp/fc1            mlp.fc1             mlp.0 (torchvision < 0.13: mlp.linear_1)
  mlp/fc2            mlp.fc2             mlp.3 (torchvision < 0.13: mlp.linear_2)
encoder_norm         norm                encoder.ln
head                 head                heads.head
===================  ==================  =============================================

Every key is shape-checked against the configuration of the requested model before anything is
converted, so a wrong checkpoint fails with the reference's own key names. The number of classes
is read from the head. When the checkpoint's patch grid differs from the requested
``image_size``, the position embedding is resized the way the reference itself does it when it
loads a checkpoint into a model of another size: timm's ``checkpoint_filter_fn`` (bicubic,
antialiased, ``align_corners=False``) and torchvision's ``interpolate_embeddings`` (bicubic,
``align_corners=True``). ``scan_blocks=True`` stacks the blocks into the scanned layout.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from jaxvision.layers.pos_embed import resize_pos_embed
from jaxvision.models.vit import VisionTransformer, loop_to_scan_params
from jaxvision.registry import create_model
from jaxvision.weights import register_converter
from jaxvision.weights.common import StateDictReader, WeightConversionError, nest

# How each kind of tensor changes layout from PyTorch to Flax.
_COPY, _LINEAR, _CONV = "copy", "linear", "conv"

# Expected PyTorch shapes use these placeholders for what the checkpoint decides.
_CLASSES, _TOKENS = "num_classes", "tokens"


def _model_config(name: str, overrides: dict[str, Any]) -> VisionTransformer:
    config = {k: v for k, v in overrides.items() if k != "num_classes"}
    model = create_model(name, num_classes=1, **config)
    if not isinstance(model, VisionTransformer):
        raise WeightConversionError(f"{name} is not a VisionTransformer")
    return model


def _block_names(source: str, i: int, reader: StateDictReader) -> dict[str, str]:
    """Flax sub-path -> reference key prefix for encoder block ``i``."""
    if source == "timm":
        p = f"blocks.{i}"
        return {
            "attention_norm": f"{p}.norm1",
            "attention/qkv": f"{p}.attn.qkv",
            "attention/output": f"{p}.attn.proj",
            "mlp_norm": f"{p}.norm2",
            "mlp/fc1": f"{p}.mlp.fc1",
            "mlp/fc2": f"{p}.mlp.fc2",
        }
    p = f"encoder.layers.encoder_layer_{i}"
    # torchvision < 0.13 named the MLP layers linear_1 / linear_2.
    legacy = f"{p}.mlp.linear_1.weight" in reader
    return {
        "attention_norm": f"{p}.ln_1",
        "attention/qkv": f"{p}.self_attention.in_proj_",
        "attention/output": f"{p}.self_attention.out_proj",
        "mlp_norm": f"{p}.ln_2",
        "mlp/fc1": f"{p}.mlp.linear_1" if legacy else f"{p}.mlp.0",
        "mlp/fc2": f"{p}.mlp.linear_2" if legacy else f"{p}.mlp.3",
    }


def _spec(
    source: str, model: VisionTransformer, reader: StateDictReader
) -> dict[str, tuple[str, tuple[Any, ...], str]]:
    """Reference key -> (flax path, expected PyTorch shape, layout kind)."""
    d, m, p = model.hidden_size, model.mlp_dim, model.patch_size
    if source == "timm":
        patch, cls, pos, norm, head = "patch_embed.proj", "cls_token", "pos_embed", "norm", "head"
    else:
        patch, cls, pos = "conv_proj", "class_token", "encoder.pos_embedding"
        norm, head = "encoder.ln", "heads.head"
    spec: dict[str, tuple[str, tuple[Any, ...], str]] = {
        f"{patch}.weight": ("patch_embed/kernel", (d, 3, p, p), _CONV),
        f"{patch}.bias": ("patch_embed/bias", (d,), _COPY),
        cls: ("class_token", (1, 1, d), _COPY),
        pos: ("pos_embed/embedding", (1, _TOKENS, d), _COPY),
        f"{norm}.weight": ("encoder_norm/scale", (d,), _COPY),
        f"{norm}.bias": ("encoder_norm/bias", (d,), _COPY),
        f"{head}.weight": ("head/kernel", (_CLASSES, d), _LINEAR),
        f"{head}.bias": ("head/bias", (_CLASSES,), _COPY),
    }
    shapes = {
        "attention_norm": ((d,), (d,)),
        "attention/qkv": ((3 * d, d), (3 * d,)),
        "attention/output": ((d, d), (d,)),
        "mlp_norm": ((d,), (d,)),
        "mlp/fc1": ((m, d), (m,)),
        "mlp/fc2": ((d, m), (d,)),
    }
    for i in range(model.num_layers):
        for sub, prefix in _block_names(source, i, reader).items():
            is_norm = sub.endswith("norm")
            weight, bias = ("scale", "bias") if is_norm else ("kernel", "bias")
            # torchvision's fused projection is named in_proj_weight / in_proj_bias.
            sep = "" if prefix.endswith("_") else "."
            weight_shape, bias_shape = shapes[sub]
            spec[f"{prefix}{sep}weight"] = (
                f"encoder_block{i}/{sub}/{weight}",
                weight_shape,
                _COPY if is_norm else _LINEAR,
            )
            spec[f"{prefix}{sep}bias"] = (f"encoder_block{i}/{sub}/{bias}", bias_shape, _COPY)
    return spec


def _convert(source: str, name: str, reader: StateDictReader, overrides: dict[str, Any]):
    model = _model_config(name, overrides)
    spec = _spec(source, model, reader)
    head_key = next(k for k, (path, _, _) in spec.items() if path == "head/kernel")
    pos_key = next(k for k, (path, _, _) in spec.items() if path == "pos_embed/embedding")

    missing = [k for k in spec if k not in reader]
    unexpected = [k for k in reader.keys() if k not in spec]
    arrays = {k: reader.get(k) for k in spec if k in reader}
    num_classes = arrays[head_key].shape[0] if head_key in arrays else None
    misshaped = []
    for key, array in arrays.items():
        want = tuple(num_classes if s == _CLASSES else s for s in spec[key][1])
        got = array.shape
        fits = len(got) == len(want) and all(
            w == _TOKENS or g == w for g, w in zip(got, want, strict=True)
        )
        if key == pos_key and fits:
            grid = math.isqrt(max(got[1] - 1, 0))
            fits = grid >= 1 and grid * grid + 1 == got[1]
            want = (1, "1 + grid^2", want[2])
        if not fits:
            misshaped.append(f"{key}: got {got}, expected {want}")
    if missing or unexpected or misshaped:
        listing = [
            (f"missing keys ({len(missing)})", missing),
            (f"unexpected keys ({len(unexpected)})", unexpected),
            (f"mis-shaped keys ({len(misshaped)})", misshaped),
        ]
        raise WeightConversionError(
            f"the {source} state dict does not fit {name}:\n"
            + "".join(f"{title}: {', '.join(keys)}\n" for title, keys in listing if keys)
        )

    flat: dict[str, np.ndarray] = {}
    for key, (path, _, kind) in spec.items():
        array = arrays[key]
        if kind == _CONV:
            array = array.transpose(2, 3, 1, 0)  # (D, C, p, p) -> (p, p, C, D)
        elif kind == _LINEAR:
            array = array.T  # (out, in) -> (in, out)
        flat[path] = np.ascontiguousarray(array)

    pos_embed = flat["pos_embed/embedding"]
    if pos_embed.shape[1] != model.grid_size**2 + 1:
        flat["pos_embed/embedding"] = resize_pos_embed(
            pos_embed,
            model.grid_size,
            num_prefix_tokens=1,
            align_corners=source == "torchvision",
            antialias=source == "timm",
        )

    params = nest(flat)
    if model.scan_blocks:
        params = loop_to_scan_params(params)
    return {"params": params}, {"num_classes": int(num_classes)}


@register_converter("vit", "timm")
def convert_timm(name: str, reader: StateDictReader, **overrides: Any):
    """timm ``VisionTransformer`` (``vit_*_patch*_*``, class-token pooling, no layer scale)."""
    return _convert("timm", name, reader, overrides)


@register_converter("vit", "torchvision")
def convert_torchvision(name: str, reader: StateDictReader, **overrides: Any):
    """torchvision ``VisionTransformer`` (``vit_b_16`` ... ``vit_h_14``, no pre-logits layer)."""
    return _convert("torchvision", name, reader, overrides)
