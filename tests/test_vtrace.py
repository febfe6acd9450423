"""V-trace against an independent float64 NumPy transcription of the paper's sum formula (equation 1)."""

import os
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from impala_tf import vtrace


def assert_close(actual, expected):
    # float32 computation against a float64 reference.
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)


def _clip(x, threshold):
    return x if threshold is None else np.minimum(threshold, x)


def reference_vtrace(
    log_rhos, discounts, rewards, values, bootstrap_value, rho_bar, pg_rho_bar, c_bar, lambda_=1.0
):
    """v_s = V(x_s) + Σ_{t=s}^{T-1} (Π_{i=s}^{t-1} γ_i c_i) δ_t V, summed term by term (no recursion)."""
    log_rhos, discounts, rewards, values, bootstrap_value = (
        np.asarray(x, np.float64) for x in (log_rhos, discounts, rewards, values, bootstrap_value)
    )
    num_steps = log_rhos.shape[0]
    rhos = np.exp(log_rhos)
    cs = lambda_ * _clip(rhos, c_bar)
    next_values = np.concatenate([values[1:], bootstrap_value[None]], axis=0)
    deltas = _clip(rhos, rho_bar) * (rewards + discounts * next_values - values)
    vs = np.empty_like(values)
    for s in range(num_steps):
        total = values[s].copy()
        for t in range(s, num_steps):
            trace = np.prod(discounts[s:t] * cs[s:t], axis=0)  # empty product (t == s) is 1
            total += trace * deltas[t]
        vs[s] = total
    next_vs = np.concatenate([vs[1:], bootstrap_value[None]], axis=0)
    pg_advantages = _clip(rhos, pg_rho_bar) * (rewards + discounts * next_vs - values)
    return vs, pg_advantages


def random_inputs(rng, num_steps, batch_size, episode_end_prob=0.2):
    shape = (num_steps, batch_size)
    episode_continues = (rng.uniform(size=shape) > episode_end_prob).astype(np.float32)
    return dict(
        log_rhos=rng.normal(scale=1.0, size=shape).astype(np.float32),
        discounts=(0.95 * episode_continues).astype(np.float32),
        rewards=rng.normal(size=shape).astype(np.float32),
        values=rng.normal(scale=2.0, size=shape).astype(np.float32),
        bootstrap_value=rng.normal(scale=2.0, size=(batch_size,)).astype(np.float32),
    )


SHAPES = [(1, 1), (1, 7), (6, 1), (5, 4), (20, 32)]
THRESHOLDS = [  # (rho_bar, pg_rho_bar, c_bar)
    (1.0, 1.0, 1.0),
    (0.5, 2.0, 1.0),
    (3.7, 0.3, 0.9),
    (None, None, None),
    (None, 1.0, 1.0),
]


@pytest.mark.parametrize("num_steps,batch_size", SHAPES)
@pytest.mark.parametrize("rho_bar,pg_rho_bar,c_bar", THRESHOLDS)
def test_matches_sum_formula_reference(num_steps, batch_size, rho_bar, pg_rho_bar, c_bar):
    case = (num_steps, batch_size, rho_bar, pg_rho_bar, c_bar)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    inputs = random_inputs(rng, num_steps, batch_size)
    expected_vs, expected_pg = reference_vtrace(**inputs, rho_bar=rho_bar, pg_rho_bar=pg_rho_bar, c_bar=c_bar)
    returns = vtrace.from_importance_weights(
        **inputs, clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar, clip_c_threshold=c_bar
    )
    assert returns.vs.shape == (num_steps, batch_size)
    assert returns.pg_advantages.shape == (num_steps, batch_size)
    assert_close(returns.vs, expected_vs)
    assert_close(returns.pg_advantages, expected_pg)


@pytest.mark.parametrize("lambda_", [0.0, 0.5, 0.95])
def test_lambda_scales_every_trace_as_in_the_sum_formula(lambda_):
    rng = np.random.default_rng(int(lambda_ * 100))
    inputs = random_inputs(rng, 20, 8)
    expected_vs, expected_pg = reference_vtrace(
        **inputs, rho_bar=1.0, pg_rho_bar=1.0, c_bar=1.0, lambda_=lambda_
    )
    returns = vtrace.from_importance_weights(**inputs, lambda_=lambda_)
    assert_close(returns.vs, expected_vs)
    assert_close(returns.pg_advantages, expected_pg)


