import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from impala_tf.learner import Learner, OptimizerConfig, linear_learning_rate, rmsprop_update
from impala_tf.losses import LossConfig
from impala_tf.networks import NetworkConfig, make_network
from impala_tf.unroll import Unroll

FIRST, MID, LAST = 0, 1, 2
CATCH_SHAPE = (10, 5, 1)
NUM_ACTIONS = 3
T, B = 5, 4


def synthetic_batch(seed: int = 0, state_size: int = 0) -> Unroll:
    """A fixed Catch-sized time-major batch [T+1, B] with one episode boundary (LAST then FIRST) in env 1."""
    rng = np.random.default_rng(seed)
    step_type = np.full((T + 1, B), MID, np.uint8)
    step_type[0, 0] = FIRST
    step_type[2, 1], step_type[3, 1] = LAST, FIRST
    reward = rng.choice([-1.0, 0.0, 1.0], size=(T + 1, B)).astype(np.float32)
    reward[step_type == FIRST] = 0.0
    discount = np.ones((T + 1, B), np.float32)
    discount[(step_type == LAST) | (step_type == FIRST)] = 0.0
    action = rng.integers(0, NUM_ACTIONS, (T + 1, B)).astype(np.int32)
    prev_action = np.concatenate([np.zeros((1, B), np.int32), action[:-1]])
    prev_action[step_type == FIRST] = 0
    return Unroll(
        observation=rng.integers(0, 256, (T + 1, B, *CATCH_SHAPE), dtype=np.uint8),
        step_type=step_type,
        reward=reward,
        discount=discount,
        prev_action=prev_action,
        action=action,
        behaviour_logits=rng.normal(size=(T + 1, B, NUM_ACTIONS)).astype(np.float32),
        task_id=np.zeros(B, np.int32),
        agent_state=rng.normal(size=(2, B, state_size)).astype(np.float32) * 0.1,
        policy_version=np.zeros(B, np.int64),
    )


def make_learner(
    use_lstm=False,
    xla=False,
    optimizer_config=None,
    total_frames=10_000,
    frames_per_step=1,
    num_value_heads=1,
):
    config = NetworkConfig(
        torso="shallow",
        use_lstm=use_lstm,
        lstm_size=16,
        num_actions=NUM_ACTIONS,
        num_value_heads=num_value_heads,
    )
    network = make_network(config, CATCH_SHAPE)
    return Learner(
        network,
        LossConfig(),
        optimizer_config or OptimizerConfig(),
        total_frames=total_frames,
        frames_per_step=frames_per_step,
        xla=xla,
    )


def values_of(variables) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in variables]


def learner_state(learner: Learner) -> list[np.ndarray]:
    slots = [v for v in learner.momentum_buffer if v is not None]
    popart = [learner.popart_mu, learner.popart_nu] if learner.uses_popart else []
    counters = [learner.num_updates, learner.num_frames, learner.num_nonfinite, learner.nonfinite_streak]
    return values_of(learner.network.trainable_variables + learner.mean_square + slots + popart + counters)


def test_loss_goes_down_over_a_few_steps_on_a_fixed_batch():
    learner = make_learner(xla=True, optimizer_config=OptimizerConfig(learning_rate=3e-3))
    batch = synthetic_batch()
    losses = [float(learner.step(batch)["total_loss"]) for _ in range(8)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:], strict=False)), losses
    assert losses[-1] < losses[0] - 0.02 * abs(losses[0]), losses
    assert int(learner.num_updates.numpy()) == 8


@pytest.mark.parametrize("use_lstm", [False, True])
def test_every_trainable_variable_gets_a_nonzero_gradient(use_lstm):
    learner = make_learner(use_lstm=use_lstm)
    before = values_of(learner.network.trainable_variables)
    logs = learner.step(synthetic_batch(state_size=learner.network.state_size))
    assert float(logs["grad_norm"]) > 0
    # RMSProp moves a variable iff its gradient is non-zero somewhere.
    for variable, old in zip(learner.network.trainable_variables, before, strict=True):
        assert np.any(variable.numpy() != old), f"{variable.path} got a zero gradient"


@pytest.mark.parametrize("xla", [False, True])
def test_nonfinite_batch_leaves_every_variable_unchanged_and_is_counted(xla):
    learner = make_learner(use_lstm=True, xla=xla, optimizer_config=OptimizerConfig(momentum=0.5))
    good = synthetic_batch(state_size=16)
    learner.step(good)
    before = learner_state(learner)
    bad = good._replace(reward=np.where(np.arange(B) == 2, np.nan, good.reward).astype(np.float32))

    logs = learner.step(bad)
    assert float(logs["nonfinite"]) == 1.0 and float(logs["nonfinite_streak"]) == 1.0
    after = learner_state(learner)
    weights_and_slots = slice(0, -4)
    for old, new in zip(before[weights_and_slots], after[weights_and_slots], strict=True):
        np.testing.assert_array_equal(new, old)
    assert int(learner.num_updates.numpy()) == 1
    assert int(learner.num_nonfinite.numpy()) == 1
    assert int(learner.num_frames.numpy()) == 2 * T * B  # the frames were consumed all the same
    # The step returns the counters after it, so the trainer's loop reads no variables.
    assert (int(logs["num_updates"]), int(logs["num_frames"])) == (1, 2 * T * B)

    logs = learner.step(good)
    assert float(logs["nonfinite"]) == 0.0 and float(logs["nonfinite_streak"]) == 0.0
    assert int(learner.num_updates.numpy()) == 2


