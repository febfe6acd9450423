"""Population-based training (Jaderberg et al. 2017) of IMPALA agents on Ray Tune's PBT scheduler, as the paper
trained its multi-task agents.

  python -m impala_tf.pbt --suite=NAME --population=N --logdir=DIR [--pbt_interval_frames=F] [training flags]

Every member is an ordinary training run with its own run directory, `DIR/members/<trial id>/` (config.json,
checkpoints, episodes.csv, TensorBoard), driven as one Ray Tune trial. A member trains in stretches of
`--pbt_interval_frames`; after each it reports its fitness and its checkpoint to Tune. Ray Tune's
`PopulationBasedTraining` decides exploit and explore: a member in the bottom quantile restarts from a top member's
checkpoint (weights, RMSProp slots, counters, PopArt statistics: everything a resume needs) with that member's
hyper-parameters, each multiplied by 1.2 or 0.8. The learning-rate schedule continues from the frames trained
(it anneals over the whole budget from the member's current initial rate). Every stretch appends a row to the
member's `pbt_history.csv`: frames, fitness, the hyper-parameters, where its weights came from and their digest.

Choices, from the paper (Espeholt et al. 2018, section 5.3 and Appendix F, Tables D.1 and G.1) unless marked:
  - population 24 (both multi-task agents); adapted: learning rate, entropy cost, RMSProp ε and (Atari) the
    global gradient-clip threshold;
  - initial values: learning rate log-uniform [5e-6, 5e-3], entropy cost log-uniform [5e-5, 1e-2], ε from
    {1e-1, 1e-3, 1e-5, 1e-7} (Table D.1); the clip threshold starts at Table G.1's 40 (ours: the paper gives no
    initial distribution for it);
  - perturbation: ×1.2 or ×1/1.2, the paper's unbiased factors (Jaderberg et al. used 1.2 or 0.8); no resampling;
  - burn-in: 20M frames without evolution;
  - fitness: mean capped human-normalised score of recent training returns (Table G.1) where the suite has human
    references; ours: with `--pbt_normaliser=CSV` (game, low, high; it wins over human references) the mean over
    tasks of the normalised score, uncapped (MinAtar: random -> AC(λ), which our agent passes on some games);
    without either, the mean over tasks of the mean raw return (one game's scale then dominates);
  - ours, because Ray Tune's scheduler works so: exploit by truncation selection (a member in the bottom
    `--pbt_quantile` copies one of the top quantile, with its hyper-parameters) where the paper compares with one
    random member and copies when it is 5 points better; every hyper-parameter is perturbed at an exploit, where
    the paper perturbs each with probability 1/3 after every evaluation; evolution every `--pbt_interval_frames`
    frames where the paper waits for 5,000 episodes;
  - ours: what is copied is the whole checkpoint (weights, RMSProp slots, counters, PopArt statistics); the paper
    says "weights and parameters".
Synchronous PBT (`synch=True`): a member that reaches a boundary waits (paused, its resources freed) until every
member has, so a population larger than the machine's cores time-shares it.

Killing the driver and running the same command again resumes every member (Tune restores the experiment,
each member its own checkpoint; `impala_tf.pbt_scheduler` rebuilds the scheduler's state, which Tune does not).
Tune saves its experiment at most every 10 s (its default): a member it restarts with other values than its
history's last row (an exploit taken after the last save) continues on the weights its run directory holds, and a
history row at the same frames records the values it continues with.
When the population finishes, the best member (highest final fitness) is evaluated (`impala_tf.evaluate`, agent
`impala_tf_pbt`) and named in `DIR/pbt.json`; `impala_tf.leaderboard --runs=DIR` then reads that member.
`DIR/pbt.png` plots each member's hyper-parameters and fitness over frames.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags

from impala_tf import config, rundir, scoring, writers
from impala_tf.report.pbt_history import best_member, plot_histories, read_histories

FLAGS = flags.FLAGS

# name -> (initial distribution, its values): Table D.1; the clip threshold starts at Table G.1's value.
HYPERPARAMETERS: dict[str, tuple[str, tuple[float, ...]]] = {
    "learning_rate": ("loguniform", (5e-6, 5e-3)),
    "entropy_cost": ("loguniform", (5e-5, 1e-2)),
    "rmsprop_epsilon": ("choice", (1e-1, 1e-3, 1e-5, 1e-7)),
    "max_grad_norm": ("choice", (40.0,)),
}
PERTURBATION_FACTORS = (1.2, 1 / 1.2)  # the paper's unbiased factors (Appendix F)
HISTORY_COLUMNS = ("frames", "fitness", *HYPERPARAMETERS, "weights_from", "weights_digest")
BEST_AGENT = "impala_tf_pbt"


def define_flags() -> None:
    # Defined only when run as a binary: the training flags come from impala_tf.config.
    flags.DEFINE_integer("population", 24, "Members of the population (the paper's 24).")
    flags.DEFINE_integer(
        "pbt_interval_frames", 5_000_000, "Frames a member trains between fitness reports (exploit/explore)."
    )
    flags.DEFINE_integer(
        "pbt_burn_in_frames",
        20_000_000,
        "No exploit before a member has trained this many frames (the paper's 20M).",
    )
    flags.DEFINE_float("pbt_quantile", 0.25, "Bottom quantile that exploits; top quantile that is copied.")
    flags.DEFINE_integer("pbt_fitness_episodes", 100, "Recent training episodes per task in the fitness.")
    flags.DEFINE_float(
        "member_cpus",
        1.0,
        "CPUs Ray reserves per member. Members beyond cluster CPUs / member_cpus wait their turn at each boundary.",
    )
    flags.DEFINE_enum(
        "pbt_init",
        "paper",
        ["paper", "flags"],
        "Initial hyper-parameters: paper = drawn from Table D.1's distributions; flags = every member starts at the "
        "command line's --learning_rate, --entropy_cost, --rmsprop_epsilon, --max_grad_norm.",
    )
    flags.DEFINE_integer("pbt_eval_episodes", 30, "Evaluation games per task of the best member at the end.")
    flags.DEFINE_string(
        "pbt_normaliser",
        None,
        "CSV game,low,high: the fitness is the mean normalised score (uncapped) instead of the mean raw return, "
        "for suites without human references (e.g. leaderboards/inputs/minatar/normaliser.csv).",
    )


# --- Pure parts --------------------------------------------------------------------------------------------------


def fitness(
    recent_returns: Mapping[str, Sequence[float]],
    reference: Mapping[str, tuple[float, float]] | None,
    normaliser: Mapping[str, tuple[float, float]] | None = None,
) -> float:
    """The suite's aggregate of recent training returns: given a (low, high) `normaliser` for every task (asked for
    explicitly, so it wins), the mean normalised score, uncapped; else the mean over tasks of the human-normalised
    score capped at 100 % when every task has (random, human) references; else the mean raw return over tasks.
    Tasks without a finished game are left out; no game at all gives -inf (the worst fitness)."""
    means = {task: float(np.mean(r)) for task, r in recent_returns.items() if len(r)}
    if not means:
        return -math.inf
    if normaliser and all(task in normaliser for task in means):
        return float(np.mean([scoring.normalised_score(m, *normaliser[task]) for task, m in means.items()]))
    if reference and all(task in reference for task in means):
        scores = [
            min(float(scoring.human_normalised_score(m, *reference[task])), scoring.HUMAN_LEVEL)
            for task, m in means.items()
        ]
        return float(np.mean(scores))
    return float(np.mean(list(means.values())))


def initial_sample(rng: np.random.Generator) -> dict[str, float]:
    """One member's starting hyper-parameters drawn from HYPERPARAMETERS."""
    out = {}
    for name, (kind, values) in HYPERPARAMETERS.items():
        if kind == "loguniform":
            out[name] = float(math.exp(rng.uniform(math.log(values[0]), math.log(values[1]))))
        else:
            out[name] = float(rng.choice(values))
    return out