def test_on_policy_lambda_targets_are_td_lambda_returns():
    """On-policy, v_s is the λ-return G_s = r_s + γ ((1 − λ) V(x_{s+1}) + λ G_{s+1}), G_T = V(x_T); λ = 0
    gives one-step TD targets r_s + γ V(x_{s+1})."""
    rng = np.random.default_rng(2)
    num_steps, batch_size, gamma = 9, 4, 0.9
    inputs = random_inputs(rng, num_steps, batch_size)
    inputs["log_rhos"] = np.zeros_like(inputs["log_rhos"])
    discounts = inputs["discounts"] = np.full((num_steps, batch_size), gamma, np.float32)
    rewards, values, bootstrap = inputs["rewards"], inputs["values"], inputs["bootstrap_value"]
    next_values = np.concatenate([values[1:], bootstrap[None]])
    for lambda_ in (0.0, 0.8):
        returns = vtrace.from_importance_weights(**inputs, lambda_=lambda_)
        expected = np.empty((num_steps, batch_size))
        following = bootstrap.astype(np.float64)
        for s in reversed(range(num_steps)):
            following = rewards[s] + discounts[s] * ((1 - lambda_) * next_values[s] + lambda_ * following)
            expected[s] = following
        assert_close(returns.vs, expected)
    assert_close(vtrace.from_importance_weights(**inputs, lambda_=0.0).vs, rewards + discounts * next_values)


def test_lambda_outside_unit_interval_is_rejected():
    inputs = random_inputs(np.random.default_rng(3), 2, 2)
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="lambda_ must be in"):
            vtrace.from_importance_weights(**inputs, lambda_=bad)


def test_reference_covers_clipped_and_unclipped_and_ended_episodes():
    inputs = random_inputs(np.random.default_rng(0), 20, 32)
    rhos = np.exp(inputs["log_rhos"])
    assert 0.2 < np.mean(rhos > 1.0) < 0.8
    assert 0.05 < np.mean(inputs["discounts"] == 0) < 0.4


def test_vs_equals_n_step_return_on_policy():
    rng = np.random.default_rng(1)
    num_steps, batch_size, gamma = 7, 3, 0.9
    rewards = rng.normal(size=(num_steps, batch_size)).astype(np.float32)
    values = rng.normal(size=(num_steps, batch_size)).astype(np.float32)
    bootstrap_value = rng.normal(size=(batch_size,)).astype(np.float32)
    returns = vtrace.from_importance_weights(
        log_rhos=np.zeros((num_steps, batch_size), np.float32),
        discounts=np.full((num_steps, batch_size), gamma, np.float32),
        rewards=rewards,
        values=values,
        bootstrap_value=bootstrap_value,
    )
    for s in range(num_steps):
        n_step_return = sum(gamma ** (t - s) * rewards[t] for t in range(s, num_steps))
        n_step_return = n_step_return + gamma ** (num_steps - s) * bootstrap_value
        assert_close(returns.vs[s], n_step_return)
    # On-policy the pg advantage is the (n - s)-step return minus the baseline.
    next_vs = np.concatenate([returns.vs[1:], bootstrap_value[None]])
    assert_close(returns.pg_advantages, rewards + gamma * next_vs - values)


def test_zero_discount_ends_the_return():
    num_steps, batch_size = 4, 1
    rewards = np.ones((num_steps, batch_size), np.float32)
    discounts = np.array([[1.0], [0.0], [1.0], [1.0]], np.float32)  # episode ends after step 1
    returns = vtrace.from_importance_weights(
        log_rhos=np.zeros((num_steps, batch_size), np.float32),
        discounts=discounts,
        rewards=rewards,
        values=np.zeros((num_steps, batch_size), np.float32),
        bootstrap_value=np.full((batch_size,), 100.0, np.float32),
    )
    assert_close(returns.vs[:, 0], [2.0, 1.0, 102.0, 101.0])


def test_zero_importance_weight_cuts_the_trace():
    rng = np.random.default_rng(2)
    inputs = random_inputs(rng, 6, 5, episode_end_prob=0.0)
    inputs["log_rhos"][3] = -1e9  # ρ = c = 0 at step 3
    returns = vtrace.from_importance_weights(**inputs)
    assert_close(returns.vs[3], inputs["values"][3])
    # Rewards from step 3 on cannot reach targets before it.
    inputs["rewards"][3:] += 50.0
    changed = vtrace.from_importance_weights(**inputs)
    assert_close(changed.vs[:3], returns.vs[:3])


