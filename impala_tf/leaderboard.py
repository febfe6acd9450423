"""Leaderboard: human-normalised scores of agents on a suite, beside the published IMPALA rows.

  python -m impala_tf.leaderboard --suite=atari57 --scores=a.csv,b.csv --runs=runs/x,runs/y [--out=DIR]
  python -m impala_tf.leaderboard --scores=a.csv --format=json      # JSON on stdout; files only with --out
  python -m impala_tf.leaderboard check --baseline=A --candidate=B [--tolerance=5]   # regression guard

`check` exits 1 naming each game and aggregate (median, IQM, capped mean) whose candidate score dropped more
than --tolerance HNS points below the baseline's point estimate — with seeds, only when the candidate's upper
95 % bound is below it — and 0 with one OK line otherwise.

Inputs
  --scores  CSV files `game, score` with optional `agent, seed, frames, protocol` columns (long format;
            several agents per file; without `agent` the file's stem names the agent; `frames` = training
            frames per game; `protocol` = impala | machado).
  --runs    run directories (eval_summary.json + eval_scores.csv, optional episodes.csv for learning curves
            and config.json), or folders holding run directories. A run's score on a game is the mean of its
            eval games (eval_scores.csv rows of that task); its frames per game are trained_frames divided by
            the number of games it trained on.
  --reference  published rows to include: impala_paper, machado_repro, none.

Normalisation: HNS = 100·(score − random)/(human − random) with the suite's per-game (random, human)
reference. A suite without one (minatar, catch) is reported in raw scores, unless --normaliser=FILE (CSV
`game, low, high`, covering every game of the suite) maps low to 0 % and high to 100 %; such a file overrides
the suite's reference.

Outputs (into --out, default leaderboards/<suite>): README.md (aggregates), per_game.md, aggregates.csv,
per_game.csv and report.html (plots embedded as PNG). Every table shows how many evaluation games each score
rests on: "eval games/task" (eval_scores.csv rows per task of a run; "10", or "3–10" = fewest–most over games
and seeds when they differ; "—" where the input does not say: score files and published rows; the CSVs and
JSON give the fewest). They are written into a temporary directory beside the target and renamed into place
once complete; an existing target must be a leaderboard this binary wrote. Where the board's own impala-protocol
agents play breakout or pong, README.md lists published small-budget points (RLlib IMPALA, A2C, PPO at 10M-40M
frames; `reference.atari_published_small_budget`) for orientation, and report.html marks them on the curves.

Statistics follow rliable (Agarwal et al. 2021): median and mean of per-game means over seeds, IQM over all
seed×game entries, 95 % stratified-bootstrap percentile intervals where an agent has two or more seeds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from impala_tf import cli
from impala_tf.report import render, statistics
from impala_tf.report.inputs import (
    REFERENCE_CHOICES,
    InputError,
    SuiteInfo,
    load_agents,
    parse_reference_flag,
    resolve_suite,
)


def define_flags(flag_values: flags.FlagValues) -> None:
    """Defines this binary's flags on `flag_values` (not at import: other binaries' flags cannot clash)."""
    fv = {"flag_values": flag_values}
    flags.DEFINE_list(
        "scores", [], "Per-game score CSV files (game, score[, agent, seed, frames, protocol]).", **fv
    )
    flags.DEFINE_list(
        "runs", [], "Run directories (eval_summary.json, eval_scores.csv[, episodes.csv]).", **fv
    )
    flags.DEFINE_string("suite", "atari57", "Suite whose games the leaderboard covers.", **fv)
    flags.DEFINE_list(
        "reference", ["impala_paper"], f"Published rows to include: {', '.join(REFERENCE_CHOICES)}.", **fv
    )
    flags.DEFINE_string(
        "normaliser", None, "CSV `game, low, high`: per-game scores mapped to 0 % and 100 %.", **fv
    )
    flags.DEFINE_string(
        "out", None, "Output directory (default: leaderboards/<suite>; with json: none).", **fv
    )
    flags.DEFINE_enum("format", "markdown", ["markdown", "json"], "markdown: write files; json: print.", **fv)
    flags.DEFINE_integer(
        "bootstrap_resamples", 10_000, "Stratified-bootstrap resamples for the intervals.", **fv
    )
    flags.DEFINE_integer(
        "bootstrap_seed", 0, "Seed of the bootstrap (fixed: reports are reproducible).", **fv
    )
    flags.DEFINE_integer("smoothing", 100, "Learning curves: trailing mean over this many episodes.", **fv)
    flags.DEFINE_string(
        "baseline", None, "check: score files / run directories of the baseline (comma separated).", **fv
    )
    flags.DEFINE_string("candidate", None, "check: score files / run directories of the candidate.", **fv)
    flags.DEFINE_float(
        "tolerance",
        5.0,
        "check: allowed drop in HNS points (raw scores: percent of the baseline score).",
        **fv,
    )


def _single_agent(suite: SuiteInfo, paths: str, role: str, smoothing: int) -> statistics.AgentResult:
    score_files, run_dirs = [], []
    for path in (p.strip() for p in paths.split(",") if p.strip()):
        (run_dirs if Path(path).is_dir() else score_files).append(path)
    agents = load_agents(suite, score_files, run_dirs, smoothing)
    if len(agents) != 1:
        names = ", ".join(a.name for a in agents)
        raise InputError(f"--{role}={paths}: expected the scores of one agent, found {len(agents)} ({names})")
    return statistics.agent_result(agents[0], suite, num_resamples=0, seed=0)


def _check_main(fv: flags.FlagValues) -> int:
    if not fv.baseline or not fv.candidate:
        raise InputError("check needs --baseline=FILE|DIR and --candidate=FILE|DIR")
    if fv.tolerance < 0:
        raise InputError(f"--tolerance must be >= 0, got {fv.tolerance}")
    suite = resolve_suite(fv.suite, fv.normaliser)
    baseline = _single_agent(suite, fv.baseline, "baseline", fv.smoothing)
    candidate = _single_agent(suite, fv.candidate, "candidate", fv.smoothing)
    failures = statistics.check_regression(
        baseline,
        candidate,
        fv.tolerance,
        num_resamples=min(fv.bootstrap_resamples, 5000),
        seed=fv.bootstrap_seed,
    )
    unit = "normalised points" if suite.normalisers is not None else "% of the baseline score"
    if failures:
        for failure in failures:
            print(f"REGRESSION {failure}")
        dropped = sorted({failure.split(":")[0] for failure in failures})
        print(
            f"FAIL: {candidate.name} dropped beyond {fv.tolerance:g} {unit} vs {baseline.name}: "
            + ", ".join(dropped),
            file=sys.stderr,
        )
        return 1
    print(
        f"OK: {candidate.name} within {fv.tolerance:g} {unit} of {baseline.name} on "
        f"{len(set(baseline.games) & set(candidate.games))} games"
        + (f" and {', '.join(statistics.CHECKED_AGGREGATES)}" if suite.normalisers is not None else "")
    )
    return 0


def _main(argv: Sequence[str], fv: flags.FlagValues) -> int:
    command = list(argv[1:])
    if command and command != ["check"]:
        raise InputError(
            f"unknown command {' '.join(command)!r}; valid: check (or none, to build a leaderboard)"
        )
    if command == ["check"]:
        return _check_main(fv)
    if fv.bootstrap_resamples < 1:
        raise InputError(f"--bootstrap_resamples must be >= 1, got {fv.bootstrap_resamples}")
    if fv.smoothing < 1:
        raise InputError(f"--smoothing must be >= 1, got {fv.smoothing}")
    references = parse_reference_flag(fv.reference)
    suite = resolve_suite(fv.suite, fv.normaliser)
    agents = load_agents(suite, fv.scores, fv.runs, fv.smoothing)
    board = statistics.build_leaderboard(
        suite, agents, references, num_resamples=fv.bootstrap_resamples, bootstrap_seed=fv.bootstrap_seed
    )
    out = fv.out if fv.out is not None else (None if fv.format == "json" else f"leaderboards/{suite.name}")
    if out:
        render.write_atomically(render.render(board), out)
    if fv.format == "json":
        print(json.dumps(render.leaderboard_json(board), indent=2))
    else:
        print(f"wrote {out}/README.md and report.html: {len(board.agents)} agents on {suite.name}")
    return 0


def run(argv: Sequence[str]) -> int:
    """Runs the binary in-process with fresh flag values (argv[0]: program name); returns the exit code."""
    return cli.run_with_own_flags(argv, define_flags, _main, (InputError,), doc=__doc__)


if __name__ == "__main__":
    sys.exit(run(sys.argv))