def weights_digest(variables: Sequence[np.ndarray]) -> str:
    """A short hash of a network's weights, in variable order: equal digests mean bit-equal weights."""
    h = hashlib.sha256()
    for value in variables:
        h.update(np.ascontiguousarray(value).tobytes())
    return h.hexdigest()[:16]


# --- One member (a Tune trial) -----------------------------------------------------------------------------------


def _training_argv(base: Mapping[str, Any], hyper: Mapping[str, float], logdir: Path) -> list[str]:
    """The member's command line: the population's training flags with its own hyper-parameters and logdir."""
    argv = [f"--{name}={value}" for name, value in base.items() if name not in hyper and name != "logdir"]
    argv += [f"--{name}={value!r}" for name, value in hyper.items()]
    return [*argv, f"--logdir={logdir}"]


def _member_trainer(suite_name: str, argv: list[str]):
    """A Trainer for the member's run directory, built in this process from the member's command line."""
    from impala_tf import trainer

    FLAGS.unparse_flags()
    FLAGS(["member", *argv])
    config.apply_preset()
    config.validate()
    return trainer.Trainer(rundir.resolve_suite(suite_name, FLAGS.games), FLAGS.logdir)


def _digest(run) -> str:
    return weights_digest([v.numpy() for v in run.learner.network.variables])


