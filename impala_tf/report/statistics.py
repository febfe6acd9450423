"""Leaderboard statistics: each agent's scores as matrices and aggregates, the ranked board with its warnings,
and the regression guard's comparison.

Statistics follow rliable (Agarwal et al. 2021): median and mean of per-game means over seeds, IQM over all
seed×game entries, 95 % stratified-bootstrap percentile intervals where an agent has two or more seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from impala_tf import reference, scoring
from impala_tf.report.inputs import (
    PROTOCOLS,
    UNSPECIFIED,
    AgentData,
    InputError,
    SuiteInfo,
    reference_agent_data,
)

AGGREGATE_LABELS = {"median": "median", "iqm": "IQM", "mean": "mean", "capped_mean": "capped mean"}
CHECKED_AGGREGATES = ("median", "iqm", "capped_mean")  # the mean is dominated by outliers; not a useful guard
FRAMES_TOLERANCE = 0.1  # frame budgets within 10 % of each other count as the same budget


# --- The leaderboard ------------------------------------------------------------------------------


@dataclass
class AgentResult:
    name: str
    label: str
    protocol: str
    frames: float | None  # frames per game: the median of game_frames' values; None when not given
    is_reference: bool
    source: str
    games: list[str]  # covered games, in suite order
    seeds: list[int]
    raw: np.ndarray  # [R, G] raw scores, NaN where a seed did not play a game
    normalised: np.ndarray | None  # [R, G] HNS in percent (None without normalisers)
    estimates: dict[str, scoring.IntervalEstimate] | None  # aggregates; low/high NaN with a single seed
    games_above_human: int | None
    curves: list[tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]]
    warnings: list[str] = field(default_factory=list)
    # game -> (fewest, most) evaluation games over seeds; None where the input does not say (score files,
    # reference rows) for any of the agent's scores.
    eval_games: dict[str, tuple[int, int]] | None = None
    # game -> frames trained on it (median over seeds and sources); games without a frame count are absent
    game_frames: dict[str, float] = field(default_factory=dict)

    @property
    def has_intervals(self) -> bool:
        return len(self.seeds) >= 2

    @property
    def eval_games_range(self) -> tuple[int, int] | None:
        """(fewest, most) evaluation games per task over every game and seed; None when unknown."""
        if not self.eval_games:
            return None
        lows, highs = zip(*self.eval_games.values(), strict=True)
        return min(lows), max(highs)

    @property
    def frames_range(self) -> tuple[float, float] | None:
        """(smallest, largest) frames per game over the agent's games; None when no game has a count."""
        if not self.game_frames:
            return None
        return min(self.game_frames.values()), max(self.game_frames.values())

    @property
    def mixed_frames(self) -> bool:
        """Whether the agent's games were trained for different budgets (beyond FRAMES_TOLERANCE)."""
        return self.frames_range is not None and not _same_budget(*self.frames_range)

    @property
    def seeds_range(self) -> tuple[int, int]:
        """(fewest, most) seeds over the agent's games."""
        counts = np.sum(np.isfinite(self.raw), axis=0)
        return (int(counts.min()), int(counts.max())) if counts.size else (0, 0)

    def game_means(self, normalised: bool) -> dict[str, float]:
        matrix = self.normalised if normalised else self.raw
        return dict(zip(self.games, scoring.per_game_means(matrix).tolist(), strict=True))


@dataclass
class Leaderboard:
    suite: SuiteInfo
    agents: list[AgentResult]  # ranked by median (normalised when possible)
    notes: list[str]
    num_resamples: int
    bootstrap_seed: int
    protocol_baseline: str | None = None
    frames_baseline: float | None = None


def agent_result(data: AgentData, suite: SuiteInfo, num_resamples: int, seed: int) -> AgentResult:
    """One agent's scores as [seeds, games] matrices with its aggregates (intervals only with >= 2 seeds and
    num_resamples > 0)."""
    games = [game for game in suite.games if game in data.scores]
    seeds = sorted({s for game in games for s in data.scores[game]})
    raw = np.full((len(seeds), len(games)), np.nan)
    for j, game in enumerate(games):
        for s, score in data.scores[game].items():
            raw[seeds.index(s), j] = score
    normalised = estimates = above = None
    if suite.normalisers is not None:
        low = np.array([suite.normalisers[game].low for game in games])
        high = np.array([suite.normalisers[game].high for game in games])
        normalised = scoring.normalised_score(raw, low, high)
        if len(seeds) >= 2 and num_resamples > 0:
            estimates = scoring.interval_estimates(normalised, num_resamples=num_resamples, seed=seed)
        else:
            estimates = {
                name: scoring.IntervalEstimate(float(aggregate(normalised)), math.nan, math.nan)
                for name, aggregate in scoring.AGGREGATES.items()
            }
        above = int(scoring.games_above(normalised))
    game_frames = {game: float(np.median(data.frames[game])) for game in games if data.frames.get(game)}
    frames = float(np.median(list(game_frames.values()))) if game_frames else None
    eval_games: dict[str, tuple[int, int]] | None = None
    counts = {game: [data.eval_games.get((game, s)) for s in data.scores[game]] for game in games}
    if games and all(n is not None for values in counts.values() for n in values):
        eval_games = {game: (min(values), max(values)) for game, values in counts.items()}
    return AgentResult(
        name=data.name,
        label=data.label or data.name,
        protocol=data.protocol or UNSPECIFIED,
        frames=frames,
        is_reference=data.is_reference,
        source=data.source,
        games=games,
        seeds=seeds,
        raw=raw,
        normalised=normalised,
        estimates=estimates,
        games_above_human=above,
        curves=data.curves,
        eval_games=eval_games,
        game_frames=game_frames,
    )


