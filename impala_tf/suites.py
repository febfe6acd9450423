"""Suites as data: which games one agent trains on, under which protocol, and how its scores are normalised.

A `Suite` names a backend (atari, minatar, catch), an ordered tuple of games (a game's index is its task
id), the evaluation protocol, the action set, optional per-game (random, human) reference scores and the
defaults a suite binary gives the trainer. `get_suite(name)` returns a built-in suite, or loads a
user's JSON file:

    {"name": "my3", "backend": "atari", "games": ["pong", "breakout", "qbert"], "protocol": "machado"}
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

from impala_tf import reference as reference_scores
from impala_tf.envs import atari, catch, minatar
from impala_tf.envs.base import ACTION_SETS

BACKENDS = ("atari", "minatar", "catch")
# Each backend owns its protocols, the first its default. Atari: `impala` is the paper's (no sticky actions, up
# to 30 no-op starts, life loss ends a learning episode); `machado` is Machado et al. 2018 (sticky actions
# 0.25, full action set, no life-loss signal, no no-op starts). See impala_tf/envs/atari.py.
PROTOCOLS = {"atari": atari.PROTOCOLS, "minatar": minatar.PROTOCOLS, "catch": catch.PROTOCOLS}

# Read through impala_tf.reference, the package's one reader of impala_tf/data/.
ATARI_REFERENCE_SOURCE = (
    "impala_tf/data/atari57_human_random.csv: random and human scores of google-deepmind/dqn_zoo "
    "dqn_zoo/atari_data.py (commit 45061f4); 1-30 no-op starts, 108,000-frame cap"
)

# Frames are emulator frames (frameskip included) summed over the suite's games.
ATARI_FRAMES_PER_GAME = 200_000_000  # the paper's budget per game (Table C.1)
MINATAR_FRAMES_PER_GAME = 5_000_000  # Young & Tian 2019
CATCH_FRAMES = 200_000

# Defaults a suite binary gives the trainer's flags (impala_tf/config.py); the command line still wins.
# 2 actors x 30 environments: equal shares for 5 (atari5) and 6 (atari_tuning6) games; 2 x 57 for atari57.
_ATARI_FLAGS: dict[str, Any] = {"envs_per_actor": 30}
_ATARI57_FLAGS = {"network": "deep", "envs_per_actor": 57}  # the paper's multi-task agent (Table C.1)
# MinAtar: the MinAtar paper's own network (10x10 frames); V-trace with λ = 0.5 instead of the paper's 1 (at 5M
# frames above λ = 1 on four games, level on freeway); batches of 8 unrolls, not 32: 4x the updates per frame
# (AC(λ) updates every step), and seaquest 52-72 against 6-8 with batches of 32, at or above batch 32 on the rest;
# three quarters of every batch replayed from the last 128 unrolls (4x the updates per fresh frame again): breakout
# ~3x and space_invaders to AC(λ), seaquest and freeway level or higher, asterix ~15 % lower; at or above AC(λ) on all
# five, at about twice the learner's time per fresh frame.
# Three seeds each: leaderboards/inputs/minatar_sweep/README.md. XLA on the CPU for the actors' inference only: the
# replaying loop is learner-bound, and its learner step runs faster without XLA (bench/NOTES.md, session 24).
_MINATAR_FLAGS: dict[str, Any] = {
    "network": "minatar",
    "envs_per_actor": 30,
    "vtrace_lambda": 0.5,
    "batch_size": 8,
    "replay_capacity": 128,
    "replay_fraction": 0.75,
    "xla": "inference",
}
# Catch learns from small batches (16 x 10 steps). With the default optimiser (epsilon 1e-5, mean square from 0)
# learning rates 1e-3 and 3e-3 both reached evaluation means of 0.96-1.0 at 60K frames (seeds 1, 2; 50 games).
_CATCH_FLAGS = {"unroll_length": 10, "batch_size": 16, "envs_per_actor": 8, "learning_rate": 3e-3}


@dataclasses.dataclass(frozen=True)
class Suite:
    """One agent's set of tasks: `games[task_id]` is a task's game, `reference[game]` its (random, human)."""

    name: str
    games: tuple[str, ...]
    backend: str
    protocol: str
    action_set: str = "full"
    reference: dict[str, tuple[float, float]] | None = dataclasses.field(default=None, hash=False)
    default_total_frames: int = 0
    default_flags: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    reference_source: str | None = None  # provenance of `reference`

    def __post_init__(self):
        object.__setattr__(self, "games", tuple(self.games))
        if self.backend not in BACKENDS:
            raise ValueError(
                f"unknown backend {self.backend!r} in suite {self.name!r}; valid: {', '.join(BACKENDS)}"
            )
        if not self.games:
            raise ValueError(f"suite {self.name!r} has no games")
        repeated = sorted({g for g in self.games if self.games.count(g) > 1})
        if repeated:
            raise ValueError(f"suite {self.name!r} lists {', '.join(repeated)} more than once")
        for game in self.games:
            check_game(self.backend, game)
        check_protocol(self.backend, self.protocol)
        if self.action_set not in ACTION_SETS:
            raise ValueError(f"unknown action set {self.action_set!r}; valid: {', '.join(ACTION_SETS)}")
        if self.action_set == "minimal" and len(self.games) > 1:
            raise ValueError(
                f"suite {self.name!r}: the minimal action set differs per game, so it needs a single-game "
                "suite; multi-task suites use action_set='full'"
            )
        if self.action_set == "minimal" and self.protocol == "machado":
            raise ValueError("the machado protocol uses the full action set; valid action_set: full")

    @property
    def num_tasks(self) -> int:
        return len(self.games)

    def task_id(self, game: str) -> int:
        if game not in self.games:
            raise ValueError(f"{game!r} is not a game of suite {self.name!r}; valid: {', '.join(self.games)}")
        return self.games.index(game)

    def restrict(self, games: Sequence[str], *, action_set: str | None = None) -> Suite:
        """The same suite over a subset of its games (in the order given), e.g. from `--games`."""
        games = tuple(games)
        unknown = [g for g in games if g not in self.games]
        if unknown:
            raise ValueError(
                f"{', '.join(map(repr, unknown))} not in suite {self.name!r}; valid: {', '.join(self.games)}"
            )
        reference = (
            None if self.reference is None else {g: self.reference[g] for g in games if g in self.reference}
        )
        frames_per_game = self.default_total_frames // len(self.games)
        return dataclasses.replace(
            self,
            games=games,
            action_set=action_set or self.action_set,
            reference=reference or None,
            reference_source=self.reference_source if reference else None,
            default_total_frames=frames_per_game * len(games),
            default_flags=dict(self.default_flags),
        )


def check_protocol(backend: str, protocol: str) -> None:
    valid = PROTOCOLS.get(backend, ())
    if protocol not in valid:
        raise ValueError(f"unknown protocol {protocol!r} for backend {backend!r}; valid: {', '.join(valid)}")


def check_game(backend: str, game: str) -> None:
    """Raises ValueError naming the valid games (or the ale-py version a known Atari game needs)."""
    if backend == "atari":
        atari.check_rom(game)
        return
    if backend == "minatar":
        valid: Sequence[str] = minatar.GAMES
    elif backend == "catch":
        valid = catch.GAMES
    else:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if game not in valid:
        raise ValueError(f"unknown {backend} game {game!r}; valid: {', '.join(sorted(valid))}")


def _atari_suite(
    name: str, games: Sequence[str], protocol: str = "impala", action_set: str = "full"
) -> Suite:
    table = reference_scores.atari57_human_random()
    reference = {g: (table[g].low, table[g].high) for g in games if g in table}
    return Suite(
        name=name,
        games=tuple(games),
        backend="atari",
        protocol=protocol,
        action_set=action_set,
        reference=reference or None,
        reference_source=ATARI_REFERENCE_SOURCE if reference else None,
        default_total_frames=ATARI_FRAMES_PER_GAME * len(games),
        default_flags=dict(_ATARI_FLAGS),
    )


def _minatar_suite(
    name: str, games: Sequence[str], protocol: str = "minatar", action_set: str = "full"
) -> Suite:
    # No human scores are published for MinAtar: the scoring module normalises it by other means.
    return Suite(
        name=name,
        games=tuple(games),
        backend="minatar",
        protocol=protocol,
        action_set=action_set,
        default_total_frames=MINATAR_FRAMES_PER_GAME * len(games),
        default_flags=dict(_MINATAR_FLAGS),
    )


def _catch_suite(
    name: str, games: Sequence[str] = catch.GAMES, protocol: str = "catch", action_set: str = "full"
) -> Suite:
    return Suite(
        name=name,
        games=tuple(games),
        backend="catch",
        protocol=protocol,
        action_set=action_set,
        default_total_frames=CATCH_FRAMES,
        default_flags=dict(_CATCH_FLAGS),
    )


_BUILDERS = {"atari": _atari_suite, "minatar": _minatar_suite, "catch": _catch_suite}

_BUILTIN = {
    "atari57": lambda: dataclasses.replace(
        _atari_suite("atari57", reference_scores.atari57_games()), default_flags=dict(_ATARI57_FLAGS)
    ),
    # Aitchison, Sweetser & Hutter 2022, "Atari-5": five games whose scores predict the Atari-57 median.
    "atari5": lambda: _atari_suite(
        "atari5", ("battle_zone", "double_dunk", "name_this_game", "phoenix", "qbert")
    ),
    # The paper's hyperparameter tuning set (Espeholt et al. 2018, Appendix D).
    "atari_tuning6": lambda: _atari_suite(
        "atari_tuning6", ("beam_rider", "breakout", "pong", "qbert", "seaquest", "space_invaders")
    ),
    "minatar": lambda: _minatar_suite("minatar", minatar.GAMES),
    "catch": lambda: _catch_suite("catch"),
}
SUITE_NAMES = tuple(_BUILTIN)

_FILE_KEYS = {"name", "backend", "games", "protocol", "action_set", "default_total_frames", "default_flags"}


def get_suite(name: str) -> Suite:
    """A built-in suite by name, or a custom suite from a JSON file (`*.json` or an existing path)."""
    if name in _BUILTIN:
        return _BUILTIN[name]()
    if name.endswith(".json") or os.path.isfile(name):
        return load_suite_file(name)
    raise ValueError(
        f"unknown suite {name!r}; valid: {', '.join(SUITE_NAMES)}, or a path to a suite .json file"
    )


def load_suite_file(path: str | os.PathLike) -> Suite:
    """A custom suite from JSON: name, backend, games; optional protocol, action_set, default_total_frames,
    default_flags. Atari games get their (random, human) reference scores where the package has them."""
    try:
        with open(path) as f:
            spec = json.load(f)
    except OSError as error:
        raise ValueError(f"cannot read suite file {os.fspath(path)!r}: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"suite file {os.fspath(path)!r} is not valid JSON: {error}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"suite file {os.fspath(path)!r} must hold a JSON object")
    missing = [k for k in ("name", "backend", "games") if k not in spec]
    if missing:
        raise ValueError(
            f"suite file {os.fspath(path)!r} lacks {', '.join(missing)} (needs name, backend, games)"
        )
    unknown = sorted(set(spec) - _FILE_KEYS)
    if unknown:
        raise ValueError(
            f"suite file {os.fspath(path)!r}: unknown keys {unknown}; valid: {sorted(_FILE_KEYS)}"
        )
    backend = spec["backend"]
    if backend not in _BUILDERS:
        raise ValueError(f"unknown backend {backend!r} in {os.fspath(path)!r}; valid: {', '.join(BACKENDS)}")
    games = spec["games"]
    if isinstance(games, str) or not isinstance(games, list) or not all(isinstance(g, str) for g in games):
        raise ValueError(f"suite file {os.fspath(path)!r}: games must be a list of names")
    suite = _BUILDERS[backend](
        str(spec["name"]),
        games,
        protocol=spec.get("protocol", PROTOCOLS[backend][0]),
        action_set=spec.get("action_set", "full"),
    )
    changes: dict[str, Any] = {}
    if "default_total_frames" in spec:
        frames = spec["default_total_frames"]
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(
                f"suite file {os.fspath(path)!r}: default_total_frames must be a positive integer"
            )
        changes["default_total_frames"] = frames
    if "default_flags" in spec:
        if not isinstance(spec["default_flags"], dict):
            raise ValueError(f"suite file {os.fspath(path)!r}: default_flags must be an object")
        changes["default_flags"] = {**suite.default_flags, **spec["default_flags"]}
    return dataclasses.replace(suite, **changes) if changes else suite
