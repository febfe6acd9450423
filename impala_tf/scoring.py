"""Human-normalised scores, their aggregates over games, and stratified-bootstrap uncertainty.

Pure numpy/scipy, no I/O. Conventions follow rliable (Agarwal et al. 2021, "Deep RL at the Edge of the
Statistical Precipice"):

- A score matrix is `[R, G]`: R runs (seeds) by G games. A game may have fewer runs than R; its missing
  entries are NaN (a "ragged" matrix). Every game needs at least one finite entry.
- median / mean: average each game over its runs first, then aggregate across games.
- IQM: the 25 %-trimmed mean of all run×game entries (`scipy.stats.trim_mean(x.flatten(), 0.25)`).
- Uncertainty: a stratified bootstrap resamples runs with replacement independently within each game and
  reports percentile intervals.

Every aggregate accepts extra leading dimensions `[..., R, G]` so that a bootstrap of N resamples is one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np

HUMAN_LEVEL = 100.0  # HNS in percent; a game is "above human" at HNS >= 100


def normalised_score(
    score: np.ndarray | float, low: np.ndarray | float, high: np.ndarray | float
) -> np.ndarray:
    """100 · (score − low) / (high − low), broadcasting; `low`, `high` per game (the trailing axis)."""
    low = np.asarray(low, dtype=np.float64)
    high = np.asarray(high, dtype=np.float64)
    if np.any(high == low):
        raise ValueError("normaliser has high == low for some game; the normalised score is undefined")
    return 100.0 * (np.asarray(score, dtype=np.float64) - low) / (high - low)


def human_normalised_score(
    score: np.ndarray | float, random: np.ndarray | float, human: np.ndarray | float
) -> np.ndarray:
    """Human-normalised score (HNS) in percent: 100 · (score − random) / (human − random).

    Mnih et al. 2015 (DQN), Methods "Evaluation procedure"; the normalisation of the IMPALA paper's Table 4.
    0 % is the uniformly random policy, 100 % the professional human tester.
    """
    return normalised_score(score, random, human)


# --- Aggregates over games: scores [..., R, G] -> [...] -------------------------------------------


def per_game_means(scores: np.ndarray) -> np.ndarray:
    """[..., R, G] -> [..., G]: each game's mean over its (finite) runs."""
    return np.nanmean(scores, axis=-2)


def median(scores: np.ndarray) -> np.ndarray:
    """Median over games of the per-game mean over runs (rliable `aggregate_median`)."""
    return np.median(per_game_means(scores), axis=-1)


def mean(scores: np.ndarray) -> np.ndarray:
    """Mean over games of the per-game mean over runs (rliable `aggregate_mean`)."""
    return np.mean(per_game_means(scores), axis=-1)


def capped_mean(scores: np.ndarray, cap: float = HUMAN_LEVEL) -> np.ndarray:
    """Mean over games of the per-game mean of min(score, cap).

    Capping each run before averaging makes this `cap − optimality gap` of rliable (`aggregate_optimality_gap`
    with gamma = cap) whenever every game has the same number of runs; superhuman outliers count as 100 %.
    """
    return np.mean(np.nanmean(np.minimum(scores, cap), axis=-2), axis=-1)


def interquartile_mean(scores: np.ndarray) -> np.ndarray:
    """IQM: mean of the middle 50 % of all run×game entries (rliable `aggregate_iqm`).

    Matches `scipy.stats.trim_mean(x.flatten(), 0.25)`: with n entries, int(n / 4) are cut from each end.
    NaN (missing runs) are ignored; every element of the leading batch must have the same number of finite
    entries, which a stratified bootstrap guarantees.
    """
    flat = np.reshape(scores, scores.shape[:-2] + (-1,))
    counts = np.sum(np.isfinite(flat), axis=-1)
    n = int(np.max(counts)) if counts.size else 0
    if n == 0 or np.any(counts != n):
        raise ValueError(
            "interquartile_mean needs the same, non-zero number of finite entries in every batch row"
        )
    cut = int(0.25 * n)
    ordered = np.sort(flat, axis=-1)  # NaN sort last, so the finite entries are ordered[..., :n]
    return np.mean(ordered[..., cut : n - cut], axis=-1)


