"""The IMPALA loss: reward clipping, config checks, loss terms, off-policy corrections, masking, PopArt."""

import itertools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from impala_tf import losses, vtrace
from impala_tf.losses import LossConfig, clip_rewards, impala_loss

T, B, A = 6, 4, 5


def make_batch(seed: int, on_policy: bool = False, num_steps: int = T, batch_size: int = B) -> dict:
    rng = np.random.default_rng(seed)
    shape = (num_steps, batch_size)
    target_logits = rng.normal(size=(*shape, A)).astype(np.float32)
    behaviour_logits = rng.normal(scale=2.0, size=(*shape, A)).astype(np.float32)
    if on_policy:
        behaviour_logits = target_logits
    mask = np.ones(shape, np.float32)
    mask[2, 1] = 0.0  # a LAST -> FIRST reset transition in the middle of unroll 1
    return dict(
        target_logits=target_logits,
        baseline=rng.normal(size=shape).astype(np.float32),
        bootstrap_value=rng.normal(size=(batch_size,)).astype(np.float32),
        behaviour_logits=behaviour_logits.copy(),
        actions=rng.integers(A, size=shape).astype(np.int32),
        rewards=rng.normal(scale=2.0, size=shape).astype(np.float32),
        env_discounts=(rng.uniform(size=shape) > 0.1).astype(np.float32),
        mask=mask,
    )


def loss_and_gradients(batch: dict, config: LossConfig, **popart):
    target_logits = tf.constant(batch["target_logits"])
    baseline = tf.constant(batch["baseline"])
    with tf.GradientTape() as tape:
        tape.watch([target_logits, baseline])
        args = dict(batch, target_logits=target_logits, baseline=baseline)
        total, logs = impala_loss(**args, config=config, **popart)
    grad_logits, grad_baseline = tape.gradient(total, [target_logits, baseline])
    return total.numpy(), {k: v.numpy() for k, v in logs.items()}, grad_logits.numpy(), grad_baseline.numpy()


def log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def taken(values, actions):
    return np.take_along_axis(values, actions[..., None], axis=-1)[..., 0]


# Reward clipping and configuration.


def test_abs_one_clips_rewards_to_unit_interval():
    rewards = np.array([-5.0, -1.0, -0.3, 0.0, 0.7, 1.0, 250.0], np.float32)
    np.testing.assert_allclose(clip_rewards(rewards, "abs_one"), [-1.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.0])


def test_soft_asymmetric_clipping_matches_scalable_agent():
    # scalable_agent experiment.py: squeezed = tanh(r / 5); where(r < 0, 0.3 * squeezed, squeezed) * 5.
    rewards = np.array([-100.0, -10.0, -1.0, -0.1, 0.0, 0.1, 1.0, 5.0, 10.0, 100.0], np.float32)
    r = rewards.astype(np.float64)
    expected = np.where(r < 0, 0.3 * np.tanh(r / 5.0), np.tanh(r / 5.0)) * 5.0
    clipped = clip_rewards(rewards, "soft_asymmetric").numpy()
    np.testing.assert_allclose(clipped, expected, rtol=1e-6, atol=1e-7)
    # By hand: -1.5 tanh(0.2), 5 tanh(0.2), 5 tanh(1); bounded by -1.5 below and 5 above.
    np.testing.assert_allclose(clipped[[2, 6, 7]], [-0.296063, 0.986877, 3.807971], rtol=1e-5)
    np.testing.assert_allclose(clipped[[0, -1]], [-1.5, 5.0], rtol=1e-6)
    np.testing.assert_allclose(clipped[[3, 5]], [-0.3 * clipped[5], clipped[5]], rtol=1e-6)


def test_no_clipping_leaves_rewards_unchanged():
    rewards = np.array([-1000.0, 0.25, 3.0], np.float32)
    np.testing.assert_array_equal(clip_rewards(rewards, "none"), rewards)


