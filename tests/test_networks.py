import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from impala_tf.networks import ILLEGAL_LOGIT, NetworkConfig, make_network

FIRST, MID, LAST = 0, 1, 2
MINATAR_SHAPE = (10, 10, 7)


def count_parameters(network) -> int:
    """Number of trainable scalars."""
    return int(sum(np.prod(v.shape) for v in network.trainable_variables))


def random_inputs(rng, num_steps, batch_size, obs_shape, num_actions, num_tasks=1):
    return dict(
        observation=tf.constant(rng.integers(0, 256, (num_steps, batch_size, *obs_shape), dtype=np.uint8)),
        prev_action=tf.constant(rng.integers(0, num_actions, (num_steps, batch_size), dtype=np.int32)),
        prev_reward=tf.constant(rng.uniform(-1, 1, (num_steps, batch_size)).astype(np.float32)),
        step_type=tf.constant(np.full((num_steps, batch_size), MID, np.uint8)),
        task_id=tf.constant(rng.integers(0, num_tasks, (batch_size,), dtype=np.int32)),
    )


def random_state(rng, network, batch_size):
    return tf.constant(rng.normal(size=(2, batch_size, network.state_size)).astype(np.float32))


def at(inputs, t):
    """The batch-major step t of time-major inputs (task_id is per unroll)."""
    return {k: (v if k == "task_id" else v[t]) for k, v in inputs.items()}


def sliced(inputs, start, stop):
    return {k: (v if k == "task_id" else v[start:stop]) for k, v in inputs.items()}


@pytest.mark.parametrize(
    "torso, use_lstm, obs_shape, num_actions",
    [
        ("shallow", False, (84, 84, 4), 18),
        ("deep", False, (84, 84, 4), 18),
        ("deep", True, (84, 84, 4), 18),
        ("shallow", True, MINATAR_SHAPE, 6),
        ("deep", False, (10, 10, 10), 6),
        ("deep", True, (10, 5, 1), 3),  # Catch-sized
        ("minatar", False, MINATAR_SHAPE, 6),
        ("minatar", True, (10, 5, 1), 3),
    ],
)
def test_step_and_unroll_output_shapes(torso, use_lstm, obs_shape, num_actions):
    config = NetworkConfig(torso=torso, use_lstm=use_lstm, lstm_size=32, num_actions=num_actions)
    network = make_network(config, obs_shape)
    rng = np.random.default_rng(0)
    num_steps, batch_size = 3, 2
    inputs = random_inputs(rng, num_steps, batch_size, obs_shape, num_actions)
    state = network.initial_state(batch_size)
    assert state.shape == (2, batch_size, 32 if use_lstm else 0)

    output, final_state = network.unroll(**inputs, state=state)
    assert output.policy_logits.shape == (num_steps, batch_size, num_actions)
    assert output.baseline.shape == (num_steps, batch_size)
    assert final_state.shape == state.shape

    output, new_state = network.step(**at(inputs, 0), state=state)
    assert output.policy_logits.shape == (batch_size, num_actions)
    assert output.baseline.shape == (batch_size,)
    assert new_state.shape == state.shape
    assert np.all(np.isfinite(output.policy_logits.numpy()))


def test_unknown_torso_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="shallow, deep, minatar"):
        NetworkConfig(torso="resnet50", num_actions=4)


def test_legal_action_mask_of_wrong_width_is_rejected():
    with pytest.raises(ValueError, match=r"bool \[num_tasks, 4\]"):
        make_network(NetworkConfig(num_actions=4), MINATAR_SHAPE, legal_action_mask=np.ones((2, 5), bool))


def test_parameter_count_of_shallow_atari_network_matches_the_architecture():
    counts = {}
    for name, torso, use_lstm in [
        ("shallow", "shallow", False),
        ("deep", "deep", False),
        ("deep+lstm", "deep", True),
    ]:
        network = make_network(NetworkConfig(torso=torso, use_lstm=use_lstm, num_actions=18), (84, 84, 4))
        counts[name] = count_parameters(network)
    print("parameters at 84x84x4, 18 actions:", counts)
    # conv 8x8x4x16, conv 4x4x16x32, FC (11*11*32)->256 ("SAME" padding: 84 -> 21 -> 11), policy, baseline.
    expected_shallow = (
        (8 * 8 * 4 * 16 + 16) + (4 * 4 * 16 * 32 + 32) + (11 * 11 * 32 * 256 + 256) + 257 * 18 + 257
    )
    assert counts["shallow"] == expected_shallow
    # The LSTM adds 4 gates over [torso 256 + one-hot 18 + reward 1] inputs and 256 recurrent units.
    assert counts["deep+lstm"] - counts["deep"] == 4 * 256 * (256 + 18 + 1) + 4 * 256 * 256 + 4 * 256


