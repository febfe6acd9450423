"""tf-agents adapters (the optional extra `impala-tf[tf-agents]`; `make test-tf-agents` builds its own venv).

  SuitePyEnvironment   N environments of one suite game as a batched `tf_agents` PyEnvironment (wrap it in
                       `TFPyEnvironment` for drivers); the same environments as training and evaluation.
  ExportedTFPolicy     an exported SavedModel (`python -m impala_tf.export`) as a `TFPolicy` that tf-agents
                       drivers and metrics run, e.g. `DynamicEpisodeDriver` with `AverageReturnMetric`.

    suite = impala_tf.export.policy_suite("exported/")     # the policy's games, protocol and task ids
    env = TFPyEnvironment(SuitePyEnvironment(suite, "pong", seed=1, num_envs=4))
    policy = ExportedTFPolicy("exported/", env.time_step_spec(), env.action_spec(), game="pong")
    DynamicEpisodeDriver(env, policy, [AverageReturnMetric(batch_size=4)], num_episodes=8).run()

A tf-agents episode is a *learning* episode: under the Atari `impala` protocol it ends at a lost life, so
`AverageReturnMetric` then averages per-life returns; `SuitePyEnvironment.pop_finished_games()` gives whole
games with their raw scores, as the leaderboard counts them.

This module imports without tf-agents (the core install has none); the classes raise ImportError on use.
tf-agents 0.19 needs TensorFlow 2.15 (tensorflow-probability 0.23); `requirements/tf-agents.txt` pins a working
set. SavedModels exported under the core's TensorFlow 2.21 load there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

try:
    import tensorflow as tf
    import tensorflow_probability as tfp
    from tf_agents.environments import py_environment
    from tf_agents.policies import tf_policy
    from tf_agents.specs import array_spec
    from tf_agents.trajectories import policy_step
    from tf_agents.trajectories import time_step as ts

    _MISSING: ImportError | None = None
    _PyEnvironment: Any = py_environment.PyEnvironment
    _TFPolicy: Any = tf_policy.TFPolicy
except ImportError as error:  # the core install: no tf-agents
    _MISSING = error
    _PyEnvironment = _TFPolicy = object

_FIRST = 0  # StepType.FIRST in dm_env and tf-agents alike


def is_available() -> bool:
    """Whether tf-agents (and TensorFlow Probability) could be imported."""
    return _MISSING is None


def _require_tf_agents() -> None:
    if _MISSING is not None:
        raise ImportError(
            f"the tf-agents adapters need tf-agents ({_MISSING}); install the extra impala-tf[tf-agents] "
            "in its own environment: make test-tf-agents builds .venv-tf-agents from requirements/tf-agents.txt"
        )


class SuitePyEnvironment(_PyEnvironment):
    """`num_envs` environments of `game` (a game of `suite`) as one batched PyEnvironment.

    Specs: observation uint8 `[*obs_shape]` in [0, 255]; action int32 scalar in [0, A) (the suite's shared
    action head). Steps follow dm-env, as tf-agents does: after LAST, the next step ignores the action and
    returns FIRST; tf-agents' FIRST carries discount 1 (ours carries 0: nothing is learnt across it).
    `task_id` is the game's task id in the suite, what an exported multi-task policy needs.
    """

    def __init__(
        self,
        suite: Any,
        game: str,
        seed: int,
        num_envs: int = 1,
        *,
        protocol: str | None = None,
        action_set: str | None = None,
    ):
        _require_tf_agents()
        from impala_tf import envs
        from impala_tf.interop.faces import resolve_suite

        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        super().__init__(handle_auto_reset=False)
        self.suite = resolve_suite(suite)
        self.game = game
        self.task_id = self.suite.task_id(game)
        self._env = envs.make_batched_env(
            self.suite, [self.task_id] * num_envs, seed, protocol=protocol, action_set=action_set
        )
        obs_spec = self._env.observation_spec()
        self._observation_spec = array_spec.BoundedArraySpec(
            tuple(obs_spec.shape), np.uint8, minimum=0, maximum=255, name="observation"
        )
        num_actions = int(self._env.action_spec().num_values)
        self._action_spec = array_spec.BoundedArraySpec((), np.int32, 0, num_actions - 1, name="action")
        self.legal_actions = self._env.legal_action_mask()[self.task_id]
        self._finished: list = []

    @property
    def batched(self) -> bool:
        return True

    @property
    def batch_size(self) -> int:
        return self._env.num_envs

    def observation_spec(self):
        return self._observation_spec

    def action_spec(self):
        return self._action_spec

    def _time_step(self, timestep) -> ts.TimeStep:
        self._finished.extend(self._env.pop_finished_episodes())
        first = timestep.step_type == _FIRST
        return ts.TimeStep(
            step_type=timestep.step_type.astype(np.int32),
            reward=timestep.reward.astype(np.float32),
            discount=np.where(first, 1.0, timestep.discount).astype(np.float32),
            observation=timestep.observation,
        )

    def _reset(self) -> ts.TimeStep:
        return self._time_step(self._env.reset())

    def _step(self, action) -> ts.TimeStep:
        return self._time_step(self._env.step(np.asarray(action, np.int32).reshape(self.batch_size)))

    def pop_finished_games(self) -> list:
        """Whole games finished since the last call: `EpisodeStats` (raw score, frames)."""
        finished, self._finished = self._finished, []
        return finished

    def close(self) -> None:
        self._env.close()


class ExportedTFPolicy(_TFPolicy):
    """An exported SavedModel as a tf-agents `TFPolicy` for one game of its suite.

    Args:
      saved_model_dir: what `python -m impala_tf.export` wrote.
      time_step_spec, action_spec: the environment's (e.g. `TFPyEnvironment(SuitePyEnvironment(...))`).
      game: the game it plays (its task id selects the legal actions and the value head); optional when the
        policy has a single game.
      greedy: take the argmax action instead of sampling.
      seed: the sampling seed; the n-th `action` call samples with stateless seed (seed, n).

    Policy state: {"core": float32 [2, H] (the LSTM's (h, c); H = 0 without one), "prev_action": int32 []},
    batch-major as tf-agents wants. `info` holds the policy logits [A] and the value (unnormalised under PopArt).
    """

    def __init__(
        self,
        saved_model_dir: str | Path,
        time_step_spec,
        action_spec,
        game: str | None = None,
        *,
        greedy: bool = False,
        seed: int = 0,
    ):
        _require_tf_agents()
        from impala_tf import export

        self.metadata = export.read_metadata(saved_model_dir)
        self._model = tf.saved_model.load(str(saved_model_dir))
        games = self.metadata["games"]
        if game is None and len(games) != 1:
            raise ValueError(
                f"the policy plays {len(games)} games: name one with game=; valid: {', '.join(games)}"
            )
        game = games[0] if game is None else game
        if game not in games:
            raise ValueError(f"{game!r} is not a game of this policy; valid: {', '.join(games)}")
        obs_shape, policy_shape = (
            tuple(time_step_spec.observation.shape),
            tuple(self.metadata["observation_shape"]),
        )
        if obs_shape != policy_shape:
            raise ValueError(
                f"the environment's observations are {obs_shape}, the policy's {policy_shape}: build the "
                "environment from impala_tf.export.policy_suite(saved_model_dir)"
            )
        self.task_id = games.index(game)
        self._greedy = greedy
        self._seed = tf.constant(seed % 2**31, tf.int32)
        self._calls = tf.Variable(0, dtype=tf.int32, trainable=False, name="sampling_calls")
        num_actions = self.metadata["num_actions"]
        policy_state_spec = {
            "core": tf.TensorSpec([2, self.metadata["state_size"]], tf.float32, name="core"),
            "prev_action": tf.TensorSpec([], tf.int32, name="prev_action"),
        }
        info_spec = {
            "policy_logits": tf.TensorSpec([num_actions], tf.float32, name="policy_logits"),
            "value": tf.TensorSpec([], tf.float32, name="value"),
        }
        super().__init__(
            time_step_spec,
            action_spec,
            policy_state_spec=policy_state_spec,
            info_spec=info_spec,
            clip=False,
            name="exported_impala_policy",
        )

    def _run(self, time_step, policy_state, seed: tf.Tensor) -> dict[str, tf.Tensor]:
        step_type = tf.cast(time_step.step_type, tf.int32)
        batch_size = tf.shape(step_type)[0]
        prev_action = tf.where(step_type == _FIRST, 0, tf.cast(policy_state["prev_action"], tf.int32))
        return self._model.step(
            tf.cast(time_step.observation, tf.uint8),
            prev_action,
            tf.cast(time_step.reward, tf.float32),
            step_type,
            tf.fill([batch_size], tf.constant(self.task_id, tf.int32)),
            tf.transpose(policy_state["core"], [1, 0, 2]),
            seed,
        )

    def _action(self, time_step, policy_state, seed):
        del seed  # sampling uses the policy's own stateless seed stream
        sampling_seed = tf.stack([self._seed, self._calls.assign_add(1)])
        out = self._run(time_step, policy_state, sampling_seed)
        action = out["greedy_action"] if self._greedy else out["action"]
        action = tf.cast(action, self.action_spec.dtype)
        new_state = {"core": tf.transpose(out["state"], [1, 0, 2]), "prev_action": tf.cast(action, tf.int32)}
        info = {"policy_logits": out["policy_logits"], "value": out["value"]}
        return policy_step.PolicyStep(action, new_state, info)

    def _distribution(self, time_step, policy_state):
        out = self._run(time_step, policy_state, tf.zeros([2], tf.int32))
        distribution = tfp.distributions.Categorical(
            logits=out["policy_logits"], dtype=self.action_spec.dtype
        )
        if self._greedy:
            distribution = tfp.distributions.Deterministic(
                tf.cast(out["greedy_action"], self.action_spec.dtype)
            )
        # The action the caller will draw is unknown here: the state assumes the mode (what GreedyPolicy takes).
        # It matters only to an LSTM core, whose input includes the previous action; sample with action().
        new_state = {
            "core": tf.transpose(out["state"], [1, 0, 2]),
            "prev_action": out["greedy_action"],
        }
        info = {"policy_logits": out["policy_logits"], "value": out["value"]}
        return policy_step.PolicyStep(distribution, new_state, info)