def test_unknown_reward_clipping_lists_valid_modes():
    with pytest.raises(ValueError, match="valid modes: abs_one, soft_asymmetric, none"):
        clip_rewards(np.zeros(3, np.float32), "tanh")


def test_loss_config_defaults_are_the_papers_atari_settings():
    config = LossConfig()
    assert (config.discount, config.baseline_cost, config.entropy_cost) == (0.99, 0.5, 0.01)
    assert (config.reward_clipping, config.correction) == ("abs_one", "vtrace")
    assert (config.clip_rho_threshold, config.clip_pg_rho_threshold, config.epsilon) == (1.0, 1.0, 1e-6)
    with pytest.raises(AttributeError):
        config.discount = 0.5


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("discount", 1.5, "discount must be in"),
        ("discount", -0.1, "discount must be in"),
        ("baseline_cost", -1.0, "baseline_cost must be >= 0"),
        ("entropy_cost", -0.01, "entropy_cost must be >= 0"),
        ("reward_clipping", "clip", "valid modes: abs_one, soft_asymmetric, none"),
        ("correction", "retrace", "valid corrections: vtrace, none, epsilon, is1"),
        ("clip_rho_threshold", 0.0, "clip_rho_threshold must be a positive number or None"),
        ("clip_pg_rho_threshold", -2.0, "clip_pg_rho_threshold must be a positive number or None"),
        ("epsilon", 0.0, "epsilon must be > 0"),
    ],
)
def test_loss_config_rejects_invalid_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LossConfig(**{field: value})


# The loss terms.


def test_vtrace_loss_terms_match_their_definitions():
    batch = make_batch(seed=0)
    config = LossConfig(discount=0.9, baseline_cost=0.7, entropy_cost=0.03, clip_rho_threshold=1.5)
    total, logs, _, _ = loss_and_gradients(batch, config)

    real = batch["mask"] > 0
    rewards = np.clip(batch["rewards"], -1, 1)
    returns = vtrace.from_logits(
        batch["behaviour_logits"],
        batch["target_logits"],
        batch["actions"],
        config.discount * batch["env_discounts"],
        rewards,
        batch["baseline"],
        batch["bootstrap_value"],
        clip_rho_threshold=1.5,
    )
    vs = returns.vs.numpy()
    advantages = returns.pg_advantages.numpy()
    # Reference values on the real steps only; the masked step's targets are checked elsewhere.
    target_log_probs = log_softmax(batch["target_logits"])
    log_pi_a = taken(target_log_probs, batch["actions"])
    rhos = np.exp(log_pi_a - taken(log_softmax(batch["behaviour_logits"]), batch["actions"]))
    pg_loss = -np.sum((log_pi_a * advantages)[real])
    baseline_loss = 0.7 * 0.5 * np.sum(((vs - batch["baseline"]) ** 2)[real])
    entropy = -np.sum(np.exp(target_log_probs) * target_log_probs, axis=-1)
    entropy_loss = 0.03 * np.sum(-entropy[real])

    # Steps before the masked one in unroll 1 see other targets (the trace is cut); compare the rest exactly.
    unaffected = np.ones_like(real)
    unaffected[:3, 1] = False
    np.testing.assert_allclose(logs["vs"][unaffected], vs[unaffected], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logs["entropy_loss"], entropy_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["entropy"], entropy[real].mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["mean_rho"], rhos[real].mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["clipped_rho_fraction"], np.mean(rhos[real] > 1.5), rtol=1e-6)
    terms = logs["pg_loss"] + logs["baseline_loss"] + logs["entropy_loss"]
    np.testing.assert_allclose(total, terms, rtol=1e-6)

    # With no masked step every term equals its definition exactly.
    batch["mask"][:] = 1.0
    total, logs, _, _ = loss_and_gradients(batch, config)
    np.testing.assert_allclose(logs["vs"], vs, rtol=1e-5, atol=1e-5)
    pg_loss = -np.sum(log_pi_a * advantages)
    baseline_loss = 0.7 * 0.5 * np.sum((vs - batch["baseline"]) ** 2)
    entropy_loss = 0.03 * np.sum(-entropy)
    np.testing.assert_allclose(logs["pg_loss"], pg_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["baseline_loss"], baseline_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["entropy_loss"], entropy_loss, rtol=1e-5)
    np.testing.assert_allclose(logs["mean_vs"], vs.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["mean_advantage"], advantages.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total, pg_loss + baseline_loss + entropy_loss, rtol=1e-5)