def _modal(values: Sequence[Any], preference: Sequence[Any] = ()) -> Any:
    """Most common value; ties go to the earliest in `preference`, then to the earliest seen."""
    counts: dict[Any, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    order = {value: i for i, value in enumerate(preference)}
    seen = {value: i for i, value in reversed(list(enumerate(values)))}
    return min(counts, key=lambda v: (-counts[v], order.get(v, len(order)), seen[v]))


def _same_budget(a: float, b: float) -> bool:
    return abs(a - b) <= FRAMES_TOLERANCE * max(a, b)


def _budget_classes(frames: Sequence[float]) -> list[float]:
    """Each budget replaced by the first one seen within FRAMES_TOLERANCE of it, so that runs stopped a few
    frames apart (10,000,640 and 10,001,280) count as one budget when the table's baseline is chosen."""
    seen: list[float] = []
    classes = []
    for f in frames:
        match = next((s for s in seen if _same_budget(f, s)), None)
        if match is None:
            seen.append(match := f)
        classes.append(match)
    return classes


def _add_warnings(board: Leaderboard) -> None:
    """A visible warning on each row whose protocol, frame budget or coverage differs from the table's."""
    agents = board.agents
    basis = [a for a in agents if not a.is_reference] or agents  # submitted agents set the baseline
    if len({a.protocol for a in agents}) > 1:
        known = [a.protocol for a in basis if a.protocol != UNSPECIFIED]
        known = known or [a.protocol for a in agents if a.protocol != UNSPECIFIED]
        board.protocol_baseline = _modal(known, PROTOCOLS)
        for a in agents:
            if a.protocol == UNSPECIFIED:
                a.warnings.append("protocol unspecified")
            elif a.protocol != board.protocol_baseline:
                a.warnings.append(f"protocol {a.protocol} ≠ {board.protocol_baseline}")
    all_known = [f for a in agents for f in a.game_frames.values()]
    unknown = {a.name for a in agents if len(a.game_frames) < len(a.games)}  # some games without a count
    if all_known and (any(not _same_budget(f, all_known[0]) for f in all_known) or unknown):
        known = [f for a in basis for f in a.game_frames.values()] or all_known
        board.frames_baseline = _modal(_budget_classes(known))
        for a in agents:
            if not a.game_frames:
                a.warnings.append("frames unknown")
                continue
            if a.name in unknown:
                a.warnings.append(
                    f"frames unknown on {len(a.games) - len(a.game_frames)}/{len(a.games)} games"
                )
            if not all(_same_budget(f, board.frames_baseline) for f in a.game_frames.values()):
                a.warnings.append(
                    f"frames {format_frames_range(a.frames_range)} ≠ {format_frames(board.frames_baseline)}"
                )
    coverage = {len(a.games) for a in agents}
    if len(coverage) > 1 or (agents and max(coverage) < len(board.suite.games)):
        for a in agents:
            if len(a.games) < len(board.suite.games):
                a.warnings.append(f"aggregates over {len(a.games)}/{len(board.suite.games)} games")


def build_leaderboard(
    suite: SuiteInfo,
    agents: Sequence[AgentData],
    references: Sequence[str] = ("impala_paper",),
    *,
    num_resamples: int = 10_000,
    bootstrap_seed: int = 0,
) -> Leaderboard:
    """Scores every agent (inputs first, then the reference rows) and ranks them by median."""
    reference_rows, notes = reference_agent_data(suite, references)
    taken = {data.name for data in agents}
    for data in reference_rows:
        if data.name in taken:
            raise InputError(f"agent name {data.name!r} is taken by a reference row; rename the agent")
    all_agents = [*agents, *reference_rows]
    if not all_agents:
        raise InputError("nothing to score: give --scores or --runs, or --reference rows")
    results = [agent_result(data, suite, num_resamples, bootstrap_seed) for data in all_agents]

    def rank_key(result: AgentResult) -> tuple[float, str]:
        if result.estimates is not None:
            return (-result.estimates["median"].point, result.name)
        return (-float(np.mean(scoring.per_game_means(result.raw))), result.name)

    results.sort(key=rank_key)
    board = Leaderboard(suite, results, notes, num_resamples, bootstrap_seed)
    _add_warnings(board)
    return board


def format_frames_range(frames: tuple[float, float] | None) -> str:
    """Frames per game as "10M", or "10M–20M" (smallest–largest) when an agent's games had different budgets."""
    if frames is None:
        return format_frames(None)
    low, high = frames
    return format_frames(low) if _same_budget(low, high) else f"{format_frames(low)}–{format_frames(high)}"


def format_frames(frames: float | None) -> str:
    if frames is None:
        return "—"
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if frames >= scale:
            return f"{frames / scale:.3g}{suffix}"
    return f"{frames:.0f}"


# --- Published small-budget points (for orientation, not ranked) -----------------------------------


# Published single-game points (`reference.atari_published_small_budget`): agent -> (label, marker, source).
PUBLISHED_AGENTS = {
    "rllib_impala": ("RLlib IMPALA", "*", "ray-project/rl-experiments atari-impala/ (32 workers × 5 envs)"),
    "a2c": ("A2C", "s", "Schulman et al. 2017 (arXiv 1707.06347), Table 6"),
    "ppo": ("PPO", "^", "Schulman et al. 2017 (arXiv 1707.06347), Table 6"),
}


def published_label(agent: str) -> str:
    return PUBLISHED_AGENTS.get(agent, (agent, "o", ""))[0]


def published_points(board: Leaderboard) -> list[reference.PublishedPoint]:
    """The published small-budget points of the games the board's own impala-protocol agents played, in suite
    order. Atari suites only (MinAtar reuses the game names); they are no-sticky-action numbers, so not beside
    machado-protocol (or unspecified) agents; reference rows alone bring none."""
    if board.suite.backend != "atari":
        return []
    games = set()
    for a in board.agents:
        if not a.is_reference and a.protocol == "impala":
            games.update(a.games)
            games.update(game for _, curves in a.curves for game in curves)
    order = {game: i for i, game in enumerate(board.suite.games)}
    points = [p for p in reference.atari_published_small_budget() if p.game in games]
    return sorted(points, key=lambda p: order[p.game])


# --- Regression guard -----------------------------------------------------------------------------


def check_regression(
    baseline: AgentResult,
    candidate: AgentResult,
    tolerance: float,
    *,
    num_resamples: int = 2000,
    seed: int = 0,
) -> list[str]:
    """Games and aggregates on which the candidate dropped beyond `tolerance`; empty when it did not.

    With normalisers, scores and the tolerance are in normalised points; without, per-game raw scores are
    compared and the tolerance is a percentage of the baseline's absolute score (and aggregates skipped).
    A drop counts only when the candidate's upper 95 % bound (its point estimate with a single seed) lies
    below the baseline's point estimate minus the tolerance.
    """
    normalised = baseline.normalised is not None
    failures = [
        f"game {game}: missing from the candidate" for game in baseline.games if game not in candidate.games
    ]
    games = [game for game in baseline.games if game in candidate.games]
    if not games:
        return [*failures, "no game in common between baseline and candidate"]

    def columns(result: AgentResult) -> np.ndarray:
        matrix = result.normalised if normalised else result.raw
        picked = matrix[:, [result.games.index(game) for game in games]]
        return picked[~np.all(np.isnan(picked), axis=1)]

    base, cand = columns(baseline), columns(candidate)
    base_means = scoring.per_game_means(base)
    if len(candidate.seeds) >= 2:
        cand_means, _, cand_upper = scoring.per_game_intervals(cand, num_resamples=num_resamples, seed=seed)
    else:
        cand_means = cand_upper = scoring.per_game_means(cand)
    unit = "%" if normalised else ""
    for j, game in enumerate(games):
        allowed = tolerance if normalised else tolerance / 100.0 * max(abs(base_means[j]), 1e-9)
        if cand_upper[j] < base_means[j] - allowed:
            failures.append(
                f"game {game}: candidate {cand_means[j]:.1f}{unit} (upper bound {cand_upper[j]:.1f}) "
                f"< baseline "
                f"{base_means[j]:.1f}{unit} − {allowed:.1f}"
            )
    if normalised:
        checked = {name: scoring.AGGREGATES[name] for name in CHECKED_AGGREGATES}
        if len(candidate.seeds) >= 2:
            cand_estimates = scoring.interval_estimates(cand, checked, num_resamples=num_resamples, seed=seed)
        else:
            cand_estimates = {
                name: scoring.IntervalEstimate(*(3 * [float(f(cand))])) for name, f in checked.items()
            }
        for name, aggregate in checked.items():
            base_point = float(aggregate(base))
            estimate = cand_estimates[name]
            if estimate.high < base_point - tolerance:
                failures.append(
                    f"aggregate {name}: candidate {estimate.point:.1f}% (upper bound {estimate.high:.1f}) < "
                    f"baseline {base_point:.1f}% − {tolerance:.1f} over {len(games)} games"
                )
    return failures