def test_state_after_a_first_step_equals_a_fresh_initial_state():
    network = make_network(
        NetworkConfig(torso="shallow", use_lstm=True, lstm_size=16, num_actions=5), MINATAR_SHAPE
    )
    rng = np.random.default_rng(1)
    inputs = at(random_inputs(rng, 1, 3, MINATAR_SHAPE, 5), 0)
    inputs["step_type"] = tf.constant([FIRST, FIRST, FIRST], tf.uint8)
    stale_state = random_state(rng, network, 3)

    out_fresh, state_fresh = network.step(**inputs, state=network.initial_state(3))
    out_stale, state_stale = network.step(**inputs, state=stale_state)
    np.testing.assert_allclose(out_stale.policy_logits, out_fresh.policy_logits, atol=1e-6)
    np.testing.assert_allclose(out_stale.baseline, out_fresh.baseline, atol=1e-6)
    np.testing.assert_allclose(state_stale, state_fresh, atol=1e-6)

    # Not vacuous: the same stale state at a MID step does change the output.
    inputs["step_type"] = tf.constant([MID, MID, MID], tf.uint8)
    out_mid, _ = network.step(**inputs, state=stale_state)
    assert np.abs(out_mid.policy_logits.numpy() - out_fresh.policy_logits.numpy()).max() > 1e-4


def test_unroll_with_a_first_in_the_middle_equals_two_separate_unrolls():
    network = make_network(
        NetworkConfig(torso="deep", use_lstm=True, lstm_size=16, num_actions=4), MINATAR_SHAPE
    )
    rng = np.random.default_rng(2)
    inputs = random_inputs(rng, 6, 2, MINATAR_SHAPE, 4)
    step_type = np.full((6, 2), MID, np.uint8)
    step_type[2, 0], step_type[3, 0], step_type[4, 1] = LAST, FIRST, FIRST  # env 0 at t=3, env 1 at t=4
    inputs["step_type"] = tf.constant(step_type)
    state = random_state(rng, network, 2)

    whole, whole_final = network.unroll(**inputs, state=state)
    for env, split in [(0, 3), (1, 4)]:
        env_inputs = {
            k: (v[env : env + 1] if k == "task_id" else v[:, env : env + 1]) for k, v in inputs.items()
        }
        first, _ = network.unroll(**sliced(env_inputs, 0, split), state=state[:, env : env + 1])
        # The second part starts with FIRST, so it runs from a fresh state whatever came before.
        second, second_final = network.unroll(**sliced(env_inputs, split, 6), state=network.initial_state(1))
        parts = np.concatenate([first.policy_logits, second.policy_logits])[:, 0]
        np.testing.assert_allclose(whole.policy_logits[:, env], parts, atol=1e-5)
        np.testing.assert_allclose(
            whole.baseline[:, env], np.concatenate([first.baseline, second.baseline])[:, 0], atol=1e-5
        )
        np.testing.assert_allclose(whole_final[:, env], second_final[:, 0], atol=1e-5)


@pytest.mark.parametrize("use_lstm", [False, True])
def test_step_by_step_equals_unroll(use_lstm):
    network = make_network(
        NetworkConfig(torso="deep", use_lstm=use_lstm, lstm_size=16, num_actions=6), MINATAR_SHAPE
    )
    rng = np.random.default_rng(3)
    inputs = random_inputs(rng, 5, 3, MINATAR_SHAPE, 6)
    step_type = np.full((5, 3), MID, np.uint8)
    step_type[0], step_type[2, 1] = FIRST, FIRST
    inputs["step_type"] = tf.constant(step_type)
    state = random_state(rng, network, 3)

    unrolled, final_state = network.unroll(**inputs, state=state)
    stepped_state = state
    for t in range(5):
        output, stepped_state = network.step(**at(inputs, t), state=stepped_state)
        np.testing.assert_allclose(output.policy_logits, unrolled.policy_logits[t], atol=1e-5)
        np.testing.assert_allclose(output.baseline, unrolled.baseline[t], atol=1e-5)
    np.testing.assert_allclose(stepped_state, final_state, atol=1e-5)


def test_illegal_actions_are_never_sampled_and_keep_the_entropy_finite():
    legal = np.array([[True, True, False, False, False, False], [False, True, True, True, True, True]])
    network = make_network(
        NetworkConfig(torso="shallow", num_actions=6), MINATAR_SHAPE, legal_action_mask=legal
    )
    rng = np.random.default_rng(4)
    inputs = at(random_inputs(rng, 1, 8, MINATAR_SHAPE, 6, num_tasks=2), 0)
    inputs["task_id"] = tf.constant([0, 1] * 4, tf.int32)
    state = network.initial_state(8)

    with tf.GradientTape() as tape:
        output, _ = network.step(**inputs, state=state)
        log_probs = tf.nn.log_softmax(output.policy_logits)
        entropy = -tf.reduce_sum(tf.exp(log_probs) * log_probs, axis=-1)
    logits = output.policy_logits.numpy()
    task_legal = legal[inputs["task_id"].numpy()]
    np.testing.assert_array_equal(logits[~task_legal], ILLEGAL_LOGIT)
    assert np.all(logits[task_legal] > ILLEGAL_LOGIT / 2)

    samples = tf.random.stateless_categorical(output.policy_logits, 2000, seed=[0, 1]).numpy()  # [8, 2000]
    assert np.all(np.take_along_axis(task_legal, samples, axis=1))
    # Both legal actions of task 0 and all five of task 1 do get sampled.
    assert set(np.unique(samples[0])) == {0, 1} and set(np.unique(samples[1])) == {1, 2, 3, 4, 5}

    assert np.all(np.isfinite(entropy))
    assert np.all(
        entropy.numpy() <= np.log(task_legal.sum(axis=1)) + 1e-5
    )  # at most uniform over legal actions
    policy_variables = network.torso.trainable_variables + network.policy_head.trainable_variables
    gradients = tape.gradient(entropy, policy_variables)
    assert all(np.all(np.isfinite(g.numpy())) for g in gradients)


