"""Point-cloud grouping (Point-MAE): FPS, kNN, gather, group_points and the Chamfer distance
against NumPy loops written here, by hand, under jit and over random sizes."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvision.ops.points import (
    chamfer_distance,
    farthest_point_sample,
    gather,
    group_points,
    knn_indices,
)

# ----------------------------------------------------------------------------------------------
# Independent references: explicit loops, float64.
# ----------------------------------------------------------------------------------------------


def _fps_ref(cloud, m):
    """Farthest point sampling of one cloud (N, 3), written out point by point."""
    cloud = np.asarray(cloud, np.float64)
    chosen = [0]
    nearest = [np.inf] * len(cloud)
    for _ in range(1, m):
        last = cloud[chosen[-1]]
        for j, p in enumerate(cloud):
            nearest[j] = min(nearest[j], float(np.sum((p - last) ** 2)))
        chosen.append(int(np.argmax(nearest)))
    return chosen


def _knn_ref(query, cloud, k):
    d = np.sum((np.asarray(cloud, np.float64) - np.asarray(query, np.float64)) ** 2, axis=-1)
    return np.argsort(d, kind="stable")[:k]


def _chamfer_ref(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a_to_b = np.mean([min(np.sum((p - q) ** 2) for q in b) for p in a])
    b_to_a = np.mean([min(np.sum((p - q) ** 2) for p in a) for q in b])
    return a_to_b + b_to_a


def _cloud(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Farthest point sampling
# ----------------------------------------------------------------------------------------------


def test_fps_by_hand():
    # On a line: start at 0.0, then the far end 10.0, then 4.5 (4.5 from its nearest centre),
    # then 2.0 (2 from 0.0; 1.0 and 9.0 are only 1 away from theirs).
    xs = [0.0, 1.0, 2.0, 4.5, 9.0, 10.0]
    cloud = np.array([[[x, 0.0, 0.0] for x in xs]], np.float32)
    np.testing.assert_array_equal(farthest_point_sample(cloud, 4), [[0, 5, 3, 2]])
    # Start index is 0 even when another point would be "more extreme".
    assert int(farthest_point_sample(cloud[:, ::-1], 1)[0, 0]) == 0


def test_fps_equals_numpy_loop_and_is_distinct():
    clouds = _cloud((3, 200, 3), seed=1)
    ours = farthest_point_sample(clouds, 32)
    assert ours.shape == (3, 32) and ours.dtype == jnp.int32
    for b in range(3):
        assert list(np.asarray(ours[b])) == _fps_ref(clouds[b], 32)
        assert len(set(np.asarray(ours[b]).tolist())) == 32
    # All N of N: a permutation.
    full = np.asarray(farthest_point_sample(clouds[:, :20], 20))
    for row in full:
        assert sorted(row.tolist()) == list(range(20))


def test_fps_jit_equals_eager():
    clouds = _cloud((2, 100, 3), seed=2)
    fn = jax.jit(farthest_point_sample, static_argnums=1)
    np.testing.assert_array_equal(fn(clouds, 16), farthest_point_sample(clouds, 16))


# ----------------------------------------------------------------------------------------------
# kNN and gather
# ----------------------------------------------------------------------------------------------


def test_knn_equals_brute_force_argsort():
    points = _cloud((2, 150, 3), seed=3)
    queries = _cloud((2, 20, 3), seed=4)
    ours = np.asarray(knn_indices(queries, points, 7))
    assert ours.shape == (2, 20, 7) and ours.dtype == np.int32
    for b in range(2):
        for m in range(20):
            np.testing.assert_array_equal(ours[b, m], _knn_ref(queries[b, m], points[b], 7))


def test_knn_of_a_member_starts_with_itself():
    points = _cloud((1, 50, 3), seed=5)
    idx = np.asarray(knn_indices(points[:, [4, 17, 30]], points, 3))
    np.testing.assert_array_equal(idx[0, :, 0], [4, 17, 30])


def test_gather_any_index_shape():
    points = _cloud((2, 10, 5), seed=6)  # any channel count
    indices = np.random.default_rng(7).integers(0, 10, (2, 3, 4))
    out = np.asarray(gather(points, indices))
    assert out.shape == (2, 3, 4, 5)
    for b in range(2):
        np.testing.assert_array_equal(out[b], points[b][indices[b]])
    np.testing.assert_array_equal(
        gather(points, np.array([[9], [0]])), points[[0, 1], [9, 0], None]
    )


# ----------------------------------------------------------------------------------------------
# Grouping
# ----------------------------------------------------------------------------------------------


def test_group_points_is_fps_centres_and_relative_neighbourhoods():
    clouds = _cloud((2, 128, 3), seed=8)
    centres, hoods = group_points(clouds, 8, 12)
    assert centres.shape == (2, 8, 3) and hoods.shape == (2, 8, 12, 3)
    centres, hoods = np.asarray(centres), np.asarray(hoods)
    for b in range(2):
        fps = _fps_ref(clouds[b], 8)
        np.testing.assert_array_equal(centres[b], clouds[b][fps])
        for g in range(8):
            nbrs = _knn_ref(centres[b, g], clouds[b], 12)
            np.testing.assert_allclose(hoods[b, g], clouds[b][nbrs] - centres[b, g], atol=1e-6)
    np.testing.assert_array_equal(hoods[:, :, 0], 0)  # each centre is its own nearest point
    # Relative coordinates: the neighbourhoods do not move with the cloud.
    _, moved = group_points(clouds + np.float32(5.0), 8, 12)
    np.testing.assert_allclose(moved, hoods, atol=1e-5)


def test_group_points_under_jit_and_gradients():
    clouds = _cloud((2, 64, 3), seed=9)
    fn = jax.jit(group_points, static_argnums=(1, 2))
    for ours, eager in zip(fn(clouds, 4, 8), group_points(clouds, 4, 8), strict=True):
        np.testing.assert_allclose(ours, eager, atol=1e-6)
    # The coordinates are differentiable (the index choice is not): d sum(hoods) / d points is
    # +1 per use as a neighbour and -K per use as a centre.
    grad = np.asarray(jax.grad(lambda p: jnp.sum(group_points(p, 4, 8)[1]))(clouds))
    assert np.all(np.isfinite(grad)) and np.allclose(grad.sum(axis=(1, 2)), 0, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Chamfer distance
# ----------------------------------------------------------------------------------------------


def test_chamfer_by_hand():
    a = np.array([[0.0, 0, 0], [1, 0, 0]], np.float32)
    b = np.array([[0.0, 0, 0], [0, 2, 0], [0, 0, 3]], np.float32)
    # a -> b: 0 and 1 -> mean 0.5. b -> a: 0, 4, 9 -> mean 13/3.
    assert float(chamfer_distance(a, b)) == pytest.approx(0.5 + 13 / 3, rel=1e-6)


def test_chamfer_zero_on_same_set_symmetric_and_equal_to_numpy():
    rng = np.random.default_rng(10)
    a, b = _cloud((3, 40, 3), seed=11), _cloud((3, 25, 3), seed=12)
    np.testing.assert_allclose(chamfer_distance(a, a), 0, atol=1e-7)
    np.testing.assert_allclose(chamfer_distance(a, a[:, rng.permutation(40)]), 0, atol=1e-7)
    ab, ba = np.asarray(chamfer_distance(a, b)), np.asarray(chamfer_distance(b, a))
    assert ab.shape == (3,)
    np.testing.assert_allclose(ab, ba, rtol=1e-6)
    np.testing.assert_allclose(ab, [_chamfer_ref(a[i], b[i]) for i in range(3)], rtol=1e-5)
    # Leading dimensions broadcast; Point-MAE's loss is the batch mean.
    one = np.asarray(chamfer_distance(a, b[0]))
    np.testing.assert_allclose(one, [_chamfer_ref(a[i], b[0]) for i in range(3)], rtol=1e-5)
    jitted = jax.jit(chamfer_distance)(a, b)
    np.testing.assert_allclose(jitted, ab, rtol=1e-6)


def test_chamfer_gradient_pulls_points_together():
    a, b = _cloud((1, 30, 3), seed=13), _cloud((1, 30, 3), seed=14)
    loss = lambda x: jnp.sum(chamfer_distance(x, b))
    grad = jax.grad(loss)(a)
    assert float(loss(a - 0.1 * grad)) < float(loss(a))


# ----------------------------------------------------------------------------------------------
# Random small sizes
# ----------------------------------------------------------------------------------------------


@settings(max_examples=8)  # every example compiles FPS and kNN for its shapes
@given(
    batch=st.integers(1, 3),
    n=st.integers(1, 40),
    frac_m=st.floats(0, 1),
    frac_k=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_random_sizes_against_references(batch, n, frac_m, frac_k, seed):
    m, k = 1 + int(frac_m * (n - 1)), 1 + int(frac_k * (n - 1))
    points = _cloud((batch, n, 3), seed=seed)
    fps = np.asarray(farthest_point_sample(points, m))
    knn = np.asarray(knn_indices(points[:, :m], points, k))
    q = 1 + seed % 7
    other = _cloud((batch, q, 3), seed=seed + 1)
    cd = np.asarray(chamfer_distance(points, other))
    for b in range(batch):
        assert fps[b].tolist() == _fps_ref(points[b], m)
        assert len(set(fps[b].tolist())) == m
        for i in range(m):
            np.testing.assert_array_equal(knn[b, i], _knn_ref(points[b, i], points[b], k))
        assert cd[b] == pytest.approx(_chamfer_ref(points[b], other[b]), rel=1e-5, abs=1e-7)


# ----------------------------------------------------------------------------------------------
# Bad arguments
# ----------------------------------------------------------------------------------------------


def test_bad_arguments_are_named():
    pts = _cloud((2, 10, 3))
    cases = [
        (functools.partial(farthest_point_sample, pts, 11), "num_samples=11 of 10"),
        (functools.partial(farthest_point_sample, pts, 0), "num_samples must be >= 1"),
        (functools.partial(farthest_point_sample, pts, 2.0), "num_samples must be an int"),
        (functools.partial(farthest_point_sample, pts[..., :2], 2), r"\(B, N, 3\)"),
        (functools.partial(farthest_point_sample, pts[0], 2), r"\(B, N, 3\)"),
        (functools.partial(farthest_point_sample, pts.astype(np.int32), 2), "floating"),
        (functools.partial(knn_indices, pts, pts, 11), "k=11"),
        (functools.partial(knn_indices, pts, pts, 0), "k must be >= 1"),
        (functools.partial(knn_indices, pts[..., :2], pts, 2), "queries"),
        (functools.partial(knn_indices, pts, pts[:1], 2), "batch sizes"),
        (functools.partial(gather, pts, np.zeros((3, 4), np.int32)), "B = 2"),
        (functools.partial(gather, pts, np.zeros((2, 4), np.float32)), "integers"),
        (functools.partial(gather, pts[0], np.zeros((2, 4), np.int32)), r"\(B, N, C\)"),
        (functools.partial(group_points, pts, 11, 2), "num_groups=11"),
        (functools.partial(group_points, pts, 2, 11), "group_size=11"),
        (functools.partial(chamfer_distance, pts, pts[..., :2]), r"\(\.\.\., P, 3\)"),
        (functools.partial(chamfer_distance, pts, pts[:, :0]), "empty"),
        (functools.partial(chamfer_distance, pts, _cloud((3, 10, 3))), "broadcast"),
    ]
    for fn, message in cases:
        with pytest.raises(ValueError, match=message):
            fn()