def test_baseline_gradient_is_baseline_cost_times_td_error():
    batch = make_batch(seed=1)
    config = LossConfig(baseline_cost=0.5)
    _, logs, _, grad_baseline = loss_and_gradients(batch, config)
    expected = -0.5 * (logs["vs"] - batch["baseline"]) * batch["mask"]
    np.testing.assert_allclose(grad_baseline, expected, rtol=1e-5, atol=1e-6)


def test_loss_is_summed_not_averaged_over_time_and_batch():
    batch = make_batch(seed=2)
    doubled = {k: np.concatenate([v, v], axis=1 if v.ndim > 1 else 0) for k, v in batch.items()}
    total, logs, _, _ = loss_and_gradients(batch, LossConfig())
    total_doubled, logs_doubled, _, _ = loss_and_gradients(doubled, LossConfig())
    np.testing.assert_allclose(total_doubled, 2 * total, rtol=1e-5)
    for term in ("pg_loss", "baseline_loss", "entropy_loss"):
        np.testing.assert_allclose(logs_doubled[term], 2 * logs[term], rtol=1e-5)
    np.testing.assert_allclose(logs_doubled["entropy"], logs["entropy"], rtol=1e-5)  # means stay means


def test_rewards_are_clipped_per_config():
    batch = make_batch(seed=3)
    batch["rewards"] = batch["rewards"] * 100.0
    _, clipped_logs, _, _ = loss_and_gradients(batch, LossConfig(reward_clipping="abs_one"))
    unit = dict(batch, rewards=np.clip(batch["rewards"], -1, 1))
    _, unit_logs, _, _ = loss_and_gradients(unit, LossConfig(reward_clipping="none"))
    np.testing.assert_allclose(clipped_logs["vs"], unit_logs["vs"], rtol=1e-6)
    _, raw_logs, _, _ = loss_and_gradients(batch, LossConfig(reward_clipping="none"))
    assert np.abs(raw_logs["vs"]).max() > 10 * np.abs(clipped_logs["vs"]).max()


# Off-policy corrections (paper section 5.2.2).


