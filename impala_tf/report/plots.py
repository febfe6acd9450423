"""Every report's plots (matplotlib, imported lazily: JSON output and `check` never plot).

Leaderboard plots return base64 PNG text for report.html; the transfer plots return PNG bytes for a file. Both
go through `writers.png_bytes`, which leaves out matplotlib's version stamp so regenerated reports diff clean.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from impala_tf import reference, scoring, writers
from impala_tf.report.statistics import (
    AGGREGATE_LABELS,
    FRAMES_TOLERANCE,
    PUBLISHED_AGENTS,
    Leaderboard,
    format_frames,
    published_label,
    published_points,
)
from impala_tf.report.transfer import ExpertsComparison, TransferMatrix, percent

PROFILE_TAUS = np.linspace(0.0, 800.0, 161)  # HNS thresholds in percent (rliable's Atari plots: 0–8 × human)


# --- Leaderboard (report.html) ----------------------------------------------------------------------


LEARNING_CURVES = "Learning curves (episodes.csv)"


def report_plots(board: Leaderboard) -> list[tuple[str, str | None]]:
    """report.html's plots in order: (title, base64 PNG), None where a plot does not apply."""
    import matplotlib

    matplotlib.use("Agg")
    return [
        ("Aggregates with 95 % intervals", plot_aggregates(board) if board.suite.normalisers else None),
        ("Performance profiles", plot_profiles(board) if board.suite.normalisers else None),
        ("Per-game scores", plot_per_game(board)),
        (LEARNING_CURVES, plot_learning_curves(board)),
    ]


def _png(figure: Any) -> str:
    return base64.b64encode(writers.png_bytes(figure, dpi=72)).decode("ascii")


def _colours(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_per_game(board: Leaderboard) -> str:
    import matplotlib.pyplot as plt

    normalised = board.suite.normalisers is not None
    games = board.suite.games
    agents = board.agents
    height = 0.6 + len(games) * (0.1 * len(agents) + 0.12)
    figure, axis = plt.subplots(figsize=(9, max(3.0, height)))
    bar = 0.8 / len(agents)
    for i, (a, colour) in enumerate(zip(agents, _colours(len(agents)), strict=True)):
        means = a.game_means(normalised)
        ys = [k + i * bar for k, game in enumerate(games) if game in means]
        axis.barh(
            ys, [means[game] for game in games if game in means], height=bar, color=colour, label=a.name
        )
    axis.set_yticks(np.arange(len(games)) + 0.4 - bar / 2)
    axis.set_yticklabels(games)
    axis.set_ylim(len(games), -0.2)
    if normalised:
        lowest = min((min(a.game_means(True).values()) for a in agents), default=0.0)
        axis.set_xscale("symlog", linthresh=100.0)
        axis.set_xlim(left=min(-10.0, 1.5 * lowest))
        axis.axvline(100.0, color="black", linestyle="--", linewidth=0.8)
        axis.set_xlabel("normalised score % (symlog; dashed: 100 %)")
    else:
        axis.set_xlabel("raw score")
    axis.legend(loc="lower right", fontsize=7)
    figure.tight_layout()
    return _png(figure)


def plot_aggregates(board: Leaderboard) -> str:
    import matplotlib.pyplot as plt

    agents = [a for a in board.agents if a.estimates]
    figure, axes = plt.subplots(
        1, len(scoring.AGGREGATES), figsize=(12, 0.6 + 0.35 * len(agents)), sharey=True
    )
    colours = _colours(len(agents))
    for axis, name in zip(axes, scoring.AGGREGATES, strict=True):
        for k, (a, colour) in enumerate(zip(agents, colours, strict=True)):
            estimate = a.estimates[name]
            if not math.isnan(estimate.low):
                axis.plot([estimate.low, estimate.high], [k, k], color=colour, linewidth=6, alpha=0.5)
            axis.plot([estimate.point], [k], marker="|", markersize=14, color="black")
        axis.set_title(AGGREGATE_LABELS[name])
        axis.set_xlabel("%")
    axes[0].set_yticks(range(len(agents)))
    axes[0].set_yticklabels([a.name for a in agents])
    axes[0].invert_yaxis()
    figure.tight_layout()
    return _png(figure)


def plot_profiles(board: Leaderboard) -> str:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    agents = [a for a in board.agents if a.normalised is not None]
    for a, colour in zip(agents, _colours(len(agents)), strict=True):
        profile, low, high = scoring.performance_profile_bands(
            a.normalised,
            PROFILE_TAUS,
            num_resamples=min(board.num_resamples, 2000),
            seed=board.bootstrap_seed,
        )
        axis.plot(PROFILE_TAUS, profile, color=colour, label=a.name)
        if a.has_intervals:
            axis.fill_between(PROFILE_TAUS, low, high, color=colour, alpha=0.2)
    axis.set_xlabel("normalised score threshold τ (%)")
    axis.set_ylabel("fraction of seed×game scores > τ")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)


