"""Transfer: is one agent on many tasks better or worse than one agent per task?

  python -m impala_tf.transfer experts --suite=atari57 --multitask=impala_deep_multitask \\
      --experts=impala_deep_experts --out=leaderboards/atari57

`experts` — a multi-task agent against single-task experts on the same suite (the comparison of the IMPALA paper's
deep multi-task agent with its deep experts, Table C.1). Each side is a comma-separated list of score CSVs, run
directories (as the leaderboard reads them) or published agents (`impala_deep_experts`, ...); the experts' sources
are merged into one agent, one game per run as a rule. Per game: normalised score of the multi-task agent minus the
experts' (in normalised points; raw points without a normaliser); a game counts as positive transfer when the
difference is > 0, negative when < 0. Where both sides have two or more seeds of a game, the difference gets a 95 %
bootstrap interval (each side's seeds resampled apart) and the report counts the games whose interval lies wholly
above or below 0. Writes transfer_vs_experts.{md,csv,png} (or `--name`.{md,csv,png}), each file to a temporary name
and renamed into place.

The transfer matrix (pre-train on one task, fine-tune on another) trains runs, so its driver is an experiment:
`python -m experiments.transfer_matrix` (the flags `python -m impala_tf.transfer matrix` took).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from impala_tf import cli, writers
from impala_tf.report import plots
from impala_tf.report.inputs import InputError, resolve_suite
from impala_tf.report.transfer import (
    EXPERTS_NAME,
    TransferError,
    compare_with_experts,
    experts_csv,
    experts_files,
    experts_markdown,
    load_side,
)

COMMANDS = ("experts",)
MATRIX_MOVED = (
    "the transfer matrix is `python -m experiments.transfer_matrix` (the same flags, without `matrix`)"
)


def define_flags(fv: flags.FlagValues) -> None:
    kw = {"flag_values": fv}
    flags.DEFINE_string("suite", "atari57", "Suite name or suite JSON file.", **kw)
    flags.DEFINE_string("normaliser", None, "CSV `game, low, high` (suites without human scores).", **kw)
    flags.DEFINE_string("out", None, "Output directory (default: leaderboards/<suite>).", **kw)
    flags.DEFINE_list(
        "multitask", [], "experts: the multi-task agent (score CSVs, run dirs, published name).", **kw
    )
    flags.DEFINE_list("experts", [], "experts: the single-task experts, merged into one agent.", **kw)
    flags.DEFINE_string(
        "name",
        EXPERTS_NAME,
        "experts: the files' stem (<name>.md, .csv, .png), for several comparisons in one dir.",
        **kw,
    )


def _experts_main(fv: flags.FlagValues) -> int:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", fv.name):
        raise TransferError(f"--name must be a file stem (letters, digits, _ . -), got {fv.name!r}")
    try:
        suite = resolve_suite(fv.suite, fv.normaliser)
    except InputError as error:
        raise TransferError(str(error)) from None
    comparison = compare_with_experts(
        suite, load_side(suite, fv.multitask, "multitask"), load_side(suite, fv.experts, "experts")
    )
    out = Path(fv.out or f"leaderboards/{suite.name}")
    names = experts_files(fv.name)
    files = dict(
        zip(
            names,
            (experts_markdown(comparison, fv.name), experts_csv(comparison), plots.experts_png(comparison)),
            strict=True,
        )
    )
    writers.write_files(files, out)
    counts = comparison.counts
    print(
        f"{comparison.multitask} vs {comparison.experts} on {len(comparison.games)} games: "
        f"{counts.positive} positive, {counts.negative} negative, {counts.neutral} neutral; wrote {out}/{names[0]}"
    )
    return 0


def _main(argv: Sequence[str], fv: flags.FlagValues) -> int:
    command = list(argv[1:])
    if len(command) != 1 or command[0] not in COMMANDS:
        raise TransferError(
            f"expected one command, got {' '.join(command) or 'none'!r}; valid: {', '.join(COMMANDS)}"
        )
    return _experts_main(fv)


def run(argv: Sequence[str]) -> int:
    """Runs the binary in-process with fresh flag values (argv[0]: program name); returns the exit code."""
    if "matrix" in argv[1:]:  # checked before the flags: the matrix's flags are its driver's
        print(f"error: {MATRIX_MOVED}", file=sys.stderr)
        return 1
    return cli.run_with_own_flags(argv, define_flags, _main, (TransferError,), doc=__doc__)


if __name__ == "__main__":
    sys.exit(run(sys.argv))
