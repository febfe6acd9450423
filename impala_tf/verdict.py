"""Did a run learn? `python -m impala_tf.verdict --logdir=RUN`: one line per game and a one-line verdict.

A game counts as learned when the lower end of the 95 % interval of its evaluation mean (eval_scores.csv) lies
above the baseline, and its last 100 training games (episodes.csv) beat its first 100. The baseline is the
suite's random score where it has one (Atari: dqn_zoo's, 1-30 no-op starts), else the mean of the first 100
training games (the untrained policy). The interval is a 95 % percentile bootstrap over evaluation games.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from absl import app, flags

from impala_tf import config  # noqa: F401 - defines --logdir (one definition of each flag)

FLAGS = flags.FLAGS
FIRST_LAST_GAMES = 100


class GameVerdict(NamedTuple):
    game: str
    eval_mean: float
    eval_low: float
    eval_high: float
    eval_games: int
    baseline: float
    baseline_name: str
    first_train: float
    last_train: float

    @property
    def learned(self) -> bool:
        return self.eval_low > self.baseline and self.last_train > self.first_train


def bootstrap_interval(scores: np.ndarray, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean of `scores` [N]."""
    rng = np.random.default_rng(seed)
    means = rng.choice(scores, size=(resamples, len(scores)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def judge(
    eval_scores: pd.DataFrame, episodes: pd.DataFrame, random_scores: dict[str, float] | None
) -> list[GameVerdict]:
    """One verdict per game evaluated. `eval_scores`: task, score; `episodes`: task, frames, episode_return."""
    verdicts = []
    for game, group in eval_scores.groupby("task", sort=True):
        scores = group.score.to_numpy(float)
        low, high = bootstrap_interval(scores)
        train = episodes[episodes.task == game].sort_values("frames").episode_return.to_numpy(float)
        first = float(train[:FIRST_LAST_GAMES].mean()) if len(train) else float("nan")
        last = float(train[-FIRST_LAST_GAMES:].mean()) if len(train) else float("nan")
        if random_scores and game in random_scores:
            baseline, name = random_scores[game], "random"
        else:
            baseline, name = first, f"first {FIRST_LAST_GAMES} training games"
        verdicts.append(
            GameVerdict(game, float(scores.mean()), low, high, len(scores), baseline, name, first, last)
        )
    return verdicts


def describe(verdicts: list[GameVerdict]) -> list[str]:
    lines = [
        f"{v.game}: evaluation {v.eval_mean:.1f} [{v.eval_low:.1f}, {v.eval_high:.1f}] over {v.eval_games} games "
        f"vs {v.baseline_name} {v.baseline:.1f}; training {v.first_train:.1f} (first {FIRST_LAST_GAMES} games) -> "
        f"{v.last_train:.1f} (last {FIRST_LAST_GAMES}): {'learned' if v.learned else 'NOT learned'}"
        for v in verdicts
    ]
    learned = sum(v.learned for v in verdicts)
    if learned == len(verdicts):
        lines.append(f"verdict: learned — all {len(verdicts)} game(s) clearly above their baseline")
    else:
        missing = ", ".join(v.game for v in verdicts if not v.learned)
        lines.append(
            f"verdict: NOT learned on {len(verdicts) - learned} of {len(verdicts)} game(s): {missing}"
        )
    return lines


def _random_scores(logdir: Path) -> dict[str, float] | None:
    from impala_tf.suites import get_suite

    run_config = json.loads((logdir / "config.json").read_text())
    suite = get_suite(run_config["flags"]["suite"])
    return {game: float(low) for game, (low, _) in suite.reference.items()} if suite.reference else None


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logdir = Path(FLAGS.logdir or "")
    missing = [
        name for name in ("config.json", "eval_scores.csv", "episodes.csv") if not (logdir / name).exists()
    ]
    if not FLAGS.logdir or missing:
        print(f"error: --logdir={FLAGS.logdir} lacks {', '.join(missing) or 'a value'}", file=sys.stderr)
        return 1
    verdicts = judge(
        pd.read_csv(logdir / "eval_scores.csv"), pd.read_csv(logdir / "episodes.csv"), _random_scores(logdir)
    )
    print("\n".join(describe(verdicts)))
    return 0


if __name__ == "__main__":
    app.run(main)
