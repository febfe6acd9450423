"""Catch: a tiny deterministic task for unit and learning tests (as in bsuite's catch), fully vectorised.

A ball starts in a random column of the top row and falls one row per step; the paddle on the bottom row
moves left, stays or moves right (actions 0, 1, 2). When the ball reaches the bottom row the episode ends with
reward +1 if the paddle is under it and -1 otherwise, so an episode is `rows - 1` agent steps after its FIRST.
Observations are uint8 [rows, columns, 1], 255 where the ball or the paddle is (the networks divide by 255).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import numpy as np
from dm_env import specs

from impala_tf.envs.base import BatchedEnv, BatchedTimeStep, EpisodeStats

GAMES = ("catch",)
PROTOCOLS = ("catch",)
NUM_ACTIONS = 3  # left, stay, right
_FIRST, _MID, _LAST = 0, 1, 2


class CatchBatchedEnv(BatchedEnv):
    """N Catch environments; `task_ids` must all be 0 (Catch is one task)."""

    def __init__(self, task_ids: Sequence[int], seed: int, *, rows: int = 10, columns: int = 5):
        if rows < 2 or columns < 1:
            raise ValueError(f"Catch needs rows >= 2 and columns >= 1, got rows={rows}, columns={columns}")
        self.task_ids = np.asarray(task_ids, dtype=np.int32)
        if self.task_ids.ndim != 1 or len(self.task_ids) == 0 or np.any(self.task_ids != 0):
            raise ValueError(f"Catch has one task: task_ids must be a non-empty list of 0, got {task_ids!r}")
        self.num_envs = len(self.task_ids)
        self.frames_per_step = 1
        self.rows, self.columns = rows, columns
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA7C]))
        n = self.num_envs
        self._ball_row = np.zeros(n, np.int64)
        self._ball_column = np.zeros(n, np.int64)
        self._paddle = np.zeros(n, np.int64)
        self._returns = np.zeros(n, np.float64)
        self._steps = np.zeros(n, np.int64)
        self._after_last = np.zeros(n, bool)
        self._finished: deque[EpisodeStats] = deque(maxlen=100_000)  # bounded if nobody pops

    def observation_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray((self.rows, self.columns, 1), np.uint8, 0, 255, name="observation")

    def action_spec(self) -> specs.DiscreteArray:
        return specs.DiscreteArray(NUM_ACTIONS, dtype=np.int32, name="action")

    def legal_action_mask(self) -> np.ndarray:
        return np.ones((1, NUM_ACTIONS), bool)

    def _new_episodes(self, which: np.ndarray) -> None:
        self._ball_row[which] = 0
        self._ball_column[which] = self._rng.integers(0, self.columns, size=int(which.sum()))
        self._paddle[which] = self.columns // 2
        self._returns[which] = 0.0
        self._steps[which] = 0

    def _observation(self) -> np.ndarray:
        obs = np.zeros((self.num_envs, self.rows, self.columns, 1), np.uint8)
        envs = np.arange(self.num_envs)
        obs[envs, self._ball_row, self._ball_column, 0] = 255
        obs[envs, self.rows - 1, self._paddle, 0] = 255
        return obs

    def reset(self) -> BatchedTimeStep:
        n = self.num_envs
        self._new_episodes(np.ones(n, bool))
        self._after_last[:] = False
        zeros = np.zeros(n, np.float32)
        return BatchedTimeStep(np.full(n, _FIRST, np.uint8), zeros, zeros.copy(), self._observation())

    def step(self, actions: np.ndarray) -> BatchedTimeStep:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
            raise ValueError(f"Catch actions must lie in [0, {NUM_ACTIONS}), got {actions}")
        restart = self._after_last.copy()
        playing = ~restart
        if restart.any():
            self._new_episodes(restart)

        self._paddle[playing] = np.clip(self._paddle[playing] + actions[playing] - 1, 0, self.columns - 1)
        self._ball_row[playing] += 1
        self._steps[playing] += 1
        landed = playing & (self._ball_row == self.rows - 1)
        caught = self._paddle == self._ball_column
        reward = np.where(landed, np.where(caught, 1.0, -1.0), 0.0).astype(np.float32)
        self._returns += reward

        for i in np.flatnonzero(landed):
            self._finished.append(EpisodeStats(int(i), 0, float(self._returns[i]), int(self._steps[i])))
        step_type = np.where(restart, _FIRST, np.where(landed, _LAST, _MID)).astype(np.uint8)
        discount = np.where(restart | landed, 0.0, 1.0).astype(np.float32)
        self._after_last = landed
        return BatchedTimeStep(step_type, reward, discount, self._observation())

    def pop_finished_episodes(self) -> list[EpisodeStats]:
        finished = list(self._finished)
        self._finished.clear()
        return finished
