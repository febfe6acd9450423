"""The suites' environments for other agents: a gymnasium vector env and dm_env faces, and a score-file writer.

Both faces step exactly the environments training and `impala_tf.evaluate` step (`envs.make_batched_env`: same
protocol, frame skip, no-op starts, sticky actions, frame caps, observations uint8), so that an agent from
elsewhere is scored under our protocol and can be ranked by `python -m impala_tf.leaderboard --scores=FILE`:

    env = make_gym_vector_env("atari5", games=None, num_envs=10, seed=1)      # 2 environments per game
    scores = collect_game_scores(env, lambda obs, info: my_agent(obs, info["task_id"]), games_per_env=1)
    write_scores_csv("mine.csv", scores, agent="mine", seed=1, frames=50_000_000, protocol="impala")

Episodes and games. A *learning episode* ends with LAST (gymnasium: `terminated`, or `truncated` at the frame
cap); under the Atari `impala` protocol a lost life ends one, as in training. A *game* is what is scored: all
lives, raw unclipped score. The gym face reports each finished game in `info["game"]` (see `ImpalaVectorEnv`);
`collect_game_scores` counts only games.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector.utils import batch_space

from impala_tf import envs, writers
from impala_tf.envs.base import StepType

SCORE_COLUMNS = ("game", "score", "agent", "seed", "frames", "protocol")


def resolve_suite(suite: Any):
    """A suites.Suite, from itself or its name (or a suite JSON file)."""
    from impala_tf import suites

    return suites.get_suite(suite) if isinstance(suite, str) else suite


def make_dm_env(
    suite: Any, game: str, seed: int, *, protocol: str | None = None, action_set: str | None = None
) -> envs.SingleEnvironment:
    """One game of a suite as a `dm_env.Environment` (`envs.SingleEnvironment`).

    Args:
      suite: a suite name ("atari57", "minatar", ...), a suite JSON file, or a `suites.Suite`.
      game: one of the suite's games; its task id is `suite.task_id(game)`, as a policy trained on the suite
        expects (`env.task_id`).
      seed: the environment's seed; equal seeds give equal episodes for equal actions.
      protocol, action_set: override the suite's.

    `reset()` after a LAST continues the game (a lost life under the Atari impala protocol) and starts a new
    game otherwise; `pop_finished_episodes()` returns finished games with their raw scores.
    """
    suite = resolve_suite(suite)
    task_id = suite.task_id(game)
    batched = envs.make_batched_env(
        suite, [task_id], seed, protocol=protocol, action_set=action_set, num_threads=1
    )
    env = envs.SingleEnvironment(batched)
    env.task_id = task_id
    return env


class ImpalaVectorEnv(gymnasium.vector.VectorEnv):
    """N environments of a suite as a `gymnasium.vector.VectorEnv`; environment i plays `games[i]`.

    Spaces: observations `Box(0, 255, obs_shape, uint8)` per environment (batched `[N, *obs_shape]`), actions
    `Discrete(A)` with A the suite's shared action head (18 on Atari; `legal_action_mask` `[N, A]` says which
    actions each environment's game has — an illegal Atari action is executed as NOOP).

    Autoreset: next-step (`metadata["autoreset_mode"]`), the dm-env semantics of training. After a step that
    returned terminated or truncated, the next `step` ignores that environment's action and returns the first
    observation of the next learning episode with reward 0 and terminated = truncated = False.

    Step results: rewards are raw (unclipped) float32; `terminated` is a LAST with discount 0, `truncated` a
    LAST with discount 1: at the frame cap, or (Atari impala protocol) closing a learning episode that the forced
    NOOP after a life loss ended at once (impala_tf/envs/atari.py). `info` holds, per gymnasium's vector convention (a value array and a `_name` mask):
      task_id  int32 [N]            the environment's task id in the suite
      game     {"score": float64 [N], "frames": int64 [N]}, with mask `_game`: a game (all lives) ended on
               this step, with its raw score and length in frames (emulator frames on Atari, steps elsewhere)
    """

    def __init__(
        self,
        suite: Any,
        games: Sequence[str],
        seed: int,
        *,
        protocol: str | None = None,
        action_set: str | None = None,
    ):
        self.suite = resolve_suite(suite)
        self.games = tuple(games)
        if not self.games:
            raise ValueError("games must name at least one game of the suite")
        self.task_ids = np.array([self.suite.task_id(game) for game in self.games], np.int32)
        self._protocol, self._action_set = protocol, action_set
        self._env = self._make(seed)
        self.num_envs = len(self.games)
        obs_spec = self._env.observation_spec()
        self.num_actions = int(self._env.action_spec().num_values)
        self.single_observation_space = gymnasium.spaces.Box(
            0, 255, tuple(obs_spec.shape), np.uint8, seed=seed
        )
        self.single_action_space = gymnasium.spaces.Discrete(self.num_actions, seed=seed)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.legal_action_mask = self._env.legal_action_mask()[self.task_ids]
        self.metadata = {"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP}

    def _make(self, seed: int):
        return envs.make_batched_env(
            self.suite, self.task_ids, seed, protocol=self._protocol, action_set=self._action_set
        )

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Starts a new game in every environment; `seed` rebuilds the environments with that seed."""
        if options:
            raise ValueError(f"options are not supported, got {sorted(options)}")
        if seed is not None:
            self._env.close()
            self._env = self._make(seed)
        timestep = self._env.reset()
        self._env.pop_finished_episodes()  # games cut short by this reset are not scored
        return timestep.observation, self._info([])

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be integers of shape ({self.num_envs},), got {actions.dtype} {actions.shape}"
            )
        if actions.min() < 0 or actions.max() >= self.num_actions:
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {actions.tolist()}")
        timestep = self._env.step(actions.astype(np.int32))
        last = timestep.step_type == StepType.LAST
        terminated = last & (timestep.discount == 0)
        truncated = last & (timestep.discount != 0)
        info = self._info(self._env.pop_finished_episodes())
        return timestep.observation, timestep.reward, terminated, truncated, info

    def _info(self, games: list) -> dict[str, Any]:
        n = self.num_envs
        score, frames, ended = np.zeros(n, np.float64), np.zeros(n, np.int64), np.zeros(n, bool)
        for game in games:
            score[game.env_index], frames[game.env_index] = game.episode_return, game.episode_frames
            ended[game.env_index] = True
        return {
            "task_id": self.task_ids.copy(),
            "_task_id": np.ones(n, bool),
            "game": {"score": score, "frames": frames},
            "_game": ended,
        }

    def close_extras(self, **kwargs: Any) -> None:
        self._env.close()


