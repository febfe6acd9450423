"""experiments.ablation: the grid's cells and the report built from evaluated runs (no training here)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments import ablation

NORMALISER = "leaderboards/inputs/minatar/normaliser.csv"
GAMES = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def test_the_grid_is_four_corrections_by_replay_by_lag_plus_the_synchronous_row():
    cells = ablation.cells()
    assert len(cells) == 4 * 2 * 2 + 1 and len({c.name for c in cells}) == len(cells)
    by_name = {c.name: c for c in cells}
    assert by_name["vtrace"].flags == (
        "--vtrace_lambda=1.0",
        "--batch_size=8",
        "--correction=vtrace",
        ablation.NO_REPLAY,
    )
    assert by_name["none_replay_highlag"].flags == (
        "--vtrace_lambda=1.0",
        "--batch_size=8",
        "--correction=none",
        *ablation.REPLAY_FLAGS,
        f"--param_refresh_unrolls={ablation.HIGH_LAG_REFRESH}",
    )
    assert "--synchronous" in by_name["synchronous"].flags
    # Every cell runs the paper's V-trace λ = 1 and one batch size per cell, whatever the suite's defaults become.
    assert all("--vtrace_lambda=1.0" in c.flags for c in cells)
    assert all(sum(flag.startswith("--batch_size=") for flag in c.flags) == 1 for c in cells)
    # ... and replay only where the cell says so.
    assert all((ablation.NO_REPLAY not in c.flags) == c.replay for c in cells)


def _run(path: Path, agent: str, seed: int, score: float) -> None:
    path.mkdir(parents=True)
    summary = {
        "agent": agent,
        "suite": "minatar",
        "protocol": "minatar",
        "seed": seed,
        "trained_frames": 400_000,
    }
    (path / "eval_summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps({"suite": "minatar", "games": list(GAMES)}))
    pd.DataFrame(
        [(g, i + 1, score, 100) for g in GAMES for i in range(3)],
        columns=["task", "episode", "score", "frames"],
    ).to_csv(path / "eval_scores.csv", index=False)
    pd.DataFrame(
        [(g, 20_000 * (i + 1), score * i / 20, 100, 0.0) for g in GAMES for i in range(20)],
        columns=["task", "frames", "episode_return", "episode_frames", "wall_time"],
    ).to_csv(path / "episodes.csv", index=False)


def test_report_lays_out_each_block_with_its_cells_and_names_the_missing_ones(tmp_path):
    inputs = tmp_path / "inputs"
    for seed in (1, 2):
        _run(inputs / f"vtrace_s{seed}", "vtrace", seed, 10.0 + seed)
        _run(inputs / f"none_highlag_s{seed}", "none_highlag", seed, 1.0)
    text = ablation.report(inputs, NORMALISER, tmp_path / "out", resamples=200)
    lines = text.splitlines()
    vtrace_row = next(line for line in lines if line.startswith("| V-trace | 11.5 |"))
    assert vtrace_row.endswith("| 2 |")  # seeds
    assert "[" in vtrace_row  # an interval over the two seeds
    assert "Not yet run:" in text and "synchronous" in text.split("Not yet run:")[1]
    csv = pd.read_csv(tmp_path / "out" / "ablation.csv")
    assert set(csv["cell"]) == {"vtrace", "none_highlag"}
    assert np.allclose(csv.set_index("cell").loc["vtrace", list(GAMES)], 11.5)
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 1000


def test_committed_ablation_report_is_what_its_committed_inputs_give(tmp_path, makefile_command):
    repo = Path(__file__).resolve().parents[1]
    command = [
        sys.executable,
        "-m",
        "experiments.ablation",
        *makefile_command("experiments.ablation", out=tmp_path),
    ]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("README.md", "ablation.csv"):
        committed = (repo / "leaderboards" / "ablation" / name).read_text()
        assert committed == (tmp_path / name).read_text(), (
            f"leaderboards/ablation/{name} is stale: make leaderboards"
        )
