"""Batched dm-env environments: Atari (ale-py's C++ vector env), MinAtar and Catch.

`make_batched_env(suite, task_ids, seed)` is the one factory the trainer calls: environment i plays
`suite.games[task_ids[i]]`. `SingleEnvironment` is the `dm_env.Environment` face of one such environment
(what `impala_tf.interop.make_dm_env` returns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dm_env
import numpy as np
from dm_env import specs

from impala_tf.envs.atari import AtariBatchedEnv, measure_env_fps
from impala_tf.envs.base import BatchedEnv, BatchedTimeStep, EpisodeStats
from impala_tf.envs.catch import CatchBatchedEnv
from impala_tf.envs.minatar import MinAtarBatchedEnv

__all__ = [
    "AtariBatchedEnv",
    "BatchedEnv",
    "BatchedTimeStep",
    "CatchBatchedEnv",
    "EpisodeStats",
    "MinAtarBatchedEnv",
    "SingleEnvironment",
    "make_batched_env",
    "measure_env_fps",
]


def make_batched_env(
    suite: Any,
    task_ids: Sequence[int],
    seed: int,
    *,
    protocol: str | None = None,
    action_set: str | None = None,
    num_threads: int | None = None,
    max_episode_frames: int | None = None,
) -> BatchedEnv:
    """N environments of a `suites.Suite`: environment i plays `suite.games[task_ids[i]]`.

    Args:
      suite: the suite (its backend, games, protocol and action set).
      task_ids: int [N], indices into `suite.games`.
      seed: determines every environment's seed; equal seeds give equal first steps.
      protocol: overrides the suite's protocol (Atari: "impala" or "machado").
      action_set: overrides the suite's action set ("full" or "minimal"; minimal needs a single game).
      num_threads: Atari's C++ threads over all environments (0 or None: one per environment, capped by
        the cores).
      max_episode_frames: overrides the frame cap (Atari: emulator frames; MinAtar: steps). Not for Catch.
    """
    from impala_tf.suites import BACKENDS, check_protocol

    protocol = protocol or suite.protocol
    action_set = action_set or suite.action_set
    check_protocol(suite.backend, protocol)
    if len(task_ids) and (min(task_ids) < 0 or max(task_ids) >= len(suite.games)):
        raise ValueError(
            f"task_ids must lie in [0, {len(suite.games)}) for suite {suite.name!r}, got {task_ids}"
        )
    if suite.backend == "atari":
        return AtariBatchedEnv(
            suite.games,
            task_ids,
            seed,
            protocol=protocol,
            action_set=action_set,
            num_threads=num_threads,
            max_episode_frames=max_episode_frames,
        )
    if suite.backend == "minatar":
        return MinAtarBatchedEnv(
            suite.games, task_ids, seed, action_set=action_set, max_episode_steps=max_episode_frames
        )
    if suite.backend == "catch":
        if max_episode_frames is not None:
            raise ValueError("Catch episodes have a fixed length; max_episode_frames does not apply")
        return CatchBatchedEnv(task_ids, seed)
    raise ValueError(f"unknown backend {suite.backend!r}; valid: {', '.join(BACKENDS)}")


def evaluation_max_episode_frames(suite: Any) -> int | None:
    """The cap an evaluation plays a game to: Atari's protocol has its own (None here), MinAtar has none in
    training, so evaluation sets one (`minatar.EVALUATION_MAX_EPISODE_STEPS`); Catch games have a fixed length."""
    if suite.backend == "minatar":
        from impala_tf.envs.minatar import EVALUATION_MAX_EPISODE_STEPS

        return EVALUATION_MAX_EPISODE_STEPS
    return None


class SingleEnvironment(dm_env.Environment):
    """The dm_env face of a one-environment BatchedEnv.

    `reset()` begins the next learning episode: after a LAST it is the auto-reset step (on Atari under the
    impala protocol a lost life therefore continues the game rather than restarting it); otherwise it starts a
    new game. `step()` after a LAST does the same, as dm_env prescribes.
    """

    def __init__(self, batched: BatchedEnv):
        if batched.num_envs != 1:
            raise ValueError(f"SingleEnvironment wraps one environment, got {batched.num_envs}")
        self.batched = batched
        self._last_step_type: int | None = None

    def _timestep(self, batch: BatchedTimeStep) -> dm_env.TimeStep:
        step_type = dm_env.StepType(int(batch.step_type[0]))
        self._last_step_type = step_type
        observation = np.ascontiguousarray(batch.observation[0])
        if step_type == dm_env.StepType.FIRST:
            return dm_env.TimeStep(step_type, None, None, observation)
        return dm_env.TimeStep(step_type, float(batch.reward[0]), float(batch.discount[0]), observation)

    def reset(self) -> dm_env.TimeStep:
        if self._last_step_type == dm_env.StepType.LAST:
            return self._timestep(self.batched.step(np.zeros(1, np.int32)))
        return self._timestep(self.batched.reset())

    def step(self, action: int) -> dm_env.TimeStep:
        if self._last_step_type is None:
            return self.reset()
        return self._timestep(self.batched.step(np.array([action], np.int32)))

    def observation_spec(self) -> specs.Array:
        return self.batched.observation_spec()

    def action_spec(self) -> specs.DiscreteArray:
        return self.batched.action_spec()

    def legal_actions(self) -> np.ndarray:
        """bool [num_actions]: the actions this game can take."""
        return self.batched.legal_action_mask()[int(self.batched.task_ids[0])]

    def pop_finished_episodes(self) -> list[EpisodeStats]:
        return self.batched.pop_finished_episodes()

    def close(self) -> None:
        self.batched.close()
