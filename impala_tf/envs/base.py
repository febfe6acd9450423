"""The batched-environment interface that actors step.

A `BatchedEnv` runs N environments (of one or several tasks) in lock step with dm-env semantics and automatic
resets: after an environment returns LAST, its next `step` ignores the action and returns FIRST of a new episode.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import dm_env
import numpy as np
from dm_env import specs

# Every backend's heads: `full` is the shared head of a multi-task agent (Atari's 18 actions, MinAtar's 6) with
# each game's legal actions masked; `minimal` is one game's own minimal set (single-game runs only).
ACTION_SETS = ("full", "minimal")


class BatchedTimeStep(NamedTuple):
    """One step of N environments, batch-major.

    step_type:   uint8 [N]            dm_env.StepType values (FIRST=0, MID=1, LAST=2)
    reward:      float32 [N]          raw reward of the step (0 at FIRST); never clipped here
    discount:    float32 [N]          0 where a learning episode terminated, 1 otherwise (0 at FIRST)
    observation: uint8 [N, *obs]
    """

    step_type: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    observation: np.ndarray


class EpisodeStats(NamedTuple):
    """A finished *game* (for Atari: all lives), in raw, unclipped score."""

    env_index: int
    task_id: int
    episode_return: float
    episode_frames: int  # emulator frames (frameskip included) for Atari; environment steps elsewhere


class BatchedEnv(abc.ABC):
    """N environments stepped together. `task_ids[i]` is the suite task index of environment i."""

    num_envs: int
    task_ids: np.ndarray  # int32 [N]
    frames_per_step: int  # emulator frames per agent step (4 on Atari), for frame counters

    @abc.abstractmethod
    def observation_spec(self) -> specs.Array:
        """Spec of ONE environment's observation (uint8)."""

    @abc.abstractmethod
    def action_spec(self) -> specs.DiscreteArray:
        """Spec of ONE environment's action (the shared action head's size, e.g. 18 on Atari)."""

    @abc.abstractmethod
    def legal_action_mask(self) -> np.ndarray:
        """bool [num_tasks_of_suite, num_actions]: which actions each task can take."""

    @abc.abstractmethod
    def reset(self) -> BatchedTimeStep:
        """Resets every environment; all step types FIRST."""

    @abc.abstractmethod
    def step(self, actions: np.ndarray) -> BatchedTimeStep:
        """actions: int32 [N]."""

    @abc.abstractmethod
    def pop_finished_episodes(self) -> list[EpisodeStats]:
        """Games that ended since the last call (whole games, raw score)."""

    def hold(self, env_indices: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Environments whose steps nobody reads again (evaluation's finished games): an implementation may stop
        stepping them, their rows of later timesteps then being stale. A hint only; the default steps them all."""
        del env_indices

    def close(self) -> None:  # noqa: B027 - optional hook: most environments hold nothing to release
        return None


StepType = dm_env.StepType
