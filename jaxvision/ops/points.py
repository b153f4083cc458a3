"""Point clouds: farthest point sampling, k nearest neighbours, grouping into local patches and
the Chamfer distance, in JAX - the tokeniser and the loss of Point-MAE (Pang et al., "Masked
Autoencoders for Point Cloud Self-supervised Learning", arXiv 2203.06604).

Point-MAE turns a cloud of N points into G *patches*, the point-cloud counterpart of ViT's image
patches (:func:`group_points`, its ``Group`` module):

1. **Centres by farthest point sampling** (:func:`farthest_point_sample`; Eldar et al. 1997, used
   by PointNet++, Qi et al., arXiv 1706.02413). Start from point 0; keep, for every point, its
   squared distance to the nearest centre chosen so far; the next centre is the point with the
   largest such distance (the first of them on a tie). G steps give G well-spread centres. This
   is ``pointnet2_ops.furthest_point_sample``, except that its CUDA kernel never picks a point
   within ``sqrt(1e-3)`` of the origin (``if (mag <= 1e-3) continue``); here every point can be
   picked. Already chosen points are at distance 0, so the G indices are distinct whenever the
   cloud has at least G distinct points.
2. **Neighbourhoods by kNN** (:func:`knn_indices`): each centre's K nearest points by squared
   Euclidean distance, nearest first (the centre itself is its own nearest point, at distance 0).
   Distances are computed as ``sum((q - p)^2)``, not ``|q|^2 + |p|^2 - 2 q.p``, so that near
   ties are ordered by the true distance.
3. **Normalisation**: each neighbourhood is expressed relative to its centre,
   ``p - c``; the centres themselves are embedded separately (positional embedding).

The reconstruction loss is the L2 **Chamfer distance** (:func:`chamfer_distance`, Fan et al.,
"A Point Set Generation Network", arXiv 1612.00603) between predicted and true patches::

    CD(A, B) = mean_{a in A} min_{b in B} |a - b|^2 + mean_{b in B} min_{a in A} |a - b|^2

Point-MAE's ``ChamferDistanceL2`` averages over the batch as well, i.e. it is
``chamfer_distance(a, b).mean()`` here.

Shapes: ``B`` batch, ``N`` points in a cloud, ``M`` sampled points, ``G`` groups, ``K`` points
per group, ``C`` channels (3 for coordinates). Indices are int32. Sizes (``num_samples``, ``k``,
...) are Python ints, static under ``jax.jit``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an int, not {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, not {value}")
    return int(value)


def _check_cloud(name: str, points: jax.Array, batched: bool = True) -> None:
    if batched and (points.ndim != 3 or points.shape[-1] != 3):
        raise ValueError(f"{name} must have shape (B, N, 3), got {points.shape}")
    if not batched and (points.ndim < 2 or points.shape[-1] != 3):
        raise ValueError(f"{name} must have shape (..., P, 3), got {points.shape}")
    if not jnp.issubdtype(points.dtype, jnp.floating):
        raise ValueError(f"{name} must be floating point, not {points.dtype}")


def _squared_distances(a: jax.Array, b: jax.Array) -> jax.Array:
    """``|a_i - b_j|^2`` of (..., P, 3) and (..., Q, 3) -> (..., P, Q)."""
    return jnp.sum((a[..., :, None, :] - b[..., None, :, :]) ** 2, axis=-1)


def farthest_point_sample(points: jax.Array, num_samples: int) -> jax.Array:
    """Indices (B, M) int32 of ``num_samples`` points of ``points`` (B, N, 3) chosen by farthest
    point sampling from index 0 (see the module docstring). Not differentiable (indices)."""
    points = jnp.asarray(points)
    _check_cloud("points", points)
    batch, n, _ = points.shape
    num_samples = _check_int("num_samples", num_samples, 1)
    if num_samples > n:
        raise ValueError(f"cannot sample num_samples={num_samples} of {n} points")
    return _farthest_point_sample(points, num_samples)


@functools.partial(jax.jit, static_argnums=1)
def _farthest_point_sample(points: jax.Array, num_samples: int) -> jax.Array:
    batch, n, _ = points.shape
    points = jax.lax.stop_gradient(points.astype(jnp.float32))

    def step(i, state):
        indices, nearest = state  # (B, M), (B, N) squared distance to the nearest centre
        last = jnp.take_along_axis(points, indices[:, i - 1, None, None], axis=1)  # (B, 1, 3)
        nearest = jnp.minimum(nearest, jnp.sum((points - last) ** 2, axis=-1))
        indices = indices.at[:, i].set(jnp.argmax(nearest, axis=-1).astype(jnp.int32))
        return indices, nearest

    indices = jnp.zeros((batch, num_samples), jnp.int32)
    nearest = jnp.full((batch, n), jnp.inf, jnp.float32)
    indices, _ = jax.lax.fori_loop(1, num_samples, step, (indices, nearest))
    return indices


def knn_indices(queries: jax.Array, points: jax.Array, k: int) -> jax.Array:
    """Indices (B, M, k) int32 of the ``k`` points of ``points`` (B, N, 3) nearest to each of
    ``queries`` (B, M, 3) by squared Euclidean distance, nearest first (equal distances: lower
    index first)."""
    queries, points = jnp.asarray(queries), jnp.asarray(points)
    _check_cloud("queries", queries)
    _check_cloud("points", points)
    if queries.shape[0] != points.shape[0]:
        raise ValueError(
            f"queries {queries.shape} and points {points.shape} have different batch sizes"
        )
    k = _check_int("k", k, 1)
    if k > points.shape[1]:
        raise ValueError(f"cannot take k={k} neighbours among {points.shape[1]} points")
    return _knn_indices(queries, points, k)


@functools.partial(jax.jit, static_argnums=2)
def _knn_indices(queries: jax.Array, points: jax.Array, k: int) -> jax.Array:
    distances = jax.lax.stop_gradient(_squared_distances(queries, points))  # (B, M, N)
    _, indices = jax.lax.top_k(-distances, k)
    return indices.astype(jnp.int32)


def gather(points: jax.Array, indices: jax.Array) -> jax.Array:
    """``points`` (B, N, C) at ``indices`` (B, ...) -> (B, ..., C): ``out[b, ...] =
    points[b, indices[b, ...]]``. Indices must lie in ``[0, N)`` (out-of-range ones are clamped,
    as JAX's indexing does). Differentiable in ``points``."""
    points, indices = jnp.asarray(points), jnp.asarray(indices)
    if points.ndim != 3:
        raise ValueError(f"points must have shape (B, N, C), got {points.shape}")
    if indices.ndim < 1 or indices.shape[0] != points.shape[0]:
        raise ValueError(
            f"indices must have shape (B, ...) with B = {points.shape[0]}, got {indices.shape}"
        )
    if not jnp.issubdtype(indices.dtype, jnp.integer):
        raise ValueError(f"indices must be integers, not {indices.dtype}")
    return _gather(points, indices)


@jax.jit
def _gather(points: jax.Array, indices: jax.Array) -> jax.Array:
    return jax.vmap(lambda p, i: p[i])(points, indices)


def group_points(
    points: jax.Array, num_groups: int, group_size: int
) -> tuple[jax.Array, jax.Array]:
    """Point-MAE's ``Group``: ``points`` (B, N, 3) -> ``(centres (B, G, 3), neighbourhoods
    (B, G, K, 3))``. Centres by :func:`farthest_point_sample`; each neighbourhood is the
    ``group_size`` points nearest its centre (:func:`knn_indices`, nearest first, so the first
    row is the centre itself, at 0), minus the centre. Differentiable in the coordinates
    (the choice of indices is not)."""
    points = jnp.asarray(points)
    _check_cloud("points", points)
    n = points.shape[1]
    num_groups = _check_int("num_groups", num_groups, 1)
    group_size = _check_int("group_size", group_size, 1)
    if num_groups > n or group_size > n:
        raise ValueError(
            f"num_groups={num_groups} and group_size={group_size} must be <= the {n} points"
        )
    return _group_points(points, num_groups, group_size)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _group_points(
    points: jax.Array, num_groups: int, group_size: int
) -> tuple[jax.Array, jax.Array]:
    centres = _gather(points, _farthest_point_sample(points, num_groups))  # (B, G, 3)
    neighbours = _gather(points, _knn_indices(centres, points, group_size))  # (B, G, K, 3)
    return centres, neighbours - centres[:, :, None, :]


def chamfer_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    """L2 Chamfer distance between the point sets ``a`` (..., P, 3) and ``b`` (..., Q, 3)
    -> (...): the mean over ``a`` of the squared distance to the nearest point of ``b``, plus the
    same from ``b`` to ``a``. Leading dimensions broadcast. Symmetric, 0 for equal sets (in any
    order), differentiable."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    _check_cloud("a", a, batched=False)
    _check_cloud("b", b, batched=False)
    if a.shape[-2] == 0 or b.shape[-2] == 0:
        raise ValueError(f"Chamfer distance of an empty set: a {a.shape}, b {b.shape}")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(
            f"leading dimensions of a {a.shape} and b {b.shape} do not broadcast"
        ) from None
    return _chamfer_distance(a, b)


@jax.jit
def _chamfer_distance(a: jax.Array, b: jax.Array) -> jax.Array:
    distances = _squared_distances(a, b)  # (..., P, Q)
    return jnp.mean(jnp.min(distances, axis=-1), axis=-1) + jnp.mean(
        jnp.min(distances, axis=-2), axis=-1
    )


__all__ = [
    "chamfer_distance",
    "farthest_point_sample",
    "gather",
    "group_points",
    "knn_indices",
]