def test_learning_rate_anneals_linearly_with_num_frames():
    learner = make_learner(
        optimizer_config=OptimizerConfig(learning_rate=6e-4), total_frames=1000, frames_per_step=4
    )
    for frames, expected in [(0, 6e-4), (250, 4.5e-4), (500, 3e-4), (1000, 0.0), (1500, 0.0)]:
        learner.num_frames.assign(frames)
        assert float(learner.learning_rate()) == pytest.approx(expected, rel=1e-6, abs=1e-12)

    learner.num_frames.assign(0)
    rates = [float(learner.step(synthetic_batch())["learning_rate"]) for _ in range(3)]
    frames_per_update = T * B * 4
    np.testing.assert_allclose(
        rates, [6e-4 * (1 - k * frames_per_update / 1000) for k in range(3)], rtol=1e-6
    )
    assert int(learner.num_frames.numpy()) == 3 * frames_per_update


def test_replayed_unrolls_do_not_count_towards_the_frame_budget():
    learner = make_learner(total_frames=10**9, frames_per_step=4)
    learner.step(synthetic_batch(), num_replayed=B // 2)
    assert int(learner.num_frames.numpy()) == T * (B - B // 2) * 4  # only what the environments produced
    assert int(learner.num_updates.numpy()) == 1


def test_rmsprop_update_follows_tf1_with_epsilon_inside_the_square_root():
    gradient = tf.constant([0.5, -2.0, 0.0])
    mean_square = tf.constant([1.0, 1.0, 0.25])
    momentum_buffer = tf.constant([0.1, 0.0, -0.2])
    delta, new_ms, new_mom = rmsprop_update(gradient, mean_square, momentum_buffer, 0.1, 0.9, 0.5, 0.01)
    expected_ms = 0.9 * np.array([1.0, 1.0, 0.25]) + 0.1 * np.array([0.25, 4.0, 0.0])
    expected_mom = 0.5 * np.array([0.1, 0.0, -0.2]) + 0.1 * np.array([0.5, -2.0, 0.0]) / np.sqrt(
        expected_ms + 0.01
    )
    np.testing.assert_allclose(new_ms, expected_ms, rtol=1e-6)
    np.testing.assert_allclose(new_mom, expected_mom, rtol=1e-6)
    np.testing.assert_allclose(delta, -expected_mom, rtol=1e-6)

    delta, _, no_mom = rmsprop_update(gradient, mean_square, None, 0.1, 0.9, 0.0, 0.01)
    assert no_mom is None
    np.testing.assert_allclose(
        delta, -0.1 * np.array([0.5, -2.0, 0.0]) / np.sqrt(expected_ms + 0.01), rtol=1e-6
    )


def test_a_mean_square_from_zero_makes_the_first_step_ten_learning_rates_unless_debiased():
    """decay 0.99, ms from 0: the first step is lr · g / sqrt(0.01 g²) = 10 · lr per weight; debiased (ms divided
    by 1 − 0.99¹) it is lr · g / sqrt(g²) = lr. ε is negligible next to these gradients."""
    gradient = tf.constant([0.03, -0.2, 1.5])
    zero = tf.zeros(3)
    raw, _, _ = rmsprop_update(gradient, zero, None, 1e-3, 0.99, 0.0, 1e-12)
    debiased, _, _ = rmsprop_update(gradient, zero, None, 1e-3, 0.99, 0.0, 1e-12, bias_correction=0.01)
    np.testing.assert_allclose(np.abs(raw), 1e-2, rtol=1e-4)
    np.testing.assert_allclose(np.abs(debiased), 1e-3, rtol=1e-4)


def test_debiased_learner_steps_about_one_learning_rate_per_weight_from_the_first_update():
    config = OptimizerConfig(learning_rate=1e-3, epsilon=1e-12, initial_mean_square=0.0, debias=True)
    learner = make_learner(optimizer_config=config)
    before = [v.numpy().copy() for v in learner._trainable]
    learner.step(synthetic_batch())
    steps = np.concatenate(
        [np.abs(v.numpy() - b).ravel() for v, b in zip(learner._trainable, before, strict=True)]
    )
    moved = steps[steps > 0]
    # Every weight moves by lr · |g| / sqrt(g² + ε) <= lr: lr itself unless |g| is as small as sqrt(ε).
    assert np.median(moved) == pytest.approx(1e-3, rel=1e-3) and moved.max() <= 1.001e-3
    with pytest.raises(ValueError, match="debias corrects a mean square that starts at 0"):
        OptimizerConfig(initial_mean_square=1.0, debias=True)


def test_checkpoint_round_trip_restores_weights_optimiser_slots_popart_and_counters(tmp_path):
    config = OptimizerConfig(momentum=0.9)
    learner = make_learner(use_lstm=True, optimizer_config=config, num_value_heads=2)
    batch = synthetic_batch(state_size=16)
    for _ in range(2):
        learner.step(batch)
    path = tf.train.Checkpoint(learner=learner).write(str(tmp_path / "ckpt"))

    restored = make_learner(use_lstm=True, optimizer_config=config, num_value_heads=2)
    tf.train.Checkpoint(learner=restored).read(path).assert_consumed()
    for saved, loaded in zip(learner_state(learner), learner_state(restored), strict=True):
        np.testing.assert_array_equal(loaded, saved)
    assert int(restored.num_updates.numpy()) == 2 and int(restored.num_frames.numpy()) == 2 * T * B

    # Training resumes exactly where it stopped, learning-rate schedule included.
    logs, restored_logs = learner.step(batch), restored.step(batch)
    assert float(restored_logs["learning_rate"]) == float(logs["learning_rate"]) < 6e-4
    for a, b in zip(learner_state(learner), learner_state(restored), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_xla_and_graph_steps_compute_the_same_update():
    graph, xla = make_learner(xla=False), make_learner(xla=True)
    for target, source in zip(xla.network.variables, graph.network.variables, strict=True):
        target.assign(source.numpy())
    batch = synthetic_batch()
    graph_logs, xla_logs = graph.step(batch), xla.step(batch)
    assert float(xla_logs["total_loss"]) == pytest.approx(float(graph_logs["total_loss"]), rel=1e-4)
    for a, b in zip(graph.network.trainable_variables, xla.network.trainable_variables, strict=True):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-6)


def test_step_returns_only_scalar_logs_and_casts_uint8_observations_once_in_the_network():
    learner = make_learner(use_lstm=True, xla=True)
    batch = synthetic_batch(state_size=16)
    concrete = learner._compiled_step.get_concrete_function(batch, tf.constant(0))

    assert all(spec.shape.rank == 0 for spec in concrete.structured_outputs.values())
    assert {"total_loss", "grad_norm", "learning_rate", "nonfinite"} <= set(concrete.structured_outputs)
    # No tensor but the logs leaves the step: every other result stays in variables.
    assert len(concrete.outputs) == len(concrete.structured_outputs)

    observation_input = tf.nest.flatten(concrete.structured_input_signature)[0]
    assert observation_input.dtype == tf.uint8
    uint8_casts = [
        op
        for op in concrete.graph.get_operations()
        if op.type == "Cast" and op.inputs[0].dtype == tf.uint8 and op.outputs[0].dtype == tf.float32
    ]
    assert len(uint8_casts) == 1  # the network's first layer; nothing upstream converts the frames
    host_ops = [op.type for op in concrete.graph.get_operations() if "PyFunc" in op.type]
    assert not host_ops


def test_invalid_optimizer_settings_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="decay must be in"):
        OptimizerConfig(decay=1.0)
    with pytest.raises(ValueError, match="total_frames must be >= 1"):
        make_learner(total_frames=0)
    assert float(linear_learning_rate(1.0, tf.constant(5, tf.int64), 10)) == pytest.approx(0.5)


def test_popart_moves_only_the_statistics_of_tasks_in_the_batch():
    learner = make_learner(num_value_heads=2, xla=True)
    batch = synthetic_batch()._replace(reward=np.full((T + 1, B), 1.0, np.float32))  # every unroll is task 0
    logs = learner.step(batch)
    assert "popart_mean_sigma" in logs
    mu, nu = learner.popart_mu.numpy(), learner.popart_nu.numpy()
    assert mu[0] > 0 and nu[0] != 1.0
    assert mu[1] == 0.0 and nu[1] == 1.0


def test_popart_statistics_update_preserves_the_unnormalised_values():
    learner = make_learner(num_value_heads=2)
    learner.popart_mu.assign([1.0, -2.0])
    learner.popart_nu.assign([5.0, 8.0])  # σ = 2 for both tasks
    batch = synthetic_batch()._replace(task_id=np.array([0, 1, 1, 0], np.int32))
    network, task_id = learner.network, tf.constant(batch.task_id)

    def unnormalised_values():
        output, _ = network.unroll(
            batch.observation, batch.prev_action, batch.reward, batch.step_type, task_id, batch.agent_state
        )
        sigma = tf.sqrt(learner.popart_nu - tf.square(learner.popart_mu))
        return output.baseline * tf.gather(sigma, task_id) + tf.gather(learner.popart_mu, task_id)

    before = unnormalised_values().numpy()
    vs = tf.constant(np.random.default_rng(0).normal(50.0, 20.0, (T, B)).astype(np.float32))
    learner._update_popart(vs, task_id, tf.ones([T, B]))
    assert np.all(learner.popart_mu.numpy() > [1.0, -2.0])  # moved towards the large targets
    np.testing.assert_allclose(unnormalised_values(), before, rtol=1e-4, atol=1e-4)
