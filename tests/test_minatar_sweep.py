"""The MinAtar sweep driver: every run named once with its setting's flags spelled out; the report's scores."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from experiments import minatar_sweep


def test_every_run_has_a_unique_name_and_pins_the_flags_it_compares():
    runs = minatar_sweep.runs()
    names = [run.name for run in runs]
    assert len(names) == len(set(names))
    for name, agent, game, flags in runs:
        assert agent == minatar_sweep.agent_name(name.removesuffix(f"_{game}_s{flags[1].split('=')[1]}"))
        assert f"--games={game}" in flags and name.endswith(f"_{game}_s{flags[1].split('=')[1]}")
        # A later change of a suite default must not change what a row means.
        for pinned in (
            "--learning_rate=",
            "--baseline_cost=",
            "--entropy_cost=",
            "--vtrace_lambda=",
            "--batch_size=",
        ):
            assert sum(flag.startswith(pinned) for flag in flags) == 1, (name, pinned)
        assert ("--rmsprop_debias" in flags) != ("--normsprop_debias" in flags), name


def test_last_100_uses_the_last_tenth_of_kept_rows_and_is_nan_before_the_run_got_there():
    episodes = pd.DataFrame({"frames": range(1, 1001), "episode_return": [0.0] * 990 + [5.0] * 10})
    assert minatar_sweep.last_100(episodes, 1000) == 5.0
    assert minatar_sweep.last_100(episodes, 900) == 0.0
    assert pd.isna(minatar_sweep.last_100(episodes, 5000))


def test_report_shows_each_settings_seeds_training_scores_and_commonest_eval_score(tmp_path):
    inputs, experts = tmp_path / "sweep", tmp_path / "experts"
    for seed, final in ((1, 9.0), (2, 11.0)):
        run = inputs / f"lambda0.8_breakout_s{seed}"
        run.mkdir(parents=True)
        frames = [i * 100_000 for i in range(1, 51)]
        returns = [1.0] * 40 + [final] * 10
        pd.DataFrame({"task": "breakout", "frames": frames, "episode_return": returns}).to_csv(
            run / "episodes.csv", index=False
        )
        pd.DataFrame({"task": "breakout", "episode": range(4), "score": [7, 7, 7, final]}).to_csv(
            run / "eval_scores.csv", index=False
        )
        (run / "config.json").write_text(json.dumps({"flags": {}}))
    text = minatar_sweep.report(inputs, experts)
    lines = text.splitlines()
    lines = lines[lines.index("## breakout") :]
    header = next(line for line in lines if line.startswith("| setting |"))
    row = next(line for line in lines if line.startswith("| lambda0.8 |"))
    assert header.count("|") == row.count("|") == lines[lines.index(header) + 1].count("|")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "2"  # seeds
    assert cells[5] == "10.0 (9.0–11.0)"  # 5M: mean (min–max) over seeds
    assert cells[6] == "7.8 (7.5–8.0)"  # eval means 7.5 and 8.0
    assert cells[7] == "7 (75 %)"


def test_report_of_a_missing_inputs_folder_is_one_line_and_exit_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.minatar_sweep", "report", f"--inputs={tmp_path / 'nope'}"],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == f"error: --inputs={tmp_path / 'nope'} is not a directory"


def test_committed_sweep_table_is_what_its_committed_inputs_give(tmp_path, makefile_command):
    repo = Path(__file__).resolve().parents[1]
    args = makefile_command("experiments.minatar_sweep", "report", out=tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "experiments.minatar_sweep", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    committed = (repo / "leaderboards" / "minatar" / "sweep.md").read_text()
    assert committed == (tmp_path / "sweep.md").read_text(), (
        "leaderboards/minatar/sweep.md is stale: make leaderboards"
    )