def games_above(scores: np.ndarray, threshold: float = HUMAN_LEVEL) -> np.ndarray:
    """Number of games whose per-game mean over runs is >= threshold (default: human level, 100 %)."""
    return np.sum(per_game_means(scores) >= threshold, axis=-1)


AGGREGATES: Mapping[str, Callable[[np.ndarray], np.ndarray]] = {
    "median": median,
    "iqm": interquartile_mean,
    "mean": mean,
    "capped_mean": capped_mean,
}


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Score distribution: fraction of run×game entries with score > τ (rliable `score_distributions`).

    scores: [..., R, G] (NaN = missing run, ignored);  taus: [K]  ->  [..., K].
    """
    flat = np.reshape(scores, scores.shape[:-2] + (-1,))
    finite = np.isfinite(flat)
    above = (flat[..., None] > np.asarray(taus, dtype=np.float64)) & finite[..., None]
    return np.sum(above, axis=-2) / np.sum(finite, axis=-1)[..., None]


# --- Stratified bootstrap -------------------------------------------------------------------------


def _check_matrix(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a [runs, games] matrix, got shape {scores.shape}")
    if scores.shape[1] == 0:
        raise ValueError("scores must cover at least one game")
    if np.any(np.isinf(scores)):
        raise ValueError("scores must be finite (NaN marks a missing run)")
    if np.any(np.all(np.isnan(scores), axis=0)):
        raise ValueError("every game needs at least one finite run score")
    return scores


def stratified_bootstrap(
    scores: np.ndarray, num_resamples: int, rng: np.random.Generator, chunk_size: int = 1000
) -> Iterator[np.ndarray]:
    """Yields resampled score matrices [chunk, R, G], num_resamples in total.

    Within each game its n_g finite runs are drawn n_g times with replacement, independently of every other
    game (rliable `StratifiedBootstrap` without task bootstrap); the rest of the column stays NaN.
    """
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}")
    scores = _check_matrix(scores)
    num_runs, num_games = scores.shape
    columns = [column[np.isfinite(column)] for column in scores.T]
    done = 0
    while done < num_resamples:
        size = min(chunk_size, num_resamples - done)
        resampled = np.full((size, num_runs, num_games), np.nan)
        for game, runs in enumerate(columns):
            picks = rng.integers(0, len(runs), size=(size, len(runs)))
            resampled[:, : len(runs), game] = runs[picks]
        done += size
        yield resampled


class IntervalEstimate(NamedTuple):
    point: float
    low: float
    high: float


def interval_estimates(
    scores: np.ndarray,
    aggregates: Mapping[str, Callable[[np.ndarray], np.ndarray]] = AGGREGATES,
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, IntervalEstimate]:
    """Point estimates and percentile stratified-bootstrap confidence intervals for each aggregate.

    scores: [R, G] (NaN = missing run). All aggregates share the same resamples. With one run per game every
    resample equals the data, so each interval collapses to its point estimate.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    scores = _check_matrix(scores)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[np.ndarray]] = {name: [] for name in aggregates}
    for resampled in stratified_bootstrap(scores, num_resamples, rng):
        for name, aggregate in aggregates.items():
            samples[name].append(np.asarray(aggregate(resampled), dtype=np.float64))
    tail = 100.0 * (1.0 - confidence) / 2.0
    estimates = {}
    for name, aggregate in aggregates.items():
        low, high = np.percentile(np.concatenate(samples[name]), [tail, 100.0 - tail])
        estimates[name] = IntervalEstimate(float(aggregate(scores)), float(low), float(high))
    return estimates


