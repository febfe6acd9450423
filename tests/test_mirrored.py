"""The multi-device learner (tf.distribute.MirroredStrategy) against the single-device one.

Logical CPU devices can only be configured before TensorFlow initialises, so the learners run in a child
process (this file run as a script); it saves what they did and the tests here compare it.
"""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from impala_tf.learner import mirrored_strategy, split_batch
from impala_tf.unroll import Unroll

FIRST, MID, LAST = 0, 1, 2
OBS_SHAPE = (10, 5, 1)
NUM_ACTIONS = 3
NUM_TASKS = 2
LSTM_SIZE = 8
T, B = 4, 6
NUM_DEVICES = 2
NUM_STEPS = 3
NUM_REPLAYED = 2  # of the B unrolls of the replay check's batch


def time_major_batch(seed: int) -> Unroll:
    """[T+1, B] with an episode boundary in each replica's half and both tasks in each half."""
    rng = np.random.default_rng(seed)
    step_type = np.full((T + 1, B), MID, np.uint8)
    step_type[0, 0] = FIRST
    step_type[1, 1], step_type[2, 1] = LAST, FIRST
    step_type[2, 4], step_type[3, 4] = LAST, FIRST
    reward = rng.choice([-1.0, 0.0, 2.0], size=(T + 1, B)).astype(np.float32)
    reward[step_type == FIRST] = 0.0
    discount = np.where(step_type == MID, 1.0, 0.0).astype(np.float32)
    action = rng.integers(0, NUM_ACTIONS, (T + 1, B)).astype(np.int32)
    prev_action = np.concatenate([np.zeros((1, B), np.int32), action[:-1]])
    prev_action[step_type == FIRST] = 0
    return Unroll(
        observation=rng.integers(0, 256, (T + 1, B, *OBS_SHAPE), dtype=np.uint8),
        step_type=step_type,
        reward=reward,
        discount=discount,
        prev_action=prev_action,
        action=action,
        behaviour_logits=rng.normal(size=(T + 1, B, NUM_ACTIONS)).astype(np.float32),
        task_id=np.array([0, 1, 0, 1, 1, 0], np.int32),
        agent_state=rng.normal(size=(2, B, LSTM_SIZE)).astype(np.float32) * 0.1,
        policy_version=np.arange(B, dtype=np.int64),
    )