def make_gym_vector_env(
    suite_name: Any,
    games: Sequence[str] | None,
    num_envs: int,
    seed: int,
    *,
    protocol: str | None = None,
    action_set: str | None = None,
) -> ImpalaVectorEnv:
    """`num_envs` environments over `games` (None: every game of the suite); environment i plays
    `games[i % len(games)]`, so each game gets num_envs / len(games) environments when that divides."""
    suite = resolve_suite(suite_name)
    games = tuple(suite.games if games is None else games)
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    return ImpalaVectorEnv(
        suite,
        [games[i % len(games)] for i in range(num_envs)],
        seed,
        protocol=protocol,
        action_set=action_set,
    )


def collect_game_scores(
    env: ImpalaVectorEnv,
    act: Callable[[np.ndarray, dict[str, Any]], np.ndarray],
    games_per_env: int = 1,
    max_steps: int | None = None,
) -> dict[str, list[float]]:
    """Plays until every environment finished `games_per_env` whole games; returns game -> raw scores.

    `act(observation [N, ...], info)` returns actions [N]. Only each environment's first `games_per_env` games
    count (as in impala_tf.evaluate), so that short games are not over-represented. `max_steps` bounds the
    loop (a ValueError names the environments still playing).
    """
    if games_per_env < 1:
        raise ValueError(f"games_per_env must be >= 1, got {games_per_env}")
    observation, info = env.reset()
    played = np.zeros(env.num_envs, np.int64)
    scores: dict[str, list[float]] = {game: [] for game in dict.fromkeys(env.games)}
    steps = 0
    while (played < games_per_env).any():
        if max_steps is not None and steps >= max_steps:
            playing = sorted({env.games[i] for i in np.flatnonzero(played < games_per_env)})
            raise ValueError(f"games still running after max_steps={max_steps}: {', '.join(playing)}")
        observation, _, _, _, info = env.step(np.asarray(act(observation, info)))
        steps += 1
        for i in np.flatnonzero(info["_game"] & (played < games_per_env)):
            scores[env.games[i]].append(float(info["game"]["score"][i]))
            played[i] += 1
    return scores


def write_scores_csv(
    path: str | Path,
    scores: Mapping[str, Sequence[float] | float],
    *,
    agent: str,
    seed: int = 0,
    frames: int | None = None,
    protocol: str | None = None,
) -> Path:
    """Writes a leaderboard score file: one row `game, score, agent, seed, frames, protocol` per game.

    Args:
      path: the CSV to write (atomically; an existing file is replaced).
      scores: game -> raw scores of its evaluation games (their mean is the row's score), or one score.
      agent: the agent's name on the leaderboard.
      seed: the training seed (several seeds of one agent give confidence intervals).
      frames: training frames per game, or None when unknown.
      protocol: the evaluation protocol (Atari: impala or machado; "minatar", "catch"), or None.
    """
    from impala_tf import suites

    valid_protocols = sorted({p for protocols in suites.PROTOCOLS.values() for p in protocols})
    if protocol is not None and protocol not in valid_protocols:
        raise ValueError(f"unknown protocol {protocol!r}; valid: {', '.join(valid_protocols)}")
    if not agent or "," in agent:
        raise ValueError(f"agent must be a non-empty name without commas, got {agent!r}")
    if frames is not None and frames < 0:
        raise ValueError(f"frames must be >= 0, got {frames}")
    if not scores:
        raise ValueError("scores is empty: no game to write")
    rows = []
    for game, values in scores.items():
        values = [float(values)] if np.isscalar(values) else [float(v) for v in values]
        if not values or not all(math.isfinite(v) for v in values):
            raise ValueError(f"game {game!r} needs at least one finite score, got {values}")
        mean = float(np.mean(values))
        rows.append([game, f"{mean:.10g}", agent, seed, "" if frames is None else frames, protocol or ""])
    path = Path(path)
    writers.atomic_write_text(path, writers.csv_text(rows, list(SCORE_COLUMNS)))
    return path