def test_no_gradient_flows_through_vs_or_pg_advantages():
    inputs = {k: tf.constant(v) for k, v in random_inputs(np.random.default_rng(3), 5, 4).items()}
    with tf.GradientTape(persistent=True) as tape:
        for x in inputs.values():
            tape.watch(x)
        returns = vtrace.from_importance_weights(**inputs)
        vs_sum = tf.reduce_sum(returns.vs)
        pg_sum = tf.reduce_sum(returns.pg_advantages)
    for output in (vs_sum, pg_sum):
        gradients = tape.gradient(output, list(inputs.values()))
        assert all(g is None for g in gradients)


@pytest.mark.parametrize("num_steps,batch_size", [(1, 1), (20, 32)])
def test_runs_under_xla_and_tf_function_with_dynamic_shapes(num_steps, batch_size):
    inputs = random_inputs(np.random.default_rng(4), num_steps, batch_size)
    expected_vs, expected_pg = reference_vtrace(**inputs, rho_bar=1.0, pg_rho_bar=1.0, c_bar=1.0)
    matrix = tf.TensorSpec([None, None], tf.float32)
    dynamic = tf.function(
        vtrace.from_importance_weights,
        input_signature=[matrix, matrix, matrix, matrix, tf.TensorSpec([None], tf.float32)],
    )
    xla = tf.function(vtrace.from_importance_weights, jit_compile=True)
    for function in (dynamic, xla):
        returns = function(*inputs.values())
        assert_close(returns.vs, expected_vs)
        assert_close(returns.pg_advantages, expected_pg)


def test_from_logits_uses_log_policy_ratio_of_taken_actions():
    rng = np.random.default_rng(5)
    num_steps, batch_size, num_actions = 6, 3, 4
    inputs = random_inputs(rng, num_steps, batch_size)
    del inputs["log_rhos"]
    behaviour_logits = rng.normal(size=(num_steps, batch_size, num_actions)).astype(np.float32)
    target_logits = rng.normal(size=(num_steps, batch_size, num_actions)).astype(np.float32)
    actions = rng.integers(num_actions, size=(num_steps, batch_size)).astype(np.int32)

    def log_softmax(x):
        x = x.astype(np.float64)
        return x - np.log(np.sum(np.exp(x), axis=-1, keepdims=True))

    def taken(log_probs):
        return np.take_along_axis(log_probs, actions[..., None], axis=-1)[..., 0]

    expected_target = taken(log_softmax(target_logits))
    expected_behaviour = taken(log_softmax(behaviour_logits))
    expected_vs, expected_pg = reference_vtrace(
        expected_target - expected_behaviour, **inputs, rho_bar=1.0, pg_rho_bar=1.0, c_bar=1.0
    )
    for function in (vtrace.from_logits, tf.function(vtrace.from_logits, jit_compile=True)):
        returns = function(behaviour_logits, target_logits, actions, **inputs)
        assert_close(returns.target_action_log_probs, expected_target)
        assert_close(returns.behaviour_action_log_probs, expected_behaviour)
        assert_close(returns.log_rhos, expected_target - expected_behaviour)
        assert_close(returns.vs, expected_vs)
        assert_close(returns.pg_advantages, expected_pg)


def test_from_logits_keeps_gradient_of_target_log_probs_only():
    rng = np.random.default_rng(6)
    inputs = random_inputs(rng, 3, 2)
    del inputs["log_rhos"]
    target_logits = tf.constant(rng.normal(size=(3, 2, 5)).astype(np.float32))
    behaviour_logits = tf.constant(rng.normal(size=(3, 2, 5)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(target_logits)
        returns = vtrace.from_logits(behaviour_logits, target_logits, np.zeros((3, 2), np.int32), **inputs)
        log_prob_sum = tf.reduce_sum(returns.target_action_log_probs)
        vs_sum = tf.reduce_sum(returns.vs)
    gradient = tape.gradient(log_prob_sum, target_logits)
    assert gradient is not None and np.all(np.isfinite(gradient)) and np.any(gradient != 0)
    assert tape.gradient(vs_sum, target_logits) is None


@pytest.mark.parametrize("name", ["clip_rho_threshold", "clip_pg_rho_threshold", "clip_c_threshold"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_threshold_is_rejected(name, value):
    inputs = random_inputs(np.random.default_rng(7), 2, 2)
    with pytest.raises(ValueError, match=f"{name} must be a positive number or None"):
        vtrace.from_importance_weights(**inputs, **{name: value})