def run_learners(out_path: str) -> None:
    """The child: 2 logical CPU devices, one single-device and two mirrored learners from the same weights."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_DEVICES)

    from impala_tf import learner as learner_lib
    from impala_tf.losses import LossConfig
    from impala_tf.networks import NetworkConfig, make_network

    config = NetworkConfig(
        torso="shallow",
        use_lstm=True,
        lstm_size=LSTM_SIZE,
        num_actions=NUM_ACTIONS,
        num_value_heads=NUM_TASKS,  # PopArt on
    )
    optimizer = learner_lib.OptimizerConfig(learning_rate=1e-2, momentum=0.5)
    results: dict[str, np.ndarray] = {}

    def make_learner(strategy, xla):
        with learner_lib.strategy_scope(strategy):
            network = make_network(config, OBS_SHAPE)
        return learner_lib.Learner(
            network,
            LossConfig(),
            optimizer,
            total_frames=1000,
            frames_per_step=4,
            xla=xla,
            popart_step_size=0.1,  # large, so that a PopArt update applied twice would show
            strategy=strategy,
        )

    def copy_weights(source, target):
        for to, value in zip(target.network.variables, source.network.variables, strict=True):
            to.assign(value.numpy())

    def state_of(learner):
        """Every variable the step writes, each as [num_copies, ...]."""
        variables = [
            *learner.network.trainable_variables,
            *learner.mean_square,
            *learner.momentum_buffer,
            learner.popart_mu,
            learner.popart_nu,
            learner.num_updates,
            learner.num_frames,
            learner.num_nonfinite,
            learner.nonfinite_streak,
        ]
        copies = []
        for variable in variables:
            if not isinstance(variable, tf.Variable):
                variable = variable.value  # a Keras variable wraps the tf.Variable
            if learner.num_replicas > 1:
                local = learner.strategy.experimental_local_results(variable)
            else:
                local = [variable]
            copies.append(np.stack([np.asarray(v.numpy()) for v in local]))
        return copies

    strategy = learner_lib.mirrored_strategy(NUM_DEVICES)
    single = make_learner(None, xla=False)
    mirrored = make_learner(strategy, xla=False)
    mirrored_xla = make_learner(strategy, xla=True)
    for learner in (mirrored, mirrored_xla):
        copy_weights(single, learner)

    log_names = ("total_loss", "pg_loss", "entropy", "mean_vs", "grad_norm", "learning_rate", "nonfinite")
    for name, learner in (("single", single), ("mirrored", mirrored), ("mirrored_xla", mirrored_xla)):
        logs = [learner.step(time_major_batch(seed)) for seed in range(NUM_STEPS)]
        results[f"{name}_logs"] = np.array([[float(step[k]) for k in log_names] for step in logs])
        for i, copies in enumerate(state_of(learner)):
            results[f"{name}_state_{i}"] = copies
    results["log_names"] = np.array(log_names)
    results["num_state"] = np.array(len(state_of(single)))

    # A NaN in the second replica's half only: every copy skips the update, and counts it once.
    before = state_of(mirrored)
    bad = time_major_batch(7)
    bad = bad._replace(reward=np.where(np.arange(B) == B - 1, np.nan, bad.reward).astype(np.float32))
    results["nonfinite_log"] = np.array(float(mirrored.step(bad)["nonfinite"]))
    for i, (old, new) in enumerate(zip(before, state_of(mirrored), strict=True)):
        results[f"nonfinite_before_{i}"], results[f"nonfinite_after_{i}"] = old, new

    # The checkpoint of a mirrored learner restores into a single-device one (evaluation does that).
    path = tf.train.Checkpoint(learner=mirrored).write(os.path.join(os.path.dirname(out_path), "ckpt"))
    restored = make_learner(None, xla=False)
    tf.train.Checkpoint(learner=restored).read(path).assert_consumed()
    for i, (saved, loaded) in enumerate(zip(state_of(mirrored), state_of(restored), strict=True)):
        results[f"restored_{i}"], results[f"saved_{i}"] = loaded[0], saved[0]

    # Replay: the batch's last unrolls are replayed ones, which land in the second replica's half. The update is the
    # single-device one, and every copy counts only the fresh unrolls' frames.
    replay_single, replay_mirrored = make_learner(None, xla=False), make_learner(strategy, xla=False)
    copy_weights(replay_single, replay_mirrored)
    for name, learner in (("replay_single", replay_single), ("replay_mirrored", replay_mirrored)):
        logs = learner.step(time_major_batch(11), num_replayed=NUM_REPLAYED)
        results[f"{name}_logs"] = np.array([float(logs[k]) for k in log_names])
        for i, copies in enumerate(state_of(learner)):
            results[f"{name}_state_{i}"] = copies

    try:
        learner_lib.Learner(make_network(config, OBS_SHAPE), LossConfig(), optimizer, 1000, strategy=strategy)
    except ValueError as error:
        results["outside_scope_error"] = np.array(str(error))
    try:
        mirrored.step(split_batch(time_major_batch(0), 2)[0])  # B = 3: not divisible by 2
    except ValueError as error:
        results["indivisible_error"] = np.array(str(error))
    np.savez(out_path, **results)


@pytest.fixture(scope="module")
def child(tmp_path_factory):
    out = tmp_path_factory.mktemp("mirrored") / "results.npz"
    done = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    with np.load(out) as data:
        return {k: data[k] for k in data.files}


def states(child, name):
    return [child[f"{name}_state_{i}"] for i in range(int(child["num_state"]))]


def test_mirrored_update_on_two_devices_equals_the_single_device_update(child):
    single, mirrored = states(child, "single"), states(child, "mirrored")
    for one, copies in zip(single, mirrored, strict=True):
        for copy in copies:  # weights, RMSProp slots, PopArt statistics and counters, on every device
            np.testing.assert_allclose(copy, one[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(child["mirrored_logs"], child["single_logs"], rtol=2e-5, atol=1e-6)


def test_mirrored_copies_stay_bitwise_equal(child):
    for copies in states(child, "mirrored"):
        np.testing.assert_array_equal(copies[1], copies[0])


def test_popart_statistics_and_counters_move_once_per_step_not_once_per_replica(child):
    single, mirrored = states(child, "single"), states(child, "mirrored")
    mu, nu, num_updates, num_frames = (mirrored[i] for i in (-6, -5, -4, -3))
    assert num_updates.tolist() == [NUM_STEPS] * NUM_DEVICES
    assert num_frames.tolist() == [NUM_STEPS * T * B * 4] * NUM_DEVICES
    np.testing.assert_allclose(mu[0], single[-6][0], rtol=1e-5)
    np.testing.assert_allclose(nu[0], single[-5][0], rtol=1e-5)
    assert np.all(mu[0] != 0.0)  # both tasks were in the batches, so both moved


def test_a_batch_with_replayed_unrolls_updates_every_copy_as_one_device_and_counts_only_fresh_frames(child):
    single, mirrored = states(child, "replay_single"), states(child, "replay_mirrored")
    for one, copies in zip(single, mirrored, strict=True):
        for copy in copies:
            np.testing.assert_allclose(copy, one[0], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(
        child["replay_mirrored_logs"], child["replay_single_logs"], rtol=2e-5, atol=1e-6
    )
    num_frames = mirrored[-3]
    assert num_frames.tolist() == [T * (B - NUM_REPLAYED) * 4] * NUM_DEVICES


def test_xla_compiled_replicas_give_the_same_update(child):
    for one, copies in zip(states(child, "single"), states(child, "mirrored_xla"), strict=True):
        np.testing.assert_allclose(copies[0], one[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(child["mirrored_xla_logs"], child["single_logs"], rtol=1e-4, atol=1e-5)


def test_nonfinite_gradient_in_one_replica_skips_the_update_on_every_copy(child):
    assert float(child["nonfinite_log"]) == 1.0
    num_state = int(child["num_state"])
    weights_and_slots = range(num_state - 4)
    for i in weights_and_slots:
        np.testing.assert_array_equal(child[f"nonfinite_after_{i}"], child[f"nonfinite_before_{i}"])
    num_updates, num_frames, num_nonfinite, streak = (
        child[f"nonfinite_after_{i}"] for i in range(num_state - 4, num_state)
    )
    assert num_updates.tolist() == [NUM_STEPS] * NUM_DEVICES
    assert num_nonfinite.tolist() == streak.tolist() == [1] * NUM_DEVICES
    assert num_frames.tolist() == [(NUM_STEPS + 1) * T * B * 4] * NUM_DEVICES


def test_mirrored_checkpoint_restores_into_a_single_device_learner(child):
    for i in range(int(child["num_state"])):
        np.testing.assert_array_equal(child[f"restored_{i}"], child[f"saved_{i}"])


def test_network_built_outside_the_strategy_scope_is_rejected(child):
    assert "strategy_scope" in str(child["outside_scope_error"])


def test_batch_not_divisible_by_the_devices_is_rejected(child):
    assert "must be divisible by the 2 learner devices" in str(child["indivisible_error"])


def test_split_batch_splits_along_the_batch_axis_of_each_field():
    batch = time_major_batch(0)
    halves = split_batch(batch, 2)
    assert [h.observation.shape for h in halves] == [(T + 1, B // 2, *OBS_SHAPE)] * 2
    assert [h.agent_state.shape for h in halves] == [(2, B // 2, LSTM_SIZE)] * 2
    for name in Unroll._fields:
        axis = 0 if name in ("task_id", "policy_version") else 1
        joined = np.concatenate([getattr(h, name) for h in halves], axis=axis)
        np.testing.assert_array_equal(joined, getattr(batch, name))
    with pytest.raises(ValueError, match="batch size 6 must be divisible by the 4 learner devices"):
        split_batch(batch, 4)


def test_one_learner_device_is_the_plain_path_and_too_many_is_a_clear_error():
    assert mirrored_strategy(1) is None
    with pytest.raises(ValueError, match="learner devices asked for"):
        mirrored_strategy(64)
    with pytest.raises(ValueError, match="must be >= 0"):
        mirrored_strategy(-1)


if __name__ == "__main__":
    run_learners(sys.argv[1])