def performance_profile_bands(
    scores: np.ndarray,
    taus: np.ndarray,
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Performance profile [K] and its lower and upper percentile bootstrap bands [K] (rliable: 2000)."""
    scores = _check_matrix(scores)
    rng = np.random.default_rng(seed)
    resampled_profiles = np.concatenate(
        [
            performance_profile(resampled, taus)
            for resampled in stratified_bootstrap(scores, num_resamples, rng)
        ]
    )
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(resampled_profiles, [tail, 100.0 - tail], axis=0)
    return performance_profile(scores, taus), low, high


def per_game_intervals(
    scores: np.ndarray, *, num_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each game's mean over runs [G] and the percentile bootstrap interval of it (low [G], high [G])."""
    scores = _check_matrix(scores)
    rng = np.random.default_rng(seed)
    means = np.concatenate([per_game_means(r) for r in stratified_bootstrap(scores, num_resamples, rng)])
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    return per_game_means(scores), low, high


def difference_interval(
    candidate: np.ndarray,
    baseline: np.ndarray,
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(candidate) − mean(baseline).

    candidate: [N] one score per seed; baseline: [M]. Each side's seeds are resampled with replacement,
    independently of the other's (the two agents were trained apart). With one seed on both sides every resample
    equals the data, so the interval collapses to the point.
    """
    candidate = np.asarray(candidate, dtype=np.float64)
    baseline = np.asarray(baseline, dtype=np.float64)
    if candidate.size == 0 or baseline.size == 0:
        raise ValueError("each side needs at least one seed")
    rng = np.random.default_rng(seed)

    def resampled_means(runs: np.ndarray) -> np.ndarray:  # [num_resamples]: one side's bootstrap of its mean
        resamples = stratified_bootstrap(runs[:, None], num_resamples, rng)
        return np.concatenate([per_game_means(r)[:, 0] for r in resamples])

    differences = resampled_means(candidate) - resampled_means(baseline)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(differences, [tail, 100.0 - tail])
    return float(low), float(high)


# --- Learning curves ------------------------------------------------------------------------------


def smooth_episode_returns(
    frames: np.ndarray, episode_returns: np.ndarray, window: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Trailing mean of the last `window` episode returns, ordered by the frame at which each episode ended.

    frames, episode_returns: [E]  ->  (frames sorted [E], smoothed returns [E]). Early points average over the
    episodes seen so far, so the curve starts at the first episode instead of after `window` of them.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    frames = np.asarray(frames, dtype=np.float64)
    episode_returns = np.asarray(episode_returns, dtype=np.float64)
    if frames.shape != episode_returns.shape or frames.ndim != 1:
        raise ValueError("frames and episode_returns must be 1-D arrays of the same length")
    order = np.argsort(frames, kind="stable")
    frames, episode_returns = frames[order], episode_returns[order]
    cumulative = np.concatenate([[0.0], np.cumsum(episode_returns)])
    ends = np.arange(1, len(frames) + 1)
    starts = np.maximum(ends - window, 0)
    return frames, (cumulative[ends] - cumulative[starts]) / (ends - starts)


def mean_curve_on_grid(curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """Average of several runs' curves (x [E_i] increasing, y [E_i]) at the points `grid` [K] -> [K].

    Each run is linearly interpolated inside its own frame range and missing (NaN) outside it; a grid point
    without any run is NaN.
    """
    grid = np.asarray(grid, dtype=np.float64)
    values = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        if len(x) == 0:
            continue
        inside = (grid >= x[0]) & (grid <= x[-1])
        values[i, inside] = np.interp(grid[inside], x, y)
    counts = np.sum(np.isfinite(values), axis=0)
    totals = np.nansum(values, axis=0)
    return np.where(counts > 0, totals / np.maximum(counts, 1), np.nan)


def normalised_suite_curve(
    per_game: Mapping[str, tuple[np.ndarray, np.ndarray]],
    normalisers: Mapping[str, tuple[float, float]],
    grid: np.ndarray,
    aggregate: Callable[..., np.ndarray] = np.mean,
) -> np.ndarray:
    """One run's aggregate over games of its normalised curves at `grid` [K] -> [K].

    per_game: game -> (frames [E] increasing, returns [E]); each curve is held constant before its first and
    after its last point (np.interp), normalised by `normalisers[game]` = (low, high), and the games are
    combined with `aggregate(..., axis=0)` (mean or median).
    """
    values = [
        normalised_score(np.interp(grid, frames, returns), *normalisers[game])
        for game, (frames, returns) in per_game.items()
    ]
    return aggregate(np.array(values), axis=0)
