"""tf-agents adapters: a suite environment as a PyEnvironment, an exported policy as a TFPolicy.

Runs in .venv-tf-agents (`make test-tf-agents`, TensorFlow 2.15); skipped anywhere tf-agents is missing. With
IMPALA_TF_EXPORT_PYTHON set (the Makefile sets it to the core venv's python) the policies are exported by the
core install's TensorFlow, as a user would; otherwise by this venv's.
"""

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("tf_agents.environments")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_agents.drivers import dynamic_episode_driver  # noqa: E402
from tf_agents.environments import tf_py_environment  # noqa: E402
from tf_agents.metrics import tf_metrics  # noqa: E402
from tf_agents.trajectories import time_step as ts  # noqa: E402

import suites  # noqa: E402
from impala_tf import envs, export  # noqa: E402
from impala_tf.envs.base import BatchedTimeStep, StepType  # noqa: E402
from impala_tf.interop.tf_agents import ExportedTFPolicy, SuitePyEnvironment  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def make_exported_policy(
    untrained_run: Callable[..., Path], root: Path, suite_name: str, games: list[str], use_lstm: bool
) -> Path:
    """A run directory with an untrained checkpoint, exported to a SavedModel."""
    popart_stats = ([0.0] * len(games), [1.0] * len(games)) if len(games) > 1 else None
    run = untrained_run(root, suite_name, games, use_lstm=use_lstm, popart_stats=popart_stats)
    out = root / f"{suite_name}_policy"
    core_python = os.environ.get("IMPALA_TF_EXPORT_PYTHON")
    if core_python:
        result = subprocess.run(
            [core_python, "-m", "impala_tf.export", f"--logdir={run}", f"--out={out}"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"},
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    else:
        export.export_policy(run, out)
    return out


@pytest.fixture(scope="module")
def policies(tmp_path_factory, untrained_run):
    root = tmp_path_factory.mktemp("tf_agents")
    return {
        "catch": make_exported_policy(untrained_run, root, "catch", ["catch"], use_lstm=False),
        "minatar": make_exported_policy(
            untrained_run, root, "minatar", ["breakout", "asterix"], use_lstm=True
        ),
    }


def test_suite_py_environment_steps_the_training_environments():
    py_env = SuitePyEnvironment("minatar", "asterix", seed=3, num_envs=3)
    reference = envs.make_batched_env(suites.get_suite("minatar"), [py_env.task_id] * 3, 3)
    try:
        assert py_env.batched and py_env.batch_size == 3
        assert py_env.observation_spec().shape == (10, 10, 10) and py_env.observation_spec().dtype == np.uint8
        assert (py_env.action_spec().minimum, py_env.action_spec().maximum) == (0, 5)
        time_step = py_env.reset()
        expected = reference.reset()
        np.testing.assert_array_equal(time_step.observation, expected.observation)
        assert time_step.is_first().all() and (time_step.discount == 1).all()
        rng = np.random.default_rng(0)
        for _ in range(200):
            action = rng.integers(0, 6, 3).astype(np.int32)
            time_step, expected = py_env.step(action), reference.step(action)
            np.testing.assert_array_equal(time_step.observation, expected.observation)
            np.testing.assert_array_equal(time_step.reward, expected.reward)
            np.testing.assert_array_equal(time_step.step_type, expected.step_type)
    finally:
        py_env.close()
        reference.close()


def test_driver_and_average_return_metric_run_the_exported_policy(policies):
    py_env = SuitePyEnvironment("catch", "catch", seed=1, num_envs=4)
    tf_env = tf_py_environment.TFPyEnvironment(py_env)
    policy = ExportedTFPolicy(policies["catch"], tf_env.time_step_spec(), tf_env.action_spec(), seed=2)
    average_return = tf_metrics.AverageReturnMetric(batch_size=4, buffer_size=100)
    episodes = tf_metrics.NumberOfEpisodes()
    driver = dynamic_episode_driver.DynamicEpisodeDriver(
        tf_env, policy, observers=[average_return, episodes], num_episodes=8
    )
    driver.run()
    games = py_env.pop_finished_games()  # Catch: one episode is one game
    assert int(episodes.result()) == len(games) >= 8
    returns = [game.episode_return for game in games]
    assert set(returns) <= {-1.0, 1.0}
    assert float(average_return.result()) == pytest.approx(np.mean(returns))


def test_tf_policy_acts_exactly_like_the_exported_policy(policies):
    """The adapter feeds the SavedModel what evaluate feeds it: same actions, logits and LSTM state."""
    # The policy trained on two MinAtar games: 4 observation planes, asterix is task 1.
    py_env = SuitePyEnvironment(export.policy_suite(policies["minatar"]), "asterix", seed=5, num_envs=5)
    tf_env = tf_py_environment.TFPyEnvironment(py_env)
    policy = ExportedTFPolicy(
        policies["minatar"], tf_env.time_step_spec(), tf_env.action_spec(), "asterix", seed=9
    )
    reference = export.ExportedPolicy(policies["minatar"], seed=9)
    assert policy.task_id == 1 and reference.metadata["state_size"] == 256
    task_id = np.full(5, policy.task_id, np.int32)
    time_step = tf_env.reset()
    policy_state = policy.get_initial_state(5)
    state, prev_action = reference.initial_state(5), np.zeros(5, np.int32)
    for _ in range(30):
        step = policy.action(time_step, policy_state)
        batched = BatchedTimeStep(
            step_type=time_step.step_type.numpy().astype(np.uint8),
            reward=time_step.reward.numpy(),
            discount=time_step.discount.numpy(),
            observation=time_step.observation.numpy(),
        )
        action, logits, state = reference.step(batched, prev_action, task_id, state)
        np.testing.assert_array_equal(step.action.numpy(), action)
        np.testing.assert_allclose(step.info["policy_logits"].numpy(), logits, atol=1e-6)
        np.testing.assert_allclose(np.transpose(step.state["core"].numpy(), [1, 0, 2]), state, atol=1e-6)
        time_step, policy_state = tf_env.step(step.action), step.state
        prev_action = np.where(time_step.step_type.numpy() == StepType.FIRST, 0, action).astype(np.int32)
    legal = np.array(reference.metadata["legal_action_mask"])[policy.task_id]
    assert legal[step.action.numpy()].all()


def test_greedy_policy_takes_the_argmax_and_wrong_games_are_refused(policies):
    py_env = SuitePyEnvironment("catch", "catch", seed=1, num_envs=2)
    tf_env = tf_py_environment.TFPyEnvironment(py_env)
    greedy = ExportedTFPolicy(policies["catch"], tf_env.time_step_spec(), tf_env.action_spec(), greedy=True)
    time_step = tf_env.reset()
    step = greedy.action(time_step, greedy.get_initial_state(2))
    np.testing.assert_array_equal(step.action.numpy(), step.info["policy_logits"].numpy().argmax(-1))
    distribution = greedy.distribution(time_step, greedy.get_initial_state(2)).action
    np.testing.assert_array_equal(distribution.mode().numpy(), step.action.numpy())
    with pytest.raises(ValueError, match="name one with game=; valid: breakout, asterix"):
        ExportedTFPolicy(policies["minatar"], tf_env.time_step_spec(), tf_env.action_spec())
    with pytest.raises(ValueError, match=r"the environment's observations are \(10, 5, 1\), the policy's"):
        ExportedTFPolicy(policies["minatar"], tf_env.time_step_spec(), tf_env.action_spec(), "breakout")
    time_step_spec = ts.time_step_spec(tf.TensorSpec([10, 5, 1], tf.uint8))
    with pytest.raises(ValueError, match="'pong' is not a game of this policy; valid: catch"):
        ExportedTFPolicy(policies["catch"], time_step_spec, tf_env.action_spec(), "pong")