def test_corrections_agree_on_policy_data():
    batch = make_batch(seed=4, on_policy=True)
    results = {c: loss_and_gradients(batch, LossConfig(correction=c)) for c in losses.CORRECTIONS}
    reference_total, reference_logs, reference_grad_logits, reference_grad_baseline = results["vtrace"]
    np.testing.assert_allclose(reference_logs["mean_rho"], 1.0, rtol=1e-6)
    for correction in ("none", "is1"):
        total, logs, grad_logits, grad_baseline = results[correction]
        np.testing.assert_allclose(total, reference_total, rtol=1e-5)
        np.testing.assert_allclose(logs["vs"], reference_logs["vs"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad_logits, reference_grad_logits, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grad_baseline, reference_grad_baseline, rtol=1e-5, atol=1e-6)
    # ε = 1e-6 inside the log barely moves the policy gradient when no action is improbable.
    total, logs, grad_logits, _ = results["epsilon"]
    np.testing.assert_allclose(logs["vs"], reference_logs["vs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(total, reference_total, rtol=1e-4)
    np.testing.assert_allclose(grad_logits, reference_grad_logits, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("correction", losses.CORRECTIONS)
def test_vtrace_lambda_zero_gives_every_correction_one_step_targets(correction):
    """λ = 0 cuts every trace: v_t = V(x_t) + ρ_t δ_t (ρ_t = 1 for the uncorrected targets), where δ_t is
    the one-step TD error of the clipped reward; the reset transition keeps v_t = V(x_t)."""
    batch = make_batch(seed=12)
    config = LossConfig(correction=correction, vtrace_lambda=0.0)
    _, logs, _, _ = loss_and_gradients(batch, config)
    values = batch["baseline"]
    next_values = np.concatenate([values[1:], batch["bootstrap_value"][None]])
    rewards = np.clip(batch["rewards"], -1, 1)
    deltas = rewards + 0.99 * batch["env_discounts"] * next_values - values
    if correction == "vtrace":
        log_pi = tf.nn.log_softmax(batch["target_logits"]).numpy()
        log_mu = tf.nn.log_softmax(batch["behaviour_logits"]).numpy()
        taken = batch["actions"][..., None]
        rhos = np.exp(np.take_along_axis(log_pi - log_mu, taken, -1)[..., 0])
        deltas = np.minimum(rhos, 1.0) * deltas
    expected = np.where(batch["mask"] > 0, values + deltas, values)
    np.testing.assert_allclose(logs["vs"], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="vtrace_lambda must be in"):
        LossConfig(vtrace_lambda=1.5)


def test_corrections_differ_on_off_policy_data():
    batch = make_batch(seed=5)
    # Off-policy data has actions the learner's policy finds very unlikely (π(a) ~ 1e-7): where ε matters.
    rows = np.arange(T)
    batch["target_logits"][rows, 0, batch["actions"][rows, 0]] = -16.0
    results = {c: loss_and_gradients(batch, LossConfig(correction=c)) for c in losses.CORRECTIONS}
    for a, b in itertools.combinations(losses.CORRECTIONS, 2):
        grad_a, grad_b = results[a][2], results[b][2]
        assert not np.allclose(grad_a, grad_b, rtol=1e-4, atol=1e-5), f"{a} and {b} give the same gradient"

    # What each correction changes, relative to "none" (no correction):
    _, none_logs, _, _ = results["none"]
    _, epsilon_logs, _, _ = results["epsilon"]
    _, is1_logs, _, _ = results["is1"]
    _, vtrace_logs, _, _ = results["vtrace"]
    np.testing.assert_allclose(epsilon_logs["vs"], none_logs["vs"])  # same targets, other log π
    np.testing.assert_allclose(is1_logs["vs"], none_logs["vs"])  # no correction of the value targets
    assert not np.allclose(vtrace_logs["vs"], none_logs["vs"], atol=1e-3)
    np.testing.assert_allclose(is1_logs["baseline_loss"], none_logs["baseline_loss"], rtol=1e-6)


@pytest.mark.parametrize("correction", ["none", "epsilon", "is1"])
def test_uncorrected_value_targets_ignore_rho_thresholds(correction):
    batch = make_batch(seed=15)
    _, logs, _, _ = loss_and_gradients(batch, LossConfig(correction=correction))
    thresholds = dict(clip_rho_threshold=0.3, clip_pg_rho_threshold=0.2)
    _, low_logs, _, _ = loss_and_gradients(batch, LossConfig(correction=correction, **thresholds))
    np.testing.assert_allclose(low_logs["vs"], logs["vs"], rtol=1e-6)
    np.testing.assert_allclose(low_logs["pg_loss"], logs["pg_loss"], rtol=1e-6)


def test_is1_weights_each_advantage_by_its_unclipped_importance_weight():
    batch = make_batch(seed=6)
    batch["mask"][:] = 1.0
    target_logits = tf.constant(batch["target_logits"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(target_logits)
        args = dict(batch, target_logits=target_logits)
        _, none_logs = impala_loss(**args, config=LossConfig(correction="none"))
        _, is1_logs = impala_loss(**args, config=LossConfig(correction="is1"))
    log_pi_a = taken(log_softmax(batch["target_logits"]), batch["actions"])
    rhos = np.exp(log_pi_a - taken(log_softmax(batch["behaviour_logits"]), batch["actions"]))
    assert rhos.max() > 1.5  # the weights are not clipped at 1
    rewards = np.clip(batch["rewards"], -1, 1)
    next_vs = np.concatenate([none_logs["vs"][1:], batch["bootstrap_value"][None]])
    on_policy_advantages = rewards + 0.99 * batch["env_discounts"] * next_vs - batch["baseline"]
    expected_is1 = -np.sum(rhos * on_policy_advantages * log_pi_a)
    np.testing.assert_allclose(is1_logs["pg_loss"], expected_is1, atol=1e-4)
    np.testing.assert_allclose(none_logs["pg_loss"], -np.sum(on_policy_advantages * log_pi_a), atol=1e-4)


def test_epsilon_correction_adds_epsilon_inside_the_log():
    batch = make_batch(seed=7)
    batch["mask"][:] = 1.0
    config = LossConfig(correction="epsilon", epsilon=0.1)  # large so the effect is visible
    _, logs, _, _ = loss_and_gradients(batch, config)
    _, none_logs, _, _ = loss_and_gradients(batch, LossConfig(correction="none"))
    pi_a = np.exp(taken(log_softmax(batch["target_logits"]), batch["actions"]))
    rewards = np.clip(batch["rewards"], -1, 1)
    next_vs = np.concatenate([none_logs["vs"][1:], batch["bootstrap_value"][None]])
    advantages = rewards + 0.99 * batch["env_discounts"] * next_vs - batch["baseline"]
    np.testing.assert_allclose(logs["pg_loss"], -np.sum(np.log(pi_a + 0.1) * advantages), rtol=1e-4)


# Masking of LAST -> FIRST transitions.


@pytest.mark.parametrize("correction", losses.CORRECTIONS)
def test_masked_transitions_contribute_nothing(correction):
    batch = make_batch(seed=8)
    config = LossConfig(correction=correction)
    total, logs, grad_logits, grad_baseline = loss_and_gradients(batch, config)

    garbage = dict(batch)
    for name in ("target_logits", "behaviour_logits", "actions", "rewards", "env_discounts"):
        garbage[name] = batch[name].copy()
    garbage["target_logits"][2, 1] = [30.0, -30.0, 7.0, 0.0, 1.0]
    garbage["behaviour_logits"][2, 1] = [-40.0, 40.0, 0.0, 3.0, 2.0]
    garbage["actions"][2, 1] = 0
    garbage["rewards"][2, 1] = 1e4
    garbage["env_discounts"][2, 1] = 1.0
    total_g, logs_g, grad_logits_g, grad_baseline_g = loss_and_gradients(garbage, config)

    np.testing.assert_allclose(total_g, total, rtol=1e-6)
    for name, value in logs.items():
        np.testing.assert_allclose(logs_g[name], value, rtol=1e-6, atol=1e-7, err_msg=name)
    np.testing.assert_array_equal(grad_logits_g[2, 1], 0.0)
    np.testing.assert_array_equal(grad_baseline_g[2, 1], 0.0)
    np.testing.assert_allclose(grad_logits_g, grad_logits, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_baseline_g, grad_baseline, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("correction", losses.CORRECTIONS)
def test_next_episode_does_not_leak_into_targets_before_a_reset(correction):
    batch = make_batch(seed=9)
    batch["env_discounts"][:] = 1.0  # worst case: nothing but the mask separates the two episodes
    batch["behaviour_logits"] = batch["target_logits"] * 0.5  # ρ near 1 so traces would carry far
    config = LossConfig(correction=correction, clip_rho_threshold=None, clip_pg_rho_threshold=None)
    _, logs, _, _ = loss_and_gradients(batch, config)
    # At the reset transition the target is the value itself (ρ = c = 0).
    np.testing.assert_allclose(logs["vs"][2, 1], batch["baseline"][2, 1])
    # Rewards and values of the next episode (steps 3.. of unroll 1) do not reach steps 0..1.
    changed = dict(batch, rewards=batch["rewards"].copy(), baseline=batch["baseline"].copy())
    changed["rewards"][3:, 1] += 0.5
    changed["baseline"][3:, 1] += 5.0
    changed["bootstrap_value"] = batch["bootstrap_value"] + 5.0
    _, changed_logs, _, _ = loss_and_gradients(changed, config)
    np.testing.assert_allclose(changed_logs["vs"][:3, 1], logs["vs"][:3, 1], rtol=1e-6)
    assert not np.allclose(changed_logs["vs"][3:, 1], logs["vs"][3:, 1])


@pytest.mark.parametrize("correction", losses.CORRECTIONS)
@pytest.mark.parametrize("illegal_logit", [-1e9, np.finfo(np.float32).min, -np.inf])
def test_illegal_actions_have_zero_probability_and_no_nan(illegal_logit, correction):
    batch = make_batch(seed=10)
    batch["actions"] = np.minimum(batch["actions"], 2)  # actions 3 and 4 are illegal and never taken
    for name in ("target_logits", "behaviour_logits"):
        batch[name] = batch[name].copy()
        batch[name][..., 3:] = illegal_logit
    # The masked step's (ignored) action may be illegal.
    batch["actions"][2, 1] = 4
    total, logs, grad_logits, grad_baseline = loss_and_gradients(batch, LossConfig(correction=correction))
    for value in (total, grad_logits, grad_baseline, *logs.values()):
        assert np.all(np.isfinite(value))
    np.testing.assert_array_equal(grad_logits[..., 3:], 0.0)
    legal = log_softmax(batch["target_logits"][..., :3])
    entropy = -np.sum(np.exp(legal) * legal, axis=-1)
    np.testing.assert_allclose(logs["entropy"], entropy[batch["mask"] > 0].mean(), rtol=1e-5)


# PopArt (Hessel et al. 2019).


def test_popart_with_identity_statistics_equals_plain_loss():
    batch = make_batch(seed=11)
    plain = loss_and_gradients(batch, LossConfig())
    identity = loss_and_gradients(
        batch, LossConfig(), popart_mu=np.zeros(B, np.float32), popart_sigma=np.ones(B, np.float32)
    )
    for a, b in zip(plain, identity, strict=True):
        if isinstance(a, dict):
            for name in a:
                np.testing.assert_allclose(b[name], a[name], rtol=1e-6, err_msg=name)
        else:
            np.testing.assert_allclose(b, a, rtol=1e-6)


def test_popart_runs_vtrace_on_unnormalised_values_and_regresses_normalised_targets():
    batch = make_batch(seed=12)
    batch["mask"][:] = 1.0
    mu = np.array([10.0, -3.0, 0.5, 100.0], np.float32)
    sigma = np.array([2.0, 0.5, 1.0, 40.0], np.float32)
    config = LossConfig(reward_clipping="none")
    _, logs, _, grad_baseline = loss_and_gradients(batch, config, popart_mu=mu, popart_sigma=sigma)

    unnormalised = dict(
        batch, baseline=sigma * batch["baseline"] + mu, bootstrap_value=sigma * batch["bootstrap_value"] + mu
    )
    _, plain_logs, _, _ = loss_and_gradients(unnormalised, config)
    vs = plain_logs["vs"]
    np.testing.assert_allclose(logs["vs"], vs, rtol=1e-5, atol=1e-4)
    normalised_vs = (vs - mu) / sigma
    expected_baseline_loss = 0.5 * 0.5 * np.sum((normalised_vs - batch["baseline"]) ** 2)
    np.testing.assert_allclose(logs["baseline_loss"], expected_baseline_loss, rtol=1e-4)
    expected_grad = -0.5 * (normalised_vs - batch["baseline"])
    np.testing.assert_allclose(grad_baseline, expected_grad, rtol=1e-4, atol=1e-5)
    # The policy gradient sees the V-trace advantages of the unnormalised values, divided by σ.
    log_pi_a = taken(log_softmax(batch["target_logits"]), batch["actions"])
    returns = vtrace.from_logits(
        batch["behaviour_logits"],
        batch["target_logits"],
        batch["actions"],
        0.99 * batch["env_discounts"],
        batch["rewards"],
        unnormalised["baseline"],
        unnormalised["bootstrap_value"],
    )
    expected_pg_loss = -np.sum(log_pi_a * returns.pg_advantages.numpy() / sigma)
    np.testing.assert_allclose(logs["pg_loss"], expected_pg_loss, rtol=1e-4)


def test_popart_needs_both_statistics():
    batch = make_batch(seed=13)
    with pytest.raises(ValueError, match="popart_mu and popart_sigma"):
        impala_loss(**batch, config=LossConfig(), popart_mu=np.zeros(B, np.float32))


def test_loss_and_gradients_compile_under_xla():
    batch = make_batch(seed=14)
    config = LossConfig()

    @tf.function(jit_compile=True)
    def compiled(target_logits, baseline, mu, sigma):
        with tf.GradientTape() as tape:
            tape.watch([target_logits, baseline])
            args = dict(batch, target_logits=target_logits, baseline=baseline)
            total, logs = impala_loss(**args, config=config, popart_mu=mu, popart_sigma=sigma)
        return total, logs, tape.gradient(total, [target_logits, baseline])

    mu, sigma = np.full(B, 0.3, np.float32), np.full(B, 2.0, np.float32)
    total, logs, (grad_logits, grad_baseline) = compiled(batch["target_logits"], batch["baseline"], mu, sigma)
    eager_total, eager_logs, eager_grad_logits, eager_grad_baseline = loss_and_gradients(
        batch, config, popart_mu=mu, popart_sigma=sigma
    )
    np.testing.assert_allclose(total, eager_total, rtol=1e-5)
    np.testing.assert_allclose(logs["vs"], eager_logs["vs"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_logits, eager_grad_logits, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(grad_baseline, eager_grad_baseline, rtol=1e-4, atol=1e-6)


def test_a_new_correction_is_one_function_and_one_registry_entry(monkeypatch):
    """The registry is the only place that knows the corrections: LossConfig, the loss and --correction read it."""

    def halved_vtrace(x, config):
        targets = losses.vtrace_correction(x, config)
        return targets._replace(pg_advantages=0.5 * targets.pg_advantages)

    monkeypatch.setitem(losses.CORRECTIONS, "halved_vtrace", halved_vtrace)
    batch = make_batch(3)
    _, vtrace_logs, _, _ = loss_and_gradients(batch, LossConfig(correction="vtrace"))
    _, halved_logs, _, _ = loss_and_gradients(batch, LossConfig(correction="halved_vtrace"))
    np.testing.assert_allclose(halved_logs["pg_loss"], 0.5 * vtrace_logs["pg_loss"], rtol=1e-5)
    np.testing.assert_allclose(halved_logs["baseline_loss"], vtrace_logs["baseline_loss"], rtol=1e-6)


def test_the_flags_offer_exactly_the_registered_corrections_and_clipping_modes():
    from absl import flags

    from impala_tf import config  # noqa: F401  (defines the flags)

    assert flags.FLAGS["correction"].parser.enum_values == list(losses.CORRECTIONS)
    assert flags.FLAGS["reward_clipping"].parser.enum_values == list(losses.REWARD_CLIPPING_MODES)