def _train_stretch(suite_name: str, argv: list[str], until_frames: int) -> tuple[int, str]:
    """Trains the member's run up to `until_frames` in this process; returns (frames, weights digest)."""
    run = _member_trainer(suite_name, argv)
    code = run.run(until_frames=until_frames)
    if code != 0:
        raise RuntimeError(f"member {run.logdir} stopped with exit code {code}")
    return int(run.learner.num_frames.numpy()), _digest(run)


def _restored_digest(suite_name: str, argv: list[str]) -> str:
    """The digest of the weights a member's run directory would resume with."""
    run = _member_trainer(suite_name, argv)
    run.checkpoints.restore_latest()
    return _digest(run)


def _recent_returns(run_dir: Path, tasks: Sequence[str], episodes: int) -> dict[str, list[float]]:
    recent: dict[str, list[float]] = {task: [] for task in tasks}
    path = run_dir / "episodes.csv"
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if row.get("task") in recent:
                    recent[row["task"]].append(float(row["episode_return"]))
    return {task: values[-episodes:] for task, values in recent.items()}


def _append_history(run_dir: Path, row: Mapping[str, Any]) -> None:
    """Appends a row, unless the member's state is the one the last row recorded (same frames, weights and
    hyper-parameters). A driver killed before Tune saved the experiment makes a member report a point again on
    resume; the repeat is kept only when it changes the hyper-parameters: Tune forgot an exploit and restarted the
    member with its values from before it (the weights, on disk, stay the donor's)."""
    path = run_dir / "pbt_history.csv"
    new = not path.exists()
    if not new:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        keys = ("frames", "weights_digest", *HYPERPARAMETERS)
        if rows and all(rows[-1][k] == str(row[k]) for k in keys):
            return
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row[k] for k in HISTORY_COLUMNS})
        f.flush()


