"""The transfer matrix: pre-train on task i, fine-tune on task j for the same budget, compare with training on j
from scratch (the report's arithmetic: `impala_tf.report.transfer`).

  python -m experiments.transfer_matrix --suite=minatar --games=breakout,space_invaders,asterix \\
      --frames=300000 --seeds=1,2 --workdir=runs/transfer --out=leaderboards/minatar [--train_args=...]
  python -m experiments.transfer_matrix ... --notrain      # report from the runs in --workdir only

The driver runs the suite binary in subprocesses: `python -m suites.<suite> --games=i` (scratch, also the
pre-training of i), then `--games=j --init_from=<scratch i>` (fine-tuning: the network's weights only, a fresh
optimiser and learning-rate schedule), then `python -m impala_tf.evaluate`. Runs already evaluated are not re-run.
Writes transfer_matrix.{md,csv,png}, each file to a temporary name and renamed into place.

`--init_from` needs the two networks to have the same shapes. MinAtar pads observation planes to the most
channels over the *run's* games (breakout 4, seaquest 10), so single-game networks of different games differ in
their first convolution's input channels. The driver then writes an adapted copy of the pre-trained weights
(`adapt_checkpoint`): that kernel's input channels are sliced (exact: the target's missing channels would be
zero padding) or zero-padded (the new channels start ignored); every other weight is copied as is.

`subprocess_runner` and `is_evaluated` also drive the other experiments' runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from absl import flags

from impala_tf import cli, writers
from impala_tf.report import plots
from impala_tf.report.transfer import (
    MATRIX_FILES,
    MatrixPlan,
    TransferError,
    matrix_csv,
    matrix_from_runs,
    matrix_markdown,
)


def define_flags(fv: flags.FlagValues) -> None:
    kw = {"flag_values": fv}
    flags.DEFINE_string("suite", "atari57", "Suite name or suite JSON file.", **kw)
    flags.DEFINE_string("out", None, "Output directory (default: leaderboards/<suite>).", **kw)
    flags.DEFINE_list("games", [], "The N games (default: every game of the suite).", **kw)
    flags.DEFINE_integer("frames", 300_000, "Frames of every run (pre-training, fine-tuning, scratch).", **kw)
    flags.DEFINE_list("seeds", ["1"], "Seeds; every cell is averaged over them.", **kw)
    flags.DEFINE_string("workdir", None, "Where the runs live (scratch/, finetune/, adapted/, logs/).", **kw)
    flags.DEFINE_string(
        "train_args", "", "Extra flags for the suite binary, e.g. '--learning_rate=0.002'.", **kw
    )
    flags.DEFINE_integer("eval_episodes", 10, "Evaluation games per run.", **kw)
    flags.DEFINE_bool("diagonal", False, "Also fine-tune each game on itself.", **kw)
    flags.DEFINE_bool("train", True, "Train and evaluate missing runs (--notrain: report only).", **kw)
    flags.DEFINE_integer("smoothing", 50, "Learning curves' trailing mean over this many episodes.", **kw)


# --- Running the matrix -----------------------------------------------------------------------------

Runner = Callable[[list[str], Path], None]  # (command, log file) -> None; raises TransferError on failure


def subprocess_runner(command: list[str], log_path: Path) -> None:
    """Runs `command` from the repository root, its output into `log_path`; a failure is one line."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    root = Path(__file__).resolve().parents[1]
    with open(log_path, "w") as log:
        code = subprocess.run(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    if code != 0:
        tail = [line for line in log_path.read_text().splitlines() if line.strip()]
        raise TransferError(f"`{shlex.join(command[1:])}` failed (exit {code}): {tail[-1] if tail else ''}")


def suite_command(suite: str) -> list[str]:
    """The training binary of a suite: `-m suites.<name>`, or `-m suites.custom --suite=FILE`."""
    from impala_tf.suites import SUITE_NAMES, get_suite

    if suite in SUITE_NAMES:
        return [sys.executable, "-m", f"suites.{suite}"]
    try:
        get_suite(suite)
    except ValueError as error:
        raise TransferError(str(error)) from None
    return [sys.executable, "-m", "suites.custom", f"--suite={suite}"]


def is_evaluated(run_dir: Path, frames: int) -> bool:
    """Whether `run_dir` holds an evaluation of a run trained for at least `frames` frames."""
    try:
        return json.loads((run_dir / "eval_summary.json").read_text())["trained_frames"] >= frames
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _train_and_evaluate(
    plan: MatrixPlan, run_dir: Path, game: str, seed: int, init_from: Path | None, runner: Runner
) -> None:
    if is_evaluated(run_dir, plan.frames):
        return
    name = str(run_dir.relative_to(plan.workdir)).replace(os.sep, "_")
    command = [
        *suite_command(plan.suite),
        f"--games={game}",
        f"--logdir={run_dir}",
        f"--total_frames={plan.frames}",
        f"--seed={seed}",
        *([f"--init_from={init_from}"] if init_from is not None else []),
        *plan.train_args,
    ]
    print(f"train {name}", flush=True)
    runner(command, plan.workdir / "logs" / f"{name}.train.log")
    evaluate = [
        sys.executable,
        "-m",
        "impala_tf.evaluate",
        f"--logdir={run_dir}",
        f"--episodes={plan.eval_episodes}",
    ]
    runner(evaluate, plan.workdir / "logs" / f"{name}.eval.log")


def run_matrix(plan: MatrixPlan, runner: Runner = subprocess_runner) -> None:
    """Trains and evaluates every run of the plan that is not evaluated yet (scratch runs first)."""
    for seed in plan.seeds:
        for game in plan.games:
            _train_and_evaluate(plan, plan.scratch_dir(game, seed), game, seed, None, runner)
    for seed in plan.seeds:
        for source, target in plan.pairs():
            init_from = plan.scratch_dir(source, seed)
            if not is_evaluated(plan.finetune_dir(source, target, seed), plan.frames):
                init_from = init_source_for(plan, init_from, source, target, seed)
            _train_and_evaluate(
                plan, plan.finetune_dir(source, target, seed), target, seed, init_from, runner
            )


def init_source_for(plan: MatrixPlan, source_run: Path, source: str, target: str, seed: int) -> Path:
    """The run to pass as --init_from: the source run itself, or an adapted copy when shapes differ."""
    source_shape = json.loads((source_run / "config.json").read_text())["observation_shape"]
    target_shape = list(_observation_shape(plan.suite, target))
    if source_shape == target_shape:
        return source_run
    adapted = plan.adapted_dir(source, target, seed)
    if not (adapted / "config.json").exists():
        print(f"adapt {source} {source_shape} -> {target} {target_shape}", flush=True)
        adapt_checkpoint(source_run, target, adapted)
    return adapted


def _observation_shape(suite_name: str, game: str) -> tuple[int, ...]:
    from impala_tf import envs
    from impala_tf.suites import get_suite

    env = envs.make_batched_env(get_suite(suite_name).restrict([game]), [0], 0)
    try:
        return tuple(env.observation_spec().shape)
    finally:
        env.close()


def adapt_weights(source: np.ndarray, target_shape: Sequence[int]) -> np.ndarray:
    """A source weight reshaped for the target network: equal shapes are copied; a convolution kernel
    [h, w, C_in, C_out] whose C_in differs has its input channels sliced or zero-padded (the new channels
    start ignored). Any other difference is an error."""
    source = np.asarray(source)
    target_shape = tuple(target_shape)
    if source.shape == target_shape:
        return source.copy()
    if (
        source.ndim != 4
        or len(target_shape) != 4
        or source.shape[:2] + source.shape[3:] != (target_shape[:2] + target_shape[3:])
    ):
        raise TransferError(f"cannot adapt a weight of shape {source.shape} to {target_shape}")
    channels = target_shape[2]
    if channels <= source.shape[2]:
        return source[:, :, :channels, :].copy()
    padding = np.zeros((*source.shape[:2], channels - source.shape[2], source.shape[3]), source.dtype)
    return np.concatenate([source, padding], axis=2)


def adapt_checkpoint(source_run: Path, target_game: str, out_dir: Path) -> Path:
    """Writes `out_dir`, a minimal run directory (config.json + checkpoint) holding `source_run`'s network
    weights adapted (`adapt_weights`) to a single-game network of `target_game`, for --init_from."""
    import tensorflow as tf

    from impala_tf import agent, checkpoints, rundir
    from impala_tf import learner as learner_lib
    from impala_tf.losses import LossConfig
    from impala_tf.suites import get_suite

    try:
        run_config, source_spec = rundir.load_run_spec(source_run)
    except rundir.UserError as error:
        raise TransferError(str(error)) from None
    try:
        target_suite = get_suite(run_config["flags"]["suite"]).restrict([target_game])
    except ValueError as error:
        raise TransferError(str(error)) from None
    target_spec = dataclasses.replace(source_spec, suite=target_suite)
    built = []
    for spec in (source_spec, target_spec):
        env = agent.make_env(spec, [0], 0)
        built.append((agent.make_network(spec, env), tuple(env.observation_spec().shape)))
        env.close()
    (source_net, _), (target_net, target_shape) = built
    try:
        checkpoints.restore_network(source_run / "checkpoints", source_net)
    except checkpoints.CheckpointError as error:
        raise TransferError(str(error)) from None
    for source_var, target_var in zip(source_net.variables, target_net.variables, strict=True):
        target_var.assign(adapt_weights(source_var.numpy(), target_var.shape))

    # Built in a staging directory and renamed: a killed driver leaves no half-written init run behind.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    holder = learner_lib.Learner(
        target_net, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1, xla=False
    )
    tf.train.CheckpointManager(tf.train.Checkpoint(learner=holder), str(staging / "checkpoints"), 1).save()
    adapted_config = {
        **run_config,
        "games": [target_game],
        "observation_shape": list(target_shape),
        "adapted_from": str(source_run),
        "adapted_note": "network weights of adapted_from; first-layer input channels sliced or zero-padded",
    }
    writers.atomic_write_json(staging / "config.json", adapted_config)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return out_dir


