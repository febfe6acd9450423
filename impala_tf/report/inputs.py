"""Leaderboard inputs: score CSVs, run directories and normaliser files, validated row by row.

Every problem is an `InputError` naming the file, row and column, reported by the binaries as one line. A run
directory's score on a game is the mean of its evaluation games (eval_scores.csv rows of that task); its frames
per game are trained_frames divided by the number of games it trained on (config.json). Suites resolve to their
games and per-game normalisers: the suite's (random, human) reference, or a `--normaliser` file.
"""

from __future__ import annotations

import csv
import difflib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from impala_tf import reference, scoring, suites

PROTOCOLS = suites.PROTOCOLS["atari"]  # the protocols of score files and of SuiteInfo's default backend
UNSPECIFIED = "unspecified"
REFERENCE_CHOICES = (*reference.REFERENCE_SETS, "none")


class InputError(ValueError):
    """Bad user input: reported as one line (naming file, row and column where there are any), exit code 1."""


# --- Suites and normalisers -----------------------------------------------------------------------


class SuiteInfo(NamedTuple):
    name: str
    games: tuple[str, ...]
    normalisers: dict[str, reference.Normaliser] | None  # None: raw scores only
    normaliser_source: str
    protocols: tuple[str, ...] = PROTOCOLS  # the protocols its scores may carry
    backend: str = "atari"  # reference rows apply to Atari suites only (MinAtar reuses Atari game names)
    is_hns: bool = True  # normalisers are (random, human): normalised scores are HNS


def resolve_suite(name: str, normaliser_file: str | None = None) -> SuiteInfo:
    """The suite's games and per-game normalisers (`--normaliser` file, else the suite's (random, human))."""
    try:
        suite = suites.get_suite(name)
    except ValueError as error:
        raise InputError(str(error)) from None
    games = tuple(suite.games)
    if normaliser_file:
        normalisers = _load_normaliser_file(normaliser_file, suite.name, games)
        source = f"{normaliser_file} (low → 0 %, high → 100 %)"
    else:
        normalisers = _suite_normalisers(suite, games)
        source = "none (raw scores)"
        if normalisers is not None:
            formula = "HNS = 100·(score − random)/(human − random)"
            source = f"{formula}; reference scores: {suite.reference_source}"
    return SuiteInfo(
        name=suite.name,
        games=games,
        normalisers=normalisers,
        normaliser_source=source,
        protocols=tuple(suites.PROTOCOLS[suite.backend]),
        backend=suite.backend,
        is_hns=normalisers is not None and not normaliser_file,
    )


def _suite_normalisers(suite: suites.Suite, games: tuple[str, ...]) -> dict[str, reference.Normaliser] | None:
    """The suite's per-game (random, human) reference as normalisers; None unless it covers every game."""
    if not suite.reference or any(game not in suite.reference for game in games):
        return None
    return {game: reference.Normaliser(*map(float, suite.reference[game])) for game in games}


# --- Reading inputs -------------------------------------------------------------------------------


def _where(path: Path | str, row: int | None = None, column: str | None = None) -> str:
    text = str(path)
    if row is not None:
        text += f", row {row}"
    if column is not None:
        text += f", column '{column}'"
    return text


def _game_error(path: Path, row: int, column: str, game: str, suite: SuiteInfo) -> InputError:
    close = difflib.get_close_matches(game.lower(), suite.games, n=1)
    hint = (
        f"; did you mean {close[0]!r}?"
        if close
        else f" ({len(suite.games)} games: {', '.join(suite.games[:4])}, …)"
    )
    return InputError(f"{_where(path, row, column)}: {game!r} is not a game of suite {suite.name}{hint}")


