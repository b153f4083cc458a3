"""The pure train/eval steps, losses, metrics, optimizers and state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision import create_model
from jaxvision.tasks import ClassificationTask, summarize
from jaxvision.tasks.classification import cross_entropy, topk_correct
from jaxvision.train import (
    create_train_state,
    make_optimizer,
    steps,
    warmup_cosine_schedule,
    weight_decay_mask,
)

TASK = ClassificationTask(num_classes=10, image_size=16)
train_step = functools.partial(steps.train_step, task=TASK)


def eval_step(state, batch, **kw):
    return steps.eval_step(state, batch, task=TASK, **kw)[0]


def _state(tiny, *, lr=0.05, ema=0.0, seed=0, dtype=None, opt="sgd"):
    kw = {"dtype": dtype} if dtype is not None else {}
    model = create_model(tiny, num_classes=10, **kw)
    tx = make_optimizer(opt, lr, weight_decay=1e-4)
    inputs = TASK.model_inputs(TASK.example_batch(1))
    return create_train_state(model, tx, rng=jax.random.key(seed), inputs=inputs, ema_decay=ema)


def _batch(n=16, seed=1):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "image": jax.random.normal(k1, (n, 16, 16, 3)),
        "label": jax.random.randint(k2, (n,), 0, 10),
        "mask": jnp.ones(n),
    }


def _loss(metrics):
    total, count = metrics["loss"]
    return float(total / count)


def test_train_step_lowers_loss_on_a_fixed_batch(tiny):
    state, batch = _state(tiny), _batch()
    step = jax.jit(train_step, donate_argnums=0)
    before = _loss(eval_step(state, batch))
    for _ in range(30):
        state, _ = step(state, batch, jax.random.key(0))
    after = _loss(eval_step(state, batch))
    assert after < 0.8 * before


def test_batch_stats_change_in_train_step_not_in_eval_step(tiny):
    state, batch = _state(tiny), _batch()
    stats0 = jax.tree.map(np.asarray, state.batch_stats)
    eval_step(state, batch)
    assert jax.tree.all(
        jax.tree.map(np.array_equal, stats0, jax.tree.map(np.asarray, state.batch_stats))
    )
    new, _ = train_step(state, batch, jax.random.key(0))
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats0, new.batch_stats)
    assert all(jax.tree.leaves(changed))


def test_eval_is_deterministic(tiny):
    state, batch = _state(tiny), _batch()
    a, b = eval_step(state, batch), eval_step(state, batch)
    assert jax.tree.all(jax.tree.map(lambda x, y: bool(x == y), a, b))


def test_train_step_compiles_once_for_repeated_shapes(tiny):
    state = _state(tiny)
    # A fresh callable, so compilations by other tests (which share train_step's cache) don't count.
    step = jax.jit(functools.partial(steps.train_step, task=TASK), donate_argnums=0)
    for i in range(4):
        state, _ = step(state, _batch(seed=i), jax.random.key(0))
    assert step._cache_size() == 1


def test_same_seed_same_result_and_rng_streams_matter(tiny):
    def run(seed, rng):
        state = _state(tiny, seed=seed)
        for i in range(3):
            state, _ = train_step(state, _batch(seed=i), jax.random.key(rng))
        return jax.tree.leaves(state.params)

    a, b, c = run(0, 0), run(0, 0), run(0, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))  # dropout keys differ


def test_masked_examples_do_not_affect_the_update(tiny):
    state = _state(tiny)
    batch = _batch(8)
    garbage = {
        "image": jnp.concatenate([batch["image"], 100 * jnp.ones((8, 16, 16, 3))]),
        "label": jnp.concatenate([batch["label"], jnp.zeros(8, jnp.int32)]),
        "mask": jnp.concatenate([jnp.ones(8), jnp.zeros(8)]),
    }
    m_small = eval_step(state, batch)
    m_padded = eval_step(state, garbage)
    for k in ("loss", "top1", "top5"):
        np.testing.assert_allclose(m_small[k], m_padded[k], rtol=1e-5)


def test_topk_against_a_hand_computed_case():
    logits = jnp.array(
        [
            [0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # order: 3, 1, 5, 2, 0, 4
            [2.0, 1.0, 0.0, -1.0, -2.0, -3.0],  # order: 0, 1, 2, 3, 4, 5
            [0.0, 0.0, 1.0, 0.0, 0.0, 0.0],
        ]
    )
    labels = jnp.array([1, 5, 2])
    np.testing.assert_array_equal(topk_correct(logits, labels, 1), [0, 0, 1])
    np.testing.assert_array_equal(topk_correct(logits, labels, 2), [1, 0, 1])
    np.testing.assert_array_equal(topk_correct(logits, labels, 5), [1, 0, 1])
    # k is capped at the number of classes: top-10 of 6 classes is always right.
    np.testing.assert_array_equal(topk_correct(logits, labels, 10), [1, 1, 1])


def test_cross_entropy_with_label_smoothing_by_hand():
    logits = jnp.array([[1.0, 2.0, 3.0]])
    p = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    target = np.array([0.1 / 3, 0.1 / 3, 0.9 + 0.1 / 3])
    expected = -(target * np.log(p)).sum()
    np.testing.assert_allclose(
        cross_entropy(logits, jnp.array([2]), label_smoothing=0.1), [expected], rtol=1e-6
    )
    np.testing.assert_allclose(cross_entropy(logits, jnp.array([0])), [-np.log(p[0])], rtol=1e-6)


def test_summarize_metric_pairs():
    a = {"loss": (2.0, 2.0), "top1": (1.0, 2.0)}
    b = {"loss": (1.0, 1.0), "top1": (1.0, 1.0)}
    both = jax.tree.map(lambda x, y: x + y, a, b)
    assert summarize(both) == {"loss": 1.0, "top1": 2 / 3}
    with pytest.raises(ValueError, match="no examples"):
        summarize({"loss": (0.0, 0.0)})


def test_weight_decay_skips_biases_and_norm_scales(tiny):
    state = _state(tiny)
    mask = weight_decay_mask(state.params)
    assert mask["stem"]["kernel"] and mask["head"]["kernel"]
    assert not mask["head"]["bias"]
    assert not mask["bn"]["scale"] and not mask["bn"]["bias"]


@pytest.mark.parametrize("name", ["sgd", "adamw", "rmsprop"])
def test_every_optimizer_trains(tiny, name):
    state, batch = _state(tiny, opt=name, lr=0.01), _batch()
    before = _loss(eval_step(state, batch))
    step = jax.jit(train_step)
    for _ in range(15):
        state, _ = step(state, batch, jax.random.key(0))
    assert _loss(eval_step(state, batch)) < before


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer("lamb", 0.1)


def test_gradient_clipping_bounds_the_update():
    params = {"w": jnp.zeros(3)}
    tx = make_optimizer("sgd", 1.0, momentum=0.0, clip_norm=1.0)
    updates, _ = tx.update({"w": jnp.array([30.0, 40.0, 0.0])}, tx.init(params), params)
    np.testing.assert_allclose(optax.tree.norm(updates), 1.0, rtol=1e-6)


def test_warmup_cosine_schedule():
    sched = warmup_cosine_schedule(1.0, total_steps=100, warmup_steps=10)
    assert float(sched(0)) == 0.0
    np.testing.assert_allclose(sched(5), 0.5, rtol=1e-6)
    np.testing.assert_allclose(sched(10), 1.0, rtol=1e-6)
    np.testing.assert_allclose(sched(55), 0.5, rtol=1e-5)  # half-way through the cosine
    np.testing.assert_allclose(sched(100), 0.0, atol=1e-7)
    assert all(float(sched(i)) >= float(sched(i + 1)) for i in range(10, 100))


def test_ema_tracks_the_parameters(tiny):
    state, batch = _state(tiny, ema=0.5), _batch()
    p0 = jax.tree.map(np.asarray, state.params)
    new, _ = train_step(state, batch, jax.random.key(0))
    expected = jax.tree.map(lambda e, p: 0.5 * e + 0.5 * p, p0, new.params)
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(new.ema_params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    m = eval_step(new, batch, use_ema=True)
    assert np.isfinite(float(m["loss"][0]))


def test_bfloat16_compute_keeps_float32_parameters_and_loss(tiny):
    state, batch = _state(tiny, dtype=jnp.bfloat16), _batch()
    new, metrics = jax.jit(train_step)(state, batch, jax.random.key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new.params))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(new.batch_stats))
    assert metrics["loss"][0].dtype == jnp.float32
    f32 = _state(tiny)
    np.testing.assert_allclose(
        _loss(metrics), _loss(jax.jit(train_step)(f32, batch, jax.random.key(0))[1]), rtol=0.05
    )


def test_label_smoothing_is_passed_through(tiny):
    state, batch = _state(tiny), _batch()
    _, plain = train_step(state, batch, jax.random.key(0))
    smoothing = ClassificationTask(num_classes=10, image_size=16, label_smoothing=0.3)
    _, smooth = jax.jit(functools.partial(steps.train_step, task=smoothing))(
        state, batch, jax.random.key(0)
    )
    assert not np.isclose(float(plain["loss"][0]), float(smooth["loss"][0]))
