"""A task's ``trainable`` marks: frozen parameters keep their values and get no optimizer state,
scaled ones move by the given fraction of the full update."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.errors import ConfigError
from jaxvision.train.loop import _partition


def test_frozen_scaled_and_full_parameters():
    params = {"a": jnp.ones(3), "b": jnp.ones(3), "c": jnp.ones(3)}
    grads = {"a": jnp.full(3, 2.0), "b": jnp.full(3, 2.0), "c": jnp.full(3, 2.0)}
    tx = _partition(optax.sgd(0.1), {"a": True, "b": 0.25, "c": False})
    state = tx.init(params)
    updates, _ = tx.update(grads, state, params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_allclose(new["a"], 1 - 0.1 * 2)
    np.testing.assert_allclose(new["b"], 1 - 0.25 * 0.1 * 2)
    np.testing.assert_array_equal(new["c"], params["c"])
    plain = optax.sgd(0.1)
    assert _partition(plain, None) is plain  # no marks: every parameter trains


def test_a_negative_factor_is_refused():
    with pytest.raises(ConfigError, match=">= 0"):
        _partition(optax.sgd(0.1), {"a": -1.0})