def plot_learning_curves(board: Leaderboard) -> str | None:
    import matplotlib.pyplot as plt

    agents = [a for a in board.agents if a.curves]
    games = [g for g in board.suite.games if any(g in curves for a in agents for _, curves in a.curves)]
    if not games:
        return None
    columns = min(4, len(games))
    rows = math.ceil(len(games) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    colours = _colours(len(agents))
    points = published_points(board)
    published_handles: dict[str, Any] = {}
    for axis, game in zip(axes.flat, games, strict=False):
        game_top = 0.0
        for a, colour in zip(agents, colours, strict=True):
            runs = [curves[game] for _, curves in a.curves if game in curves]
            if not runs:
                continue
            top = max(float(x[-1]) for x, _ in runs)
            game_top = max(game_top, top)
            grid = np.linspace(0.0, top, 200)
            axis.plot(grid, scoring.mean_curve_on_grid(runs, grid), color=colour, label=a.name)
        _draw_published(axis, [p for p in points if p.game == game], game_top, published_handles)
        if board.suite.normalisers is not None:
            normaliser = board.suite.normalisers[game]
            axis.axhline(normaliser.low, color="grey", linestyle=":", linewidth=0.8)
            axis.axhline(normaliser.high, color="grey", linestyle="--", linewidth=0.8)
        axis.set_title(game, fontsize=9)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(games) :]:
        axis.set_visible(False)
    if published_handles:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        handles += list(published_handles.values())
        labels += list(published_handles)
        axes.flat[0].legend(handles, labels, fontsize=6)
    else:
        axes.flat[0].legend(fontsize=6)
    figure.supxlabel("frames")
    figure.supylabel("episode return (smoothed; dotted: low, dashed: high)")
    figure.tight_layout()
    return _png(figure)


def _draw_published(
    axis: Any, points: Sequence[reference.PublishedPoint], top: float, handles: dict[str, Any]
) -> None:
    """Published points on one game's curves: a labelled marker where the curves reach their frame count
    (within the budget tolerance), a note listing the ones beyond (drawing them would squeeze the curves)."""
    from matplotlib.lines import Line2D

    near = [p for p in points if p.frames <= top * (1.0 + FRAMES_TOLERANCE)]
    beyond: dict[str, list[str]] = {}
    for p in points:
        if p not in near:
            beyond.setdefault(published_label(p.agent), []).append(f"{p.score:g} @ {format_frames(p.frames)}")
    for agent in dict.fromkeys(p.agent for p in near):
        label = published_label(agent)
        marker = PUBLISHED_AGENTS.get(agent, (agent, "o", ""))[1]
        mine = [p for p in near if p.agent == agent]
        style = {"color": "black", "marker": marker, "markersize": 7, "linestyle": "none"}
        axis.plot([p.frames for p in mine], [p.score for p in mine], **style)
        for p in mine:
            axis.annotate(
                f"{label} {p.score:g}",
                (p.frames, p.score),
                textcoords="offset points",
                xytext=(-6, 0),
                ha="right",
                va="center",
                fontsize=6,
            )
        handles.setdefault(f"{label} (published)", Line2D([], [], **style))
    if beyond:
        lines = [f"{label}: {', '.join(cells)}" for label, cells in beyond.items()]
        axis.text(
            0.98,
            0.03,
            "published, beyond the axis:\n" + "\n".join(lines),
            transform=axis.transAxes,
            va="bottom",
            ha="right",
            fontsize=6,
            color="dimgray",
        )


# --- Transfer ---------------------------------------------------------------------------------------


def experts_png(comparison: ExpertsComparison) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = comparison
    difference = c.difference
    order = np.argsort(difference, kind="stable")
    figure, axis = plt.subplots(figsize=(7, 1.0 + 0.16 * len(c.games)))
    colours = [
        "tab:green" if difference[k] > 0 else ("tab:red" if difference[k] < 0 else "tab:grey") for k in order
    ]
    errors = None
    if c.has_intervals:  # the 95 % interval over seeds, as distances below and above each bar's end
        low, high = (
            np.nan_to_num(bound[order], nan=difference[order])
            for bound in (c.difference_low, c.difference_high)
        )
        errors = [difference[order] - low, high - difference[order]]
    axis.barh(
        np.arange(len(order)), difference[order], color=colours, xerr=errors, error_kw={"linewidth": 0.8}
    )
    axis.set_yticks(np.arange(len(order)))
    axis.set_yticklabels([c.games[k] for k in order], fontsize=6)
    axis.axvline(0.0, color="black", linewidth=0.8)
    if c.normalised:
        axis.set_xscale("symlog", linthresh=100.0)
    counts = c.counts
    unit = "HNS points" if c.suite.is_hns else ("normalised points" if c.normalised else "raw points")
    axis.set_xlabel(f"multi-task − experts ({unit}{', symlog' if c.normalised else ''})")
    axis.set_title(f"{c.multitask} vs {c.experts}: +{counts.positive} / −{counts.negative}", fontsize=9)
    figure.tight_layout()
    return writers.png_bytes(figure)


def matrix_png(matrix: TransferMatrix) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = matrix
    n = len(m.games)
    figure, axes = plt.subplots(1, 2, figsize=(4.0 + 1.6 * n, 1.5 + 0.9 * n))
    for axis, (title, gain) in zip(
        axes, (("AUC gain", m.auc_gain), ("final-score gain", m.final_gain)), strict=True
    ):
        finite = gain[np.isfinite(gain)]
        limit = max(float(np.max(np.abs(finite))) if finite.size else 1.0, 0.05) * 100.0
        image = axis.imshow(100.0 * gain, cmap="RdBu", vmin=-limit, vmax=limit)
        for i in range(n):
            for j in range(n):
                dark = math.isfinite(gain[i, j]) and abs(100.0 * gain[i, j]) > 0.6 * limit
                label = percent(gain[i, j]).replace(" ", "")
                colour = "white" if dark else "black"
                axis.text(j, i, label, ha="center", va="center", fontsize=8, color=colour)
        axis.set_xticks(range(n))
        axis.set_xticklabels(m.games, rotation=30, ha="right", fontsize=8)
        axis.set_yticks(range(n))
        axis.set_yticklabels(m.games, fontsize=8)
        axis.set_xlabel("target (fine-tuned on)")
        axis.set_ylabel("source (pre-trained on)")
        axis.set_title(f"{title} vs scratch (%)", fontsize=9)
        figure.colorbar(image, ax=axis, shrink=0.8)
    figure.tight_layout()
    return writers.png_bytes(figure)
