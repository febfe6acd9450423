"""MinAtar (Young & Tian 2019) behind the BatchedEnv face.

Observations are MinAtar's 10x10xC boolean planes as uint8 0/255 (the networks divide by 255), zero-padded
to the largest C over the suite's games so that one network fits every game.

Actions: the shared head has MinAtar's six actions (n, l, u, r, d, f) and each game's legal mask is its
minimal action set. An action outside that set is passed through unchanged and MinAtar treats it as a no-op
for that game (e.g. `u` in breakout), so the mask only keeps the policy from wasting probability.
`action_set="minimal"` (one game) uses that game's minimal set as the head instead.

Sticky actions follow MinAtar's default (0.1), as do difficulty ramping and the absence of a step cap; all
three are arguments. MinAtar is pure Python and steps in ~5-30 us, so a Python loop over the environments is
not the bottleneck.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Sequence

import numpy as np
from dm_env import specs

from impala_tf.envs.base import ACTION_SETS, BatchedEnv, BatchedTimeStep, EpisodeStats

GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
PROTOCOLS = ("minatar",)  # sticky actions 0.1, difficulty ramping, no step cap (the MinAtar paper's)
NUM_ACTIONS = 6  # n, l, u, r, d, f
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
STICKY_ACTION_PROB = 0.1  # MinAtar's default
# Training has no step cap (MinAtar's protocol), evaluation needs one: in seaquest a policy that never dives stays
# at the surface, where nothing ends the game (seen: the ablation's uncorrected agent with replay). 100,000 steps
# is 40 whole freeway games, far beyond any game a learned policy plays to its end.
EVALUATION_MAX_EPISODE_STEPS = 100_000
_FIRST, _MID, _LAST = 0, 1, 2


def _minatar_environment(game: str, sticky_action_prob: float, difficulty_ramping: bool):
    # minatar logs a warning on import when seaborn (only needed for its GUI) is missing; keep actors quiet.
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        from minatar import Environment
    finally:
        logging.disable(previous)
    return Environment(game, sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping)


@functools.cache
def minimal_action_set(game: str) -> tuple[int, ...]:
    """The game's minimal actions, as indices into MinAtar's six."""
    return tuple(int(a) for a in _minatar_environment(game, 0.0, True).minimal_action_set())


class MinAtarBatchedEnv(BatchedEnv):
    """N MinAtar environments of one or several games.

    Args:
      games: the suite's games; `legal_action_mask()` has one row per game, observations C = max over them.
      task_ids: int [N], environment i plays `games[task_ids[i]]`.
      seed: determines every environment's seed.
      action_set: "full" (6 actions, minimal sets as masks) or "minimal" (one game's minimal set as the head).
      sticky_action_prob: probability of repeating the previous action (MinAtar's default 0.1; 0: off).
      difficulty_ramping: MinAtar's default True.
      max_episode_steps: optional cap; an episode that reaches it is truncated (LAST, discount 1).
    """

    def __init__(
        self,
        games: Sequence[str],
        task_ids: Sequence[int],
        seed: int,
        *,
        action_set: str = "full",
        sticky_action_prob: float = STICKY_ACTION_PROB,
        difficulty_ramping: bool = True,
        max_episode_steps: int | None = None,
    ):
        self.games = tuple(games)
        unknown = [g for g in self.games if g not in GAMES]
        if unknown:
            raise ValueError(f"unknown minatar game {unknown[0]!r}; valid: {', '.join(GAMES)}")
        if action_set not in ACTION_SETS:
            raise ValueError(f"unknown action set {action_set!r}; valid: {', '.join(ACTION_SETS)}")
        if action_set == "minimal" and len(self.games) > 1:
            raise ValueError(
                "action_set='minimal' needs a single game; multi-task runs use action_set='full'"
            )
        if not 0.0 <= sticky_action_prob <= 1.0:
            raise ValueError(f"sticky_action_prob must lie in [0, 1], got {sticky_action_prob}")
        self.task_ids = np.asarray(task_ids, dtype=np.int32)
        if self.task_ids.ndim != 1 or len(self.task_ids) == 0:
            raise ValueError(f"task_ids must be a non-empty list, got {task_ids!r}")
        if self.task_ids.min() < 0 or self.task_ids.max() >= len(self.games):
            raise ValueError(f"task_ids must lie in [0, {len(self.games)}), got {task_ids!r}")
        self.num_envs = len(self.task_ids)
        self.frames_per_step = 1
        self.max_episode_steps = max_episode_steps
        self._channels = max(CHANNELS[g] for g in self.games)

        self._envs = []
        for i, task in enumerate(self.task_ids):
            env = _minatar_environment(self.games[task], sticky_action_prob, difficulty_ramping)
            env.seed(int(np.random.SeedSequence([seed, i]).generate_state(1)[0]))
            self._envs.append(env)
        minimal = [minimal_action_set(g) for g in self.games]
        if action_set == "full":
            self._num_actions = NUM_ACTIONS
            self._legal = np.zeros((len(self.games), NUM_ACTIONS), bool)
            for t, actions in enumerate(minimal):
                self._legal[t, list(actions)] = True
            self._to_game_action = [tuple(range(NUM_ACTIONS))] * len(self.games)
        else:
            self._num_actions = len(minimal[0])
            self._legal = np.ones((1, self._num_actions), bool)
            self._to_game_action = [minimal[0]]

        n = self.num_envs
        self._returns = np.zeros(n, np.float64)
        self._steps = np.zeros(n, np.int64)
        self._after_last = np.zeros(n, bool)
        self._held = np.zeros(n, bool)  # not stepped: see hold()
        self._finished: deque[EpisodeStats] = deque(maxlen=100_000)  # bounded if nobody pops

    def observation_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray((10, 10, self._channels), np.uint8, 0, 255, name="observation")

    def action_spec(self) -> specs.DiscreteArray:
        return specs.DiscreteArray(self._num_actions, dtype=np.int32, name="action")

    def legal_action_mask(self) -> np.ndarray:
        return self._legal.copy()

    def hold(self, env_indices: np.ndarray) -> None:
        """Stops stepping these environments (a game can last 100,000 steps while the others wait); `reset()`
        releases them. Their rows of later timesteps are zeros, MID."""
        self._held[np.asarray(env_indices, np.int64)] = True

    def _write_state(self, observation: np.ndarray, i: int) -> None:
        state = self._envs[i].state()
        observation[i, :, :, : state.shape[-1]] = state

    def reset(self) -> BatchedTimeStep:
        n = self.num_envs
        observation = np.zeros((n, 10, 10, self._channels), np.uint8)
        for i, env in enumerate(self._envs):
            env.reset()
            self._write_state(observation, i)
        observation *= 255
        self._returns[:] = 0
        self._steps[:] = 0
        self._after_last[:] = False
        self._held[:] = False
        zeros = np.zeros(n, np.float32)
        return BatchedTimeStep(np.full(n, _FIRST, np.uint8), zeros, zeros.copy(), observation)

    def step(self, actions: np.ndarray) -> BatchedTimeStep:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        if actions.min() < 0 or actions.max() >= self._num_actions:
            raise ValueError(f"actions must lie in [0, {self._num_actions}), got {actions}")
        n = self.num_envs
        observation = np.zeros((n, 10, 10, self._channels), np.uint8)
        reward = np.zeros(n, np.float32)
        step_type = np.full(n, _MID, np.uint8)
        discount = np.ones(n, np.float32)
        for i, env in enumerate(self._envs):
            if self._held[i]:
                continue
            if self._after_last[i]:
                env.reset()
                step_type[i], discount[i] = _FIRST, 0.0
                self._returns[i] = 0.0
                self._steps[i] = 0
            else:
                r, terminal = env.act(self._to_game_action[self.task_ids[i]][actions[i]])
                self._steps[i] += 1
                reward[i] = r
                truncated = self.max_episode_steps is not None and self._steps[i] >= self.max_episode_steps
                if terminal or truncated:
                    step_type[i] = _LAST
                    discount[i] = 0.0 if terminal else 1.0
            self._write_state(observation, i)
        observation *= 255
        self._returns += reward
        self._after_last = step_type == _LAST
        for i in np.flatnonzero(self._after_last):
            self._finished.append(
                EpisodeStats(int(i), int(self.task_ids[i]), float(self._returns[i]), int(self._steps[i]))
            )
        return BatchedTimeStep(step_type, reward, discount, observation)

    def pop_finished_episodes(self) -> list[EpisodeStats]:
        finished = list(self._finished)
        self._finished.clear()
        return finished