class _CsvRows:
    """Rows of a CSV file as dicts, with header checks and the file row of each (header = row 1)."""

    def __init__(self, path: Path, required: Sequence[str]):
        self.path = path
        try:
            with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets write a BOM
                self._text = f.read()
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: cannot read ({error})") from None
        self._reader = csv.reader(io.StringIO(self._text))
        header = next(self._reader, None)
        if header is None:
            raise InputError(
                f"{_where(path, 1)}: empty file; expected a header with columns {', '.join(required)}"
            )
        self.columns = [name.strip().lower() for name in header]
        for name in self.columns:
            if self.columns.count(name) > 1:
                raise InputError(f"{_where(path, 1, name)}: column appears twice in the header")
        for name in required:
            if name not in self.columns:
                have = ", ".join(self.columns)
                raise InputError(f"{_where(path, 1, name)}: missing required column (header has: {have})")

    def __iter__(self):
        for fields in self._reader:
            row = self._reader.line_num
            if not any(value.strip() for value in fields):
                continue
            if len(fields) != len(self.columns):
                raise InputError(
                    f"{_where(self.path, row)}: {len(fields)} fields, header has {len(self.columns)}"
                )
            yield row, {name: value.strip() for name, value in zip(self.columns, fields, strict=True)}

    def number(self, row: int, values: dict[str, str], column: str, *, integer: bool = False) -> float:
        text = values[column]
        try:
            value = float(text)
        except ValueError:
            raise InputError(f"{_where(self.path, row, column)}: {text!r} is not a number") from None
        if not math.isfinite(value):
            raise InputError(f"{_where(self.path, row, column)}: non-finite value {text!r}")
        if integer and value != int(value):
            raise InputError(f"{_where(self.path, row, column)}: {text!r} is not an integer")
        return value


def _protocol(text: str | None, where: str, valid: Sequence[str]) -> str:
    if text in (None, ""):
        return UNSPECIFIED
    if text not in valid:
        raise InputError(f"{where}: unknown protocol {text!r}; valid: {', '.join(valid)}")
    return text


@dataclass
class AgentData:
    """Everything read about one agent: raw scores per game and seed, and where each came from."""

    name: str
    label: str = ""
    protocol: str | None = None
    protocol_where: str = ""
    # game -> frames trained on it, one entry per source row / run (games without a frame count are absent)
    frames: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[str, dict[int, float]] = field(default_factory=dict)  # game -> seed -> raw score
    where: dict[tuple[str, int], str] = field(default_factory=dict)
    eval_games: dict[tuple[str, int], int] = field(default_factory=dict)  # (game, seed) -> games averaged
    curves: list[tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]] = field(default_factory=list)
    is_reference: bool = False
    source: str = ""