# --- Binary ---------------------------------------------------------------------------------------


def plan_from_flags(fv: flags.FlagValues) -> MatrixPlan:
    from impala_tf.suites import get_suite

    try:
        suite = get_suite(fv.suite)
    except ValueError as error:
        raise TransferError(str(error)) from None
    games = tuple(fv.games) or suite.games
    unknown = [game for game in games if game not in suite.games]
    if unknown:
        raise TransferError(
            f"--games: {', '.join(unknown)} not in suite {suite.name}; valid: {', '.join(suite.games)}"
        )
    if len(set(games)) != len(games):
        raise TransferError("--games lists a game twice")
    if len(games) < 2 and not fv.diagonal:
        raise TransferError("a transfer matrix needs at least 2 games (or --diagonal)")
    if fv.frames < 1 or fv.eval_episodes < 1 or fv.smoothing < 1:
        raise TransferError("--frames, --eval_episodes and --smoothing must be >= 1")
    try:
        seeds = tuple(int(s) for s in fv.seeds)
    except ValueError:
        raise TransferError(f"--seeds must be integers, got {','.join(fv.seeds)}") from None
    if not seeds:
        raise TransferError("--seeds needs at least one seed")
    if not fv.workdir:
        raise TransferError("--workdir is required for matrix")
    return MatrixPlan(
        suite=fv.suite,
        games=games,
        frames=fv.frames,
        seeds=seeds,
        workdir=Path(fv.workdir),
        train_args=tuple(shlex.split(fv.train_args)),
        eval_episodes=fv.eval_episodes,
        diagonal=fv.diagonal,
    )


