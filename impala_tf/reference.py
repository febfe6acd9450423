"""Published reference scores shipped with the package (impala_tf/data/, provenance in data/README.md).

- `atari57_human_random()`: per-game (random, human) scores of the 57 Atari games — dqn_zoo `atari_data.py`.
- `reference_agents("impala_paper")`: IMPALA Table C.1 (Espeholt et al. 2018, arXiv 1802.01561, Appendix C):
  shallow experts, deep experts, deep multi-task; 200M frames per game, up to 30 no-op starts.
- `reference_agents("machado_repro")`: Monobeast, Moolib and Cleanba reproductions under the Machado et al.
  2018 protocol (sticky actions 0.25, full action set, 200M frames) — vwxyzjn/cleanba
  `static/cleanba/main_10CPU.csv`.

- `minatar_published(algorithm)`: MinAtar's AC(λ=0.8) and DQN at 5M frames per game (Young & Tian 2019),
  read off the published learning-curve figure (about ±10 %).
- `atari_published_small_budget()`: single-game Atari points at 10M-40M frames (RLlib's IMPALA, A2C, PPO).

Scores under the two protocols are not comparable; every reference agent carries its protocol.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

REFERENCE_SETS = ("impala_paper", "machado_repro")


class Normaliser(NamedTuple):
    """Per-game scores mapped to 0 % and 100 % (for Atari: the random and the human score)."""

    low: float
    high: float


class ReferenceAgent(NamedTuple):
    agent: str  # column name in the data file, used as the leaderboard's agent name
    label: str
    protocol: str  # "impala" | "machado"
    frames_per_game: int
    source: str
    scores: Mapping[str, float]  # game -> raw score


_IMPALA_PAPER = "Espeholt et al. 2018 (arXiv 1802.01561), Table C.1"
_MACHADO_REPRO = "vwxyzjn/cleanba static/cleanba/main_10CPU.csv (commit d1f8979)"

# (set, data file, column = agent name, label)
_REFERENCE_COLUMNS = (
    ("impala_paper", "impala_paper_atari57.csv", "impala_shallow_experts", "IMPALA shallow, experts (paper)"),
    ("impala_paper", "impala_paper_atari57.csv", "impala_deep_experts", "IMPALA deep, experts (paper)"),
    ("impala_paper", "impala_paper_atari57.csv", "impala_deep_multitask", "IMPALA deep, multi-task (paper)"),
    ("machado_repro", "reproductions_machado_atari57.csv", "monobeast_impala", "Monobeast IMPALA"),
    ("machado_repro", "reproductions_machado_atari57.csv", "moolib_impala", "Moolib IMPALA"),
    ("machado_repro", "reproductions_machado_atari57.csv", "cleanba_impala", "Cleanba IMPALA"),
)
_SET_PROTOCOL = {"impala_paper": "impala", "machado_repro": "machado"}
_SET_SOURCE = {"impala_paper": _IMPALA_PAPER, "machado_repro": _MACHADO_REPRO}
_FRAMES_PER_GAME = 200_000_000  # every reference row: 200M frames (the multi-task agent: 57 × 200M = 11.4B)


@functools.cache
def _read_table(name: str) -> tuple[dict[str, str], ...]:
    # Beside this module rather than importlib.resources: the editable install maps impala_tf as a namespace
    # package, for which resources.files() fails outside the repository.
    text = (Path(__file__).parent / "data" / name).read_text()
    return tuple(csv.DictReader(io.StringIO(text)))


def atari57_games() -> tuple[str, ...]:
    """The 57 games as ale-py ROM ids, in the package's (alphabetical) order."""
    return tuple(row["game"] for row in _read_table("atari57_envs.csv"))


def atari57_human_random() -> dict[str, Normaliser]:
    """game -> Normaliser(low=random score, high=human score), for the 57 games."""
    return {
        row["game"]: Normaliser(float(row["random"]), float(row["human"]))
        for row in _read_table("atari57_human_random.csv")
    }


def reference_agents(name: str) -> list[ReferenceAgent]:
    """The published agents of one reference set: "impala_paper" or "machado_repro"."""
    if name not in REFERENCE_SETS:
        raise ValueError(f"unknown reference set {name!r}; valid: {', '.join(REFERENCE_SETS)}")
    agents = []
    for set_name, file_name, column, label in _REFERENCE_COLUMNS:
        if set_name != name:
            continue
        scores = {row["game"]: float(row[column]) for row in _read_table(file_name)}
        agents.append(
            ReferenceAgent(column, label, _SET_PROTOCOL[name], _FRAMES_PER_GAME, _SET_SOURCE[name], scores)
        )
    return agents


MINATAR_ALGORITHMS = ("ac_lambda_0.8", "dqn")


def minatar_published(algorithm: str = "ac_lambda_0.8") -> dict[str, float]:
    """game -> a published MinAtar baseline's score at 5M frames: the mean return of the last 100 training
    episodes (30 seeds), read off Young & Tian 2019's figure (about ±10 %); provenance in data/README.md."""
    if algorithm not in MINATAR_ALGORITHMS:
        raise ValueError(f"unknown MinAtar baseline {algorithm!r}; valid: {', '.join(MINATAR_ALGORITHMS)}")
    return {
        row["game"]: float(row["score"])
        for row in _read_table("minatar_published.csv")
        if row["algorithm"] == algorithm
    }


class PublishedPoint(NamedTuple):
    game: str
    agent: str
    frames: int
    score: float
    protocol: str
    how: str


def atari_published_small_budget() -> list[PublishedPoint]:
    """Single-game Atari scores at 10M-40M frames, for orientation on training curves (data/README.md)."""
    return [
        PublishedPoint(r["game"], r["agent"], int(r["frames"]), float(r["score"]), r["protocol"], r["how"])
        for r in _read_table("atari_published_small_budget.csv")
    ]