class _Collector:
    """Merges score files and run directories into agents; rejects duplicate (agent, game, seed) rows."""

    def __init__(self, suite: SuiteInfo):
        self.suite = suite
        self.agents: dict[str, AgentData] = {}

    def agent(self, name: str) -> AgentData:
        return self.agents.setdefault(name, AgentData(name=name, label=name))

    def add(self, name: str, game: str, seed: int, score: float, where: str, column: str) -> None:
        data = self.agent(name)
        if (game, seed) in data.where:
            raise InputError(
                f"{where}, column '{column}': duplicate (agent={name!r}, game={game!r}, seed={seed}); "
                f"first given at {data.where[(game, seed)]}"
            )
        data.where[(game, seed)] = where
        data.scores.setdefault(game, {})[seed] = score

    def set_protocol(self, name: str, protocol: str, where: str) -> None:
        data = self.agent(name)
        if data.protocol is None:
            data.protocol, data.protocol_where = protocol, where
        elif data.protocol != protocol:
            raise InputError(
                f"{where}: agent {name!r} has protocol {protocol!r} here but {data.protocol!r} at "
                f"{data.protocol_where}; one agent, one protocol"
            )

    def read_score_file(self, path: Path) -> None:
        rows = _CsvRows(path, ("game", "score"))
        seen_any = False
        for row, values in rows:
            seen_any = True
            name = values.get("agent") or path.stem
            game = values["game"]
            if game not in self.suite.games:
                raise _game_error(path, row, "game", game, self.suite)
            score = rows.number(row, values, "score")
            seed = int(rows.number(row, values, "seed", integer=True)) if values.get("seed") else 0
            if values.get("frames"):
                frames = rows.number(row, values, "frames")
                if frames < 0:
                    raise InputError(
                        f"{_where(path, row, 'frames')}: negative frame count {values['frames']!r}"
                    )
                self.agent(name).frames.setdefault(game, []).append(frames)
            where = _where(path, row)
            protocol = _protocol(values.get("protocol"), f"{where}, column 'protocol'", self.suite.protocols)
            self.set_protocol(name, protocol, where)
            self.add(name, game, seed, score, where, "game")
        if not seen_any:
            raise InputError(f"{_where(path, 2)}: no score rows")

    def read_run(self, run_dir: Path, smoothing: int) -> None:
        summary_path = run_dir / "eval_summary.json"
        try:
            summary = json.loads(summary_path.read_text())
        except json.JSONDecodeError as error:
            raise InputError(f"{_where(summary_path, error.lineno)}: invalid JSON ({error.msg})") from None
        if not isinstance(summary, dict):
            raise InputError(f"{summary_path}: expected a JSON object")
        for key in ("agent", "suite", "protocol", "seed", "trained_frames"):
            if key not in summary:
                raise InputError(
                    f"{summary_path}, key '{key}': missing (run not evaluated with impala_tf.evaluate?)"
                )
        name = str(summary["agent"] or run_dir.resolve().name)
        seed, trained_frames = summary["seed"], summary["trained_frames"]
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise InputError(f"{summary_path}, key 'seed': {seed!r} is not an integer")
        if (
            not isinstance(trained_frames, int | float)
            or not math.isfinite(trained_frames)
            or trained_frames < 0
        ):
            raise InputError(f"{summary_path}, key 'trained_frames': {trained_frames!r} is not a frame count")
        protocol = _protocol(summary["protocol"], f"{summary_path}, key 'protocol'", self.suite.protocols)

        scores_path = run_dir / "eval_scores.csv"
        rows = _CsvRows(scores_path, ("task", "episode", "score", "frames"))
        per_game: dict[str, list[float]] = {}
        first_row: dict[str, int] = {}
        episodes_seen: dict[tuple[str, str], int] = {}
        for row, values in rows:
            game = values["task"]
            if game not in self.suite.games:
                raise _game_error(scores_path, row, "task", game, self.suite)
            rows.number(row, values, "frames")
            key = (game, values["episode"])
            if key in episodes_seen:
                raise InputError(
                    f"{_where(scores_path, row, 'episode')}: duplicate (task={game!r}, "
                    f"episode={values['episode']}); first given at row {episodes_seen[key]}"
                )
            episodes_seen[key] = row
            per_game.setdefault(game, []).append(rows.number(row, values, "score"))
            first_row.setdefault(game, row)
        if not per_game:
            raise InputError(f"{_where(scores_path, 2)}: no evaluation games")

        self.set_protocol(name, protocol, f"{summary_path}, key 'protocol'")
        trained_games = _trained_games(run_dir) or len(per_game)
        for game, game_scores in per_game.items():
            self.agent(name).frames.setdefault(game, []).append(trained_frames / trained_games)
            self.add(
                name, game, seed, float(np.mean(game_scores)), _where(scores_path, first_row[game]), "task"
            )
            self.agent(name).eval_games[(game, seed)] = len(game_scores)
        episodes_path = run_dir / "episodes.csv"
        if episodes_path.exists():
            self.agent(name).curves.append((seed, self._read_episodes(episodes_path, smoothing)))

    def _read_episodes(self, path: Path, smoothing: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        rows = _CsvRows(path, ("task", "frames", "episode_return"))
        by_task: dict[str, tuple[list[float], list[float]]] = {}
        for row, values in rows:
            game = values["task"]
            if game not in self.suite.games:
                raise _game_error(path, row, "task", game, self.suite)
            frames, returns = by_task.setdefault(game, ([], []))
            frames.append(rows.number(row, values, "frames"))
            returns.append(rows.number(row, values, "episode_return"))
        return {
            game: scoring.smooth_episode_returns(np.array(f), np.array(r), smoothing)
            for game, (f, r) in by_task.items()
        }


def _trained_games(run_dir: Path) -> int | None:
    """Games the run trained on (config.json's `games`); its total frames / this = frames per game."""
    try:
        games = json.loads((run_dir / "config.json").read_text()).get("games")
    except (OSError, ValueError, AttributeError):
        return None
    return len(games) if isinstance(games, list) and games else None


def _run_dirs(path: Path) -> list[Path]:
    """A run directory, the run directories directly inside a folder, or a PBT directory's best member (named in
    its pbt.json by `impala_tf.pbt`)."""
    if (path / "eval_summary.json").exists():
        return [path]
    if (path / "pbt.json").exists():
        try:
            best = path / json.loads((path / "pbt.json").read_text())["best_member"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InputError(f"{path / 'pbt.json'}: unreadable ({error})") from None
        if not (best / "eval_summary.json").exists():
            raise InputError(f"{best}: the best PBT member is not evaluated (run impala_tf.evaluate on it)")
        return [best]
    if not path.is_dir():
        raise InputError(f"{path}: no such run directory")
    inside = sorted(p for p in path.iterdir() if (p / "eval_summary.json").exists())
    if not inside:
        raise InputError(f"{path}: not a run directory (no eval_summary.json; run impala_tf.evaluate first)")
    return inside


def load_agents(
    suite: SuiteInfo, score_files: Sequence[str] = (), run_dirs: Sequence[str] = (), smoothing: int = 100
) -> list[AgentData]:
    """Reads and validates every input; raises InputError (one line) on the first bad row."""
    collector = _Collector(suite)
    for path in score_files:
        path = Path(path)
        if path.is_dir():
            raise InputError(f"{path}: is a directory; pass run directories with --runs")
        collector.read_score_file(path)
    for path in run_dirs:
        for run_dir in _run_dirs(Path(path)):
            collector.read_run(run_dir, smoothing)
    for data in collector.agents.values():
        data.source = "input"
    return list(collector.agents.values())


def _load_normaliser_file(
    path: str, suite_name: str, games: tuple[str, ...]
) -> dict[str, reference.Normaliser]:
    rows = _CsvRows(Path(path), ("game", "low", "high"))
    suite = SuiteInfo(suite_name, games, None, "")
    normalisers: dict[str, reference.Normaliser] = {}
    for row, values in rows:
        game = values["game"]
        if game not in games:
            raise _game_error(Path(path), row, "game", game, suite)
        if game in normalisers:
            raise InputError(f"{_where(path, row, 'game')}: duplicate game {game!r}")
        low, high = rows.number(row, values, "low"), rows.number(row, values, "high")
        if low == high:
            raise InputError(f"{_where(path, row, 'high')}: high equals low ({low:g}); cannot normalise")
        normalisers[game] = reference.Normaliser(low, high)
    missing = [game for game in games if game not in normalisers]
    if missing:
        raise InputError(
            f"{path}: no normaliser for {', '.join(missing)} (it must cover every game of {suite_name})"
        )
    return normalisers


def reference_agent_data(suite: SuiteInfo, sets: Sequence[str]) -> tuple[list[AgentData], list[str]]:
    """The published rows restricted to the suite's games, and notes on sets that cover none of them."""
    agents, notes = [], []
    if sets and suite.backend != "atari":
        return [], [f"reference rows ({', '.join(sets)}) skipped: suite {suite.name} is not an Atari suite"]
    for set_name in sets:
        for ref in reference.reference_agents(set_name):
            games = [game for game in suite.games if game in ref.scores]
            if not games:
                notes.append(f"reference {set_name} skipped: it covers no game of suite {suite.name}")
                break
            agents.append(
                AgentData(
                    name=ref.agent,
                    label=ref.label,
                    protocol=ref.protocol,
                    frames={game: [float(ref.frames_per_game)] for game in games},
                    scores={game: {0: ref.scores[game]} for game in games},
                    is_reference=True,
                    source=ref.source,
                )
            )
    return agents, notes


def parse_reference_flag(values: Sequence[str]) -> list[str]:
    sets = [value.strip() for value in values if value.strip()]
    for value in sets:
        if value not in REFERENCE_CHOICES:
            raise InputError(f"--reference: unknown value {value!r}; valid: {', '.join(REFERENCE_CHOICES)}")
    if "none" in sets and len(sets) > 1:
        raise InputError("--reference: 'none' cannot be combined with other reference sets")
    return [value for value in sets if value != "none"]