def _main(argv: Sequence[str], fv: flags.FlagValues, runner: Runner = subprocess_runner) -> int:
    if argv[1:]:
        raise TransferError(f"unexpected arguments {' '.join(argv[1:])!r}: this binary takes flags only")
    plan = plan_from_flags(fv)
    if fv.train:
        run_matrix(plan, runner)
    matrix = matrix_from_runs(plan, fv.smoothing)
    out = Path(fv.out or f"leaderboards/{Path(plan.suite).stem}")
    files = dict(
        zip(
            MATRIX_FILES,
            (matrix_markdown(matrix, plan), matrix_csv(matrix), plots.matrix_png(matrix)),
            strict=True,
        )
    )
    writers.write_files(files, out)
    print(
        f"transfer matrix over {len(plan.games)} games, {len(plan.seeds)} seed(s): wrote {out}/{MATRIX_FILES[0]}"
    )
    return 0


def run(argv: Sequence[str]) -> int:
    """Runs the binary in-process with fresh flag values (argv[0]: program name); returns the exit code."""
    return cli.run_with_own_flags(argv, define_flags, _main, (TransferError,), doc=__doc__)


if __name__ == "__main__":
    # Private flag values (`run`): weight adaptation imports impala_tf.config in-process, whose training flags
    # would clash with these on the global FLAGS.
    sys.exit(run(sys.argv))