def test_baseline_is_the_value_head_of_each_unrolls_task():
    network = make_network(NetworkConfig(torso="shallow", num_actions=3, num_value_heads=4), MINATAR_SHAPE)
    # With a zero kernel the value heads output their biases, so each unroll must read its own task's bias.
    network.value_kernel.assign(np.zeros(network.value_kernel.shape, np.float32))
    network.value_bias.assign(np.array([10.0, 20.0, 30.0, 40.0], np.float32))
    rng = np.random.default_rng(5)
    inputs = random_inputs(rng, 2, 3, MINATAR_SHAPE, 3, num_tasks=4)
    inputs["task_id"] = tf.constant([3, 0, 2], tf.int32)
    output, _ = network.unroll(**inputs, state=network.initial_state(3))
    np.testing.assert_allclose(output.baseline, [[40.0, 10.0, 30.0]] * 2)


def test_observations_are_scaled_from_uint8_inside_the_network():
    network = make_network(NetworkConfig(torso="shallow", num_actions=3), MINATAR_SHAPE)
    rng = np.random.default_rng(6)
    inputs = at(random_inputs(rng, 1, 2, MINATAR_SHAPE, 3), 0)
    inputs["observation"] = tf.fill([2, *MINATAR_SHAPE], tf.constant(255, tf.uint8))
    output, _ = network.step(**inputs, state=network.initial_state(2))
    frames = tf.ones([2, *MINATAR_SHAPE])  # 255 / 255
    features = network.torso(frames)
    np.testing.assert_allclose(output.policy_logits, network.policy_head(features), atol=1e-5)


def test_minatar_torso_is_the_minatar_papers_network():
    network = make_network(NetworkConfig(torso="minatar", num_actions=6), MINATAR_SHAPE)
    # conv 3x3x7x16 (valid: 10x10 -> 8x8), FC 8*8*16 -> 128, policy 128 -> 6, value 128 -> 1.
    expected = (3 * 3 * 7 * 16 + 16) + (8 * 8 * 16 * 128 + 128) + (128 * 6 + 6) + (128 + 1)
    assert count_parameters(network) == expected


def test_previous_reward_input_is_clipped_to_plus_minus_one_whatever_the_loss_clipping():
    # scalable_agent clips the reward the LSTM sees to [-1, 1]; --reward_clipping only changes the loss.
    network = make_network(
        NetworkConfig(torso="minatar", use_lstm=True, lstm_size=8, num_actions=3), MINATAR_SHAPE
    )
    obs = np.full((2, *MINATAR_SHAPE), 255, np.uint8)
    zeros = np.zeros(2, np.int32)
    step_type = np.ones(2, np.uint8)
    state = network.initial_state(2)

    def logits(reward):
        out, _ = network.step(obs, zeros, np.array(reward, np.float32), step_type, zeros, state)
        return out.policy_logits.numpy()

    np.testing.assert_array_equal(logits([5.0, -40.0]), logits([1.0, -1.0]))
    assert not np.array_equal(logits([0.5, -0.5]), logits([1.0, -1.0]))


@pytest.mark.parametrize("torso", ["shallow", "minatar", "deep"])
def test_orthogonal_initializer_gives_orthogonal_kernels_with_the_baselines_gains(torso):
    config = NetworkConfig(num_actions=6, torso=torso, initializer="orthogonal")
    network = make_network(config, (84, 84, 4) if torso != "minatar" else (10, 10, 4))

    def gram(kernel):  # columns are output units: K^T K = gain^2 I when there are fewer outputs than inputs
        matrix = kernel.numpy().reshape(-1, kernel.shape[-1])
        return matrix.T @ matrix

    relu_kernels = [v for v in network.torso.trainable_variables if "kernel" in v.path]
    assert relu_kernels
    for kernel in relu_kernels:
        np.testing.assert_allclose(gram(kernel), 2.0 * np.eye(kernel.shape[-1]), atol=1e-4)
    np.testing.assert_allclose(gram(network.policy_head.kernel), 1e-4 * np.eye(6), atol=1e-8)
    np.testing.assert_allclose(gram(network.value_head.kernel), [[1.0]], atol=1e-5)
    assert all(not np.any(v.numpy()) for v in network.trainable_variables if "bias" in v.path)


def test_unknown_initializer_is_a_value_error_naming_the_choices():
    with pytest.raises(ValueError, match="glorot, orthogonal"):
        NetworkConfig(num_actions=4, initializer="he")
