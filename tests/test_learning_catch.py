"""The project's fast learning regression: IMPALA learns Catch, for two seeds, in well under a minute each."""

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest

from impala_tf import config

FRAMES = 60_000
THRESHOLD = 0.8


def _run(args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_impala_learns_catch_within_budget(tmp_path, seed):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    logdir = tmp_path / f"catch_seed{seed}"
    start = time.time()
    train = _run(
        [
            "suites.catch",
            f"--logdir={logdir}",
            f"--total_frames={FRAMES}",
            f"--seed={seed}",
        ],
        repo,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    evaluation = _run(["impala_tf.evaluate", f"--logdir={logdir}", "--episodes=50"], repo)
    assert evaluation.returncode == 0, evaluation.stderr[-2000:]
    elapsed = time.time() - start

    run_config = json.loads((logdir / "config.json").read_text())
    run_flags = run_config["flags"]
    assert run_config["intra_op_threads"] == config.intra_op_threads(
        0, run_flags["runtime"], run_flags["num_actors"], os.cpu_count()
    )  # auto: the binary configured TensorFlow before it first ran
    summary = json.loads((logdir / "eval_summary.json").read_text())
    assert summary["trained_frames"] >= FRAMES
    assert summary["mean_score"]["catch"] >= THRESHOLD, summary
    scores = pd.read_csv(logdir / "eval_scores.csv")
    assert len(scores) == 50 and set(scores.task) == {"catch"}
    # Training itself shows the improvement: late episodes beat early ones.
    episodes = pd.read_csv(logdir / "episodes.csv")
    assert episodes.episode_return.tail(200).mean() > episodes.episode_return.head(200).mean() + 0.5
    assert elapsed < 120, f"took {elapsed:.0f} s"
