"""Multi-head self-attention (Vaswani et al., arXiv 1706.03762; ViT, arXiv 2010.11929, eq. 5-8).

Every token is projected to a query, a key and a value; each of ``num_heads`` heads compares the
queries with the keys of its ``D / num_heads`` dimensions (scaled dot product), turns the scores
into weights with a softmax over the keys, and averages the values with them. The heads are
concatenated again and projected back to ``D``.

The three projections are one Dense layer ``qkv`` of shape (D, 3D), laid out as
``[query | key | value]``, each head-major - the layout of timm's ``attn.qkv`` and torchvision's
``in_proj_weight``, so their weights load without reshuffling.

Two implementations compute the same function (a test checks they agree):

* ``"explicit"``: the equations written out with einsum; the only one that can sow the attention
  weights (``sow_attention=True``) and apply attention dropout. When neither is asked for, the
  softmax's normalisation is applied after the weighted sum of the values (the same function,
  fewer divisions, no weight tensor);
* ``"fused"``: ``jax.nn.dot_product_attention``.

``"auto"`` follows the rule of :mod:`jaxvision.layers.implementation`: "fused" on GPU/TPU, where it
is a library kernel, "explicit" on CPU, where it was measured faster (benchmarks/README.md), and
"explicit" on every backend whenever the weights are needed (sown, or attention dropout in
training).

Shape legend: B batch, N tokens, D width, K heads, d = D / K head width.
"""

from __future__ import annotations

from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.layers.implementation import resolve_implementation

IMPLEMENTATIONS = ("auto", "explicit", "fused")

# Xavier-uniform projections and zero biases, as big_vision / Flax's MultiHeadDotProductAttention.
attention_kernel_init = nn.initializers.xavier_uniform()


class MultiHeadSelfAttention(nn.Module):
    """``(B, N, D) -> (B, N, D)``; parameters ``qkv`` (D, 3D) and ``output`` (D, D).

    ``sow_attention=True`` stores the softmax weights ``(B, K, N, N)`` in the ``intermediates``
    collection under ``attention``. ``drop_rate`` is the dropout after the output projection.

    ``mask`` (optional, boolean, broadcastable to ``(B, K, N, N)``, True = may attend) hides keys
    from queries: padding (``key_mask[:, None, None, :]``) or the future (a lower-triangular
    matrix). Every query must be allowed at least one key.
    """

    num_heads: int
    attention_drop_rate: float = 0.0
    drop_rate: float = 0.0
    dtype: Any = jnp.float32
    implementation: str = "auto"
    sow_attention: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
        implementation = resolve_implementation("attention", self.implementation, IMPLEMENTATIONS)
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads={self.num_heads}")
        head_width = width // self.num_heads
        needs_weights = self.sow_attention or (train and self.attention_drop_rate > 0.0)
        if needs_weights and self.implementation == "auto":
            implementation = "explicit"  # "fused" never materialises the weights
        if needs_weights and implementation == "fused":
            raise ValueError(
                "implementation='fused' computes no attention weights, so it can neither sow "
                "them nor apply attention dropout; use 'explicit' or 'auto'"
            )
        dense = lambda features, name: nn.Dense(
            features, dtype=self.dtype, kernel_init=attention_kernel_init, name=name
        )

        # Query, key and value projections, split into heads
        qkv = dense(3 * width, "qkv")(x)  # (B, N, D) -> (B, N, 3D)

        if implementation == "fused":
            query, key, value = einops.rearrange(
                qkv, "b n (three k d) -> three b n k d", three=3, k=self.num_heads
            )  # -> 3 x (B, N, K, d)
            attended = jax.nn.dot_product_attention(query, key, value, mask=mask)  # (B, N, K, d)
            attended = einops.rearrange(attended, "b n k d -> b n (k d)")  # -> (B, N, D)
        else:
            query, key, value = einops.rearrange(
                qkv, "b n (three k d) -> three b k n d", three=3, k=self.num_heads
            )  # -> 3 x (B, K, N, d)

            # Scaled dot product: scores of every query against every key, per head
            query = query * head_width**-0.5
            scores = jnp.einsum(
                "bkqd,bkmd->bkqm", query, key, preferred_element_type=jnp.float32
            )  # (B, K, N, N)

            # Softmax over the keys (those the mask allows), in float32 whatever the compute dtype
            scores = scores.astype(jnp.float32)
            if mask is not None:
                scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
            if needs_weights:
                weights = jax.nn.softmax(scores, axis=-1)
                if self.sow_attention:
                    self.sow("intermediates", "attention", weights)
                weights = nn.Dropout(self.attention_drop_rate, deterministic=not train)(weights)

                # Weighted average of the values
                attended = jnp.einsum("bkqm,bkmd->bkqd", weights.astype(value.dtype), value)
            else:
                # The same average with the softmax's division moved after the product: it then
                # divides B*K*N*d numbers instead of B*K*N*N, and the weights never exist as a
                # tensor (ViT-S forward 7.2 -> 4.8 ms; benchmarks/README.md, optimisation log)
                stable = scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
                unnormalised = jnp.exp(stable)  # (B, K, N, N), at most 1
                attended = jnp.einsum("bkqm,bkmd->bkqd", unnormalised.astype(value.dtype), value)
                total = unnormalised.sum(axis=-1, keepdims=True)  # (B, K, N, 1), at least 1
                attended = (attended / total).astype(value.dtype)
            attended = einops.rearrange(attended, "b k n d -> b n (k d)")  # heads -> (B, N, D)

        # Output projection
        y = dense(width, "output")(attended)  # (B, N, D) -> (B, N, D)
        return nn.Dropout(self.drop_rate, deterministic=not train)(y)
