"""Reading and plotting a PBT population's histories (`members/<trial id>/pbt_history.csv`, written by
impala_tf.pbt), for the PBT binary and for reports; importing it defines no training flags."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

from impala_tf import writers

BOOKKEEPING = ("frames", "weights_from", "weights_digest")  # history columns that are not plotted


def read_histories(logdir: Path) -> dict[str, list[dict[str, str]]]:
    """trial id -> its pbt_history.csv rows, for every member under `logdir/members`."""
    out = {}
    for path in sorted((logdir / "members").glob("*/pbt_history.csv")):
        with open(path, newline="") as f:
            out[path.parent.name] = list(csv.DictReader(f))
    return out


def best_member(histories: Mapping[str, list[dict[str, str]]]) -> tuple[str, float]:
    """(trial id, fitness) of the member with the highest fitness in its last report."""
    last = {
        member_id: float(rows[-1]["fitness"])
        for member_id, rows in histories.items()
        if rows and math.isfinite(float(rows[-1]["fitness"]))
    }
    if not last:
        raise ValueError("no member has reported a fitness yet")
    best = max(last, key=last.get)
    return best, last[best]


def plot_histories(histories: Mapping[str, list[dict[str, str]]]) -> bytes:
    """Fitness and each hyper-parameter over frames, one line per member (exploits show as jumps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Every column but the bookkeeping ones: the fitness and the adapted hyper-parameters.
    names = [name for name in next(iter(histories.values()))[0] if name not in BOOKKEEPING]
    figure, axes = plt.subplots(len(names), 1, figsize=(8, 2.2 * len(names)), sharex=True)
    for member_id, rows in histories.items():
        frames = [float(r["frames"]) for r in rows]
        for axis, name in zip(axes, names, strict=True):
            axis.plot(frames, [float(r[name]) for r in rows], marker=".", linewidth=1, label=member_id)
    for axis, name in zip(axes, names, strict=True):
        axis.set_ylabel(name, fontsize=8)
        if name != "fitness":
            axis.set_yscale("log")
    axes[0].legend(fontsize=6, ncol=4)
    axes[-1].set_xlabel("frames (per member)")
    figure.tight_layout()
    return writers.png_bytes(figure)
