"""Batched-environment wrappers."""

from __future__ import annotations

import numpy as np

from impala_tf.envs.base import BatchedEnv, BatchedTimeStep, EpisodeStats


class ScaledRewards(BatchedEnv):
    """Multiplies the reward the *learner* sees by a per-task factor; recorded game scores stay raw.

    For experiments on reward scale (PopArt): the agent must cope with games that reward on very different
    scales, while scores stay comparable with unscaled runs.
    """

    def __init__(self, env: BatchedEnv, task_scales: np.ndarray):
        self._env = env
        self._scales = np.asarray(task_scales, np.float32)[env.task_ids]  # [N]
        self.num_envs = env.num_envs
        self.task_ids = env.task_ids
        self.frames_per_step = env.frames_per_step

    def observation_spec(self):
        return self._env.observation_spec()

    def action_spec(self):
        return self._env.action_spec()

    def legal_action_mask(self) -> np.ndarray:
        return self._env.legal_action_mask()

    def _scaled(self, timestep: BatchedTimeStep) -> BatchedTimeStep:
        return timestep._replace(reward=timestep.reward * self._scales)

    def reset(self) -> BatchedTimeStep:
        return self._scaled(self._env.reset())

    def step(self, actions: np.ndarray) -> BatchedTimeStep:
        return self._scaled(self._env.step(actions))

    def pop_finished_episodes(self) -> list[EpisodeStats]:
        return self._env.pop_finished_episodes()

    def hold(self, env_indices: np.ndarray) -> None:
        self._env.hold(env_indices)

    def close(self) -> None:
        self._env.close()