def member(settings: dict[str, Any]) -> None:
    """The Tune trainable: trains one member stretch by stretch, reporting fitness and checkpoint after each."""
    from ray import tune

    from impala_tf.suites import get_suite

    trial_id = tune.get_context().get_trial_id()
    run_dir = Path(settings["logdir"]) / "members" / trial_id
    run_dir.mkdir(parents=True, exist_ok=True)
    hyper = {name: float(settings[name]) for name in HYPERPARAMETERS}
    suite_name, base, interval = settings["suite"], settings["base_flags"], settings["interval_frames"]
    config.set_suite_defaults({"suite": suite_name, **get_suite(suite_name).default_flags})
    # Each trial its own seed: an exploit copies the donor's config, never its seed.
    argv = [
        *_training_argv(base, hyper, run_dir),
        f"--seed={settings['seed'] + zlib.crc32(trial_id.encode()) % 10_000}",
    ]

    weights_from = trial_id
    frames = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            meta = json.loads((Path(directory) / "member.json").read_text())
            if meta["trial_id"] != trial_id or not (run_dir / "checkpoints").exists():
                # Exploit (or a lost run directory): continue from the checkpoint Tune hands over.
                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
                shutil.copytree(Path(directory) / "checkpoints", run_dir / "checkpoints")
                weights_from = meta["trial_id"]
            frames = int(meta["frames"])
        if weights_from != trial_id:
            _append_history(
                run_dir,
                {
                    "frames": meta["frames"],
                    "fitness": math.nan,
                    **hyper,
                    "weights_from": weights_from,
                    "weights_digest": _restored_digest(suite_name, argv),
                },
            )
    tasks = list(settings["games"])
    while True:
        # To the next multiple of the interval. A run directory ahead of the checkpoint Tune restored (a driver
        # killed between a save and a report) stops at once with its own, later, frames.
        target = min(settings["total_frames"], (frames // interval + 1) * interval)
        frames, digest = _train_stretch(suite_name, argv, target)
        recent = _recent_returns(run_dir, tasks, settings["fitness_episodes"])
        fit = fitness(recent, settings["reference"], settings.get("normaliser"))
        _append_history(
            run_dir,
            {"frames": frames, "fitness": fit, **hyper, "weights_from": trial_id, "weights_digest": digest},
        )
        with tempfile.TemporaryDirectory() as staging:
            shutil.copytree(run_dir / "checkpoints", Path(staging) / "checkpoints")
            writers.atomic_write_json(Path(staging) / "member.json", {"trial_id": trial_id, "frames": frames})
            tune.report(
                {"frames": frames, "fitness": fit if math.isfinite(fit) else -1e9, **hyper},
                checkpoint=tune.Checkpoint.from_directory(staging),
            )
        if frames >= settings["total_frames"]:
            return


# --- The driver ----------------------------------------------------------------------------------------------


def initial_population(
    size: int, seed: int, start: Mapping[str, float] | None = None
) -> list[dict[str, float]]:
    """Each member's starting hyper-parameters: drawn once from HYPERPARAMETERS with `seed` (reproducible), or all
    equal to `start` (the command line's values: the members then differ by seed until the first exploit)."""
    if start is not None:
        return [{name: float(start[name]) for name in HYPERPARAMETERS} for _ in range(size)]
    rng = np.random.default_rng(seed)
    return [initial_sample(rng) for _ in range(size)]


def run_population(suite, logdir: Path, normaliser: Mapping[str, tuple[float, float]] | None = None) -> int:
    """Trains (or resumes) the population, then evaluates its best member and writes pbt.json and pbt.png."""
    from ray import tune

    from impala_tf.pbt_scheduler import ResumablePopulationBasedTraining
    from impala_tf.runtime import ray as ray_runtime

    total_frames = FLAGS.total_frames or suite.default_total_frames
    base = {
        k: v
        for k, v in config.flag_values_dict().items()
        if v is not None and k not in HYPERPARAMETERS and k not in ("logdir", "total_frames", "seed")
    }
    base["total_frames"] = total_frames
    base["games"] = ",".join(suite.games)
    base["reward_scale"] = ",".join(FLAGS.reward_scale)
    base = {k: v for k, v in base.items() if v != ""}
    started = ray_runtime.init_ray(FLAGS.ray_address)
    try:
        # By reference, not by value: run as `python -m impala_tf.pbt` this module is __main__, whose functions
        # Ray would pickle with their globals (absl's FLAGS among them).
        from impala_tf.pbt import member as member_by_reference

        trainable = tune.with_resources(member_by_reference, {"cpu": FLAGS.member_cpus})
        storage = logdir / "tune"
        if tune.Tuner.can_restore(str(storage)):
            print(f"resuming the population in {logdir}", flush=True)
            tuner = tune.Tuner.restore(
                str(storage), trainable=trainable, resume_unfinished=True, resume_errored=True
            )
        else:
            start = (
                {name: getattr(FLAGS, name) for name in HYPERPARAMETERS}
                if FLAGS.pbt_init == "flags"
                else None
            )
            population = initial_population(FLAGS.population, FLAGS.seed, start)
            writers.atomic_write_json(logdir / "initial_population.json", population)
            scheduler = ResumablePopulationBasedTraining(
                time_attr="frames",
                perturbation_interval=FLAGS.pbt_interval_frames,
                burn_in_period=FLAGS.pbt_burn_in_frames,
                hyperparam_mutations={
                    "learning_rate": tune.loguniform(1e-7, 1.0),
                    "entropy_cost": tune.loguniform(1e-7, 1.0),
                    "rmsprop_epsilon": tune.loguniform(1e-10, 1.0),
                    "max_grad_norm": tune.loguniform(1e-2, 1e4),
                },
                quantile_fraction=FLAGS.pbt_quantile,
                resample_probability=0.0,
                perturbation_factors=PERTURBATION_FACTORS,
                synch=True,
            )

            def initial(name: str):
                return tune.sample_from(lambda spec: population[spec.config["member"]][name])

            param_space = {
                "member": tune.grid_search(list(range(FLAGS.population))),
                **{name: initial(name) for name in HYPERPARAMETERS},
                "suite": suite.name,
                "games": list(suite.games),
                "reference": suite.reference,
                "normaliser": normaliser,
                "logdir": str(logdir),
                "total_frames": total_frames,
                "interval_frames": FLAGS.pbt_interval_frames,
                "fitness_episodes": FLAGS.pbt_fitness_episodes,
                "base_flags": base,
                "seed": FLAGS.seed,
            }
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    scheduler=scheduler, metric="fitness", mode="max", reuse_actors=False
                ),
                run_config=tune.RunConfig(
                    name="tune",
                    storage_path=str(logdir),
                    stop={"frames": total_frames},
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    verbose=1,
                ),
            )
        results = tuner.fit()
        if results.errors:
            print(f"error: {len(results.errors)} member(s) failed: {results.errors[0]}", file=sys.stderr)
            return 3
    finally:
        if started:
            import ray

            ray.shutdown()
    histories = read_histories(logdir)
    best, best_fitness = best_member(histories)
    writers.write_files({"pbt.png": plot_histories(histories)}, logdir)
    member_dir = logdir / "members" / best
    code = subprocess.call(
        [
            sys.executable,
            "-m",
            "impala_tf.evaluate",
            f"--logdir={member_dir}",
            f"--episodes={FLAGS.pbt_eval_episodes}",
            f"--agent={BEST_AGENT}",
        ]
    )
    exploits = sum(row["weights_from"] != member_id for member_id, rows in histories.items() for row in rows)
    writers.atomic_write_json(
        logdir / "pbt.json",
        {
            "best_member": f"members/{best}",
            "best_fitness": best_fitness,
            "members": sorted(histories),
            "exploits": exploits,
            "total_frames_per_member": total_frames,
        },
    )
    print(
        f"best member {best} (fitness {best_fitness:.2f}); {exploits} exploits; wrote {logdir}/pbt.json",
        flush=True,
    )
    return code


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from impala_tf import trainer
    from impala_tf.suites import get_suite

    trainer.quiet_logging()
    try:
        if not FLAGS.suite:
            raise rundir.UserError("--suite is required")
        if FLAGS.population < 2:
            raise rundir.UserError(f"--population must be >= 2, got {FLAGS.population}")
        if FLAGS.pbt_interval_frames < 1 or FLAGS.pbt_burn_in_frames < 0 or FLAGS.pbt_fitness_episodes < 1:
            raise rundir.UserError(
                "--pbt_interval_frames and --pbt_fitness_episodes must be >= 1, burn-in >= 0"
            )
        if not 0 < FLAGS.pbt_quantile <= 0.5:
            raise rundir.UserError(f"--pbt_quantile must be in (0, 0.5], got {FLAGS.pbt_quantile}")
        if not FLAGS.member_cpus > 0:
            raise rundir.UserError(f"--member_cpus must be > 0, got {FLAGS.member_cpus}")
        try:
            defaults = get_suite(FLAGS.suite).default_flags
        except ValueError as error:
            raise rundir.UserError(str(error)) from None
        config.set_suite_defaults({"suite": FLAGS.suite, **defaults})
        config.apply_preset()
        config.validate()
        suite = rundir.resolve_suite(FLAGS.suite, FLAGS.games)
        normaliser = None
        if FLAGS.pbt_normaliser:
            from impala_tf.report.inputs import InputError, resolve_suite

            try:
                normalisers = resolve_suite(FLAGS.suite, FLAGS.pbt_normaliser).normalisers or {}
            except InputError as error:
                raise rundir.UserError(str(error)) from None
            normaliser = {game: (float(n.low), float(n.high)) for game, n in normalisers.items()}
        logdir = Path(FLAGS.logdir).resolve()
        logdir.mkdir(parents=True, exist_ok=True)
        return run_population(suite, logdir, normaliser)
    except flags.ValidationError as error:
        raise app.UsageError(str(error)) from None
    except (rundir.UserError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    define_flags()
    app.run(main)
