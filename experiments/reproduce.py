"""Re-run a committed experiment from scratch with its exact flags: train, evaluate, collect the report's inputs.

  python -m experiments.reproduce --list                       # experiments, runs and time estimates
  python -m experiments.reproduce --experiment=minatar_experts [--runs_dir=runs/reproduce] [--only=breakout_s1]
  make reproduce EXPERIMENT=atari_tuning6

Each run is an ordinary training run in `<runs_dir>/<experiment>/<run>`: stopping the driver and running the same
command again resumes the unfinished run (the trainer resumes from its checkpoint) and skips finished ones. After
training, each run is evaluated (`impala_tf.evaluate`, `eval_episodes` games per task) and its report inputs
(config.json, eval files, episodes.csv thinned to every `episode_stride`-th game) are copied to
`leaderboards/inputs/<experiment>/<run>/`, from which `make leaderboards` rebuilds the reports.

Time estimates use the frames/s measured for each configuration on the 2-core reference machine (`FPS`); they are
printed before anything starts.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from impala_tf.envs.minatar import GAMES as MINATAR_GAMES

FLAGS = flags.FLAGS

REPO = Path(__file__).resolve().parent.parent
INPUTS = REPO / "leaderboards" / "inputs"

# Frames/s of a whole training run alone on the 2-core reference machine, by (backend, network), used only for
# estimates, each measured as a whole run with nothing beside it: MinAtar a 5M-frame expert; Atari the main job's
# 5M-frame Breakout expert (16 min, evaluation and start-up included). Two runs side by side get about half each.
FPS = {("atari", "shallow"): 5_300, ("minatar", "minatar"): 8_500, ("catch", "shallow"): 5_000}
# With replay fraction f the learner makes f / (1 - f) extra updates per fresh frame. What each costs, as a share of
# the run's time without replay, measured alone at f = 0.5: MinAtar ~6K environment frames/s against ~8.5K (the
# extra work partly hidden behind the actors), Atari Pong 3.3K against 6.1K. Catch is not measured (MinAtar's).
REPLAY_UPDATE_COST = {"atari": 0.85, "minatar": 0.4, "catch": 0.4}
# --replay_fraction's default (impala_tf.config, whose import would pull TensorFlow into this light driver; a test
# keeps the two equal).
REPLAY_FRACTION_DEFAULT = 0.5


@dataclasses.dataclass(frozen=True)
class Run:
    name: str
    suite: str
    flags: tuple[str, ...]
    frames: int
    backend: str = "atari"
    network: str = "shallow"
    eval_episodes: int = 30
    episode_stride: int = 1
    agent: str = "impala_tf"  # the leaderboard's agent: runs of one agent differ by game or seed

    def estimate_secs(self) -> float:
        seconds = self.frames / FPS.get((self.backend, self.network), 5_000)
        if int(self._flag("--replay_capacity=", "0")) > 0:
            fraction = float(self._flag("--replay_fraction=", str(REPLAY_FRACTION_DEFAULT)))
            seconds *= 1 + REPLAY_UPDATE_COST[self.backend] * fraction / (1 - fraction)
        return seconds

    def _flag(self, prefix: str, default: str) -> str:
        return next((f.removeprefix(prefix) for f in self.flags if f.startswith(prefix)), default)


# The MinAtar suite's defaults when the experts and the multi-task agent were first run, pinned so that a later
# change of default (see experiments/minatar_sweep.py) does not change what these experiments are.
_MINATAR_V1 = ("--vtrace_lambda=1.0", "--normsprop_debias", "--batch_size=32", "--replay_capacity=0")


def _tuning6_runs(flags: tuple[str, ...], agent: str) -> list[Run]:
    """The paper's six tuning games as single-game experts (minimal action sets, shallow network): one seed, two
    for breakout and pong; 10M frames, 20M for pong."""
    runs = []
    for game in ("beam_rider", "breakout", "pong", "qbert", "seaquest", "space_invaders"):
        seeds = (1, 2) if game in ("breakout", "pong") else (1,)
        frames = 20_000_000 if game == "pong" else 10_000_000
        for seed in seeds:
            runs.append(
                Run(
                    f"{game}_s{seed}",
                    "atari_tuning6",
                    (f"--games={game}", "--action_set=minimal", f"--seed={seed}", *flags),
                    frames,
                    episode_stride=5,
                    agent=agent,
                )
            )
    return runs


def _atari_tuning6() -> list[Run]:
    """The tuning games at the Atari defaults (batches of 32)."""
    return _tuning6_runs((), "impala_tf_shallow_experts")


def _atari_tuning6_batch8() -> list[Run]:
    """The tuning games at batches of 8 (4x the updates per frame: Breakout 56.1 and 54.2 at 10M frames against
    the defaults' 24.0 and 31.3, leaderboards/inputs/atari_tuning6/diagnosis/), pinned."""
    return _tuning6_runs(("--batch_size=8",), "impala_tf_shallow_experts_batch8")


def _atari_tuning6_replay() -> list[Run]:
    """Breakout and Pong, two seeds each, at batches of 8 with half of every batch replayed from the last 64
    unrolls, each game at the step it learns with: Breakout at the defaults' lr 1.2e-3 (75.5 at 10M frames, seed
    1), Pong at the debiased lr 3e-4 that keeps its torso alive (+3.7 at 20M frames, seed 1); lr 1.2e-3 kills
    Pong's first layer (leaderboards/inputs/atari_tuning6/diagnosis/README.md). Two settings, not one default."""
    replay = ("--batch_size=8", "--replay_capacity=64", "--replay_fraction=0.5")
    pong = (*replay, "--rmsprop_debias", "--learning_rate=3e-4")
    return _breakout_and_pong(replay, pong, "impala_tf_shallow_experts_replay")


def _breakout_and_pong(breakout: tuple[str, ...], pong: tuple[str, ...], agent: str) -> list[Run]:
    """Breakout (10M frames) and Pong (20M) experts with the given flags, seeds 1 and 2."""
    return [
        Run(
            f"{game}_s{seed}",
            "atari_tuning6",
            (f"--games={game}", "--action_set=minimal", f"--seed={seed}", *game_flags),
            frames,
            agent=agent,
        )
        for game, frames, game_flags in (("breakout", 10_000_000, breakout), ("pong", 20_000_000, pong))
        for seed in (1, 2)
    ]


def _atari_tuning6_replay75() -> list[Run]:
    """Breakout and Pong, two seeds each, at one setting: batches of 8, the debiased lr 3e-4 that keeps Pong's
    torso alive, and three quarters of every batch replayed from the last 128 unrolls (4x the updates each fresh
    frame feeds without replay; leaderboards/inputs/atari_tuning6/diagnosis/README.md)."""
    flags = (
        "--batch_size=8",
        "--rmsprop_debias",
        "--learning_rate=3e-4",
        "--replay_capacity=128",
        "--replay_fraction=0.75",
    )
    return _breakout_and_pong(flags, flags, "impala_tf_shallow_experts_replay75")


def _minatar_experts() -> list[Run]:
    """Single-game MinAtar experts, the MinAtar protocol, 5M frames each, 3 seeds."""
    return [
        Run(
            f"{game}_s{seed}",
            "minatar",
            (f"--games={game}", f"--seed={seed}", *_MINATAR_V1),
            5_000_000,
            backend="minatar",
            network="minatar",
            eval_episodes=100,
            episode_stride=10,
            agent="impala_tf_minatar_experts",
        )
        for game in MINATAR_GAMES
        for seed in (1, 2, 3)
    ]


def _multitask_runs(flags: tuple[str, ...], agent: str) -> list[Run]:
    """One agent on the five MinAtar games, 5M frames per game (25M in all), 3 seeds."""
    return [
        Run(
            f"multitask_s{seed}",
            "minatar",
            (f"--seed={seed}", *flags),
            25_000_000,
            backend="minatar",
            network="minatar",
            eval_episodes=100,
            episode_stride=10,
            agent=agent,
        )
        for seed in (1, 2, 3)
    ]


def _minatar_multitask() -> list[Run]:
    """The multi-task agent with the suite's defaults when it was first run (λ = 1, batches of 32), pinned."""
    return _multitask_runs(_MINATAR_V1, "impala_tf_minatar_multitask")


def _minatar_multitask_batch8() -> list[Run]:
    """The multi-task agent at the suite's defaults since the sweep (V-trace λ = 0.5, batches of 8), pinned; its
    experts are the sweep's `lambda0.5_batch8_<game>_s<seed>` runs."""
    return _multitask_runs(
        ("--vtrace_lambda=0.5", "--batch_size=8", "--replay_capacity=0"),
        "impala_tf_minatar_multitask_lambda0.5_batch8",
    )


def _ablation() -> list[Run]:
    """The corrections x replay x lag grid and the synchronous row (experiments/ablation.py), seed-major, so that
    a grid stopped part-way has whole seeds."""
    from experiments import ablation

    return [
        Run(
            f"{cell.name}_s{seed}",
            "minatar",
            (f"--seed={seed}", *cell.flags),
            ablation.FRAMES,
            backend="minatar",
            network="minatar",
            eval_episodes=ablation.EVAL_EPISODES,
            episode_stride=10,
            agent=cell.name,
        )
        for seed in ablation.SEEDS
        for cell in ablation.cells()
    ]


def _minatar_sweep() -> list[Run]:
    """The MinAtar single-game settings sweep (experiments/minatar_sweep.py), 5M frames per run."""
    from experiments import minatar_sweep

    return [
        Run(
            run.name,
            "minatar",
            run.flags,
            minatar_sweep.FRAMES,
            backend="minatar",
            network="minatar",
            eval_episodes=100,
            episode_stride=minatar_sweep.KEPT_EVERY,
            agent=run.agent,
        )
        for run in minatar_sweep.runs()
    ]


EXPERIMENTS = {
    "atari_tuning6": _atari_tuning6,
    "atari_tuning6_batch8": _atari_tuning6_batch8,
    "atari_tuning6_replay": _atari_tuning6_replay,
    "atari_tuning6_replay75": _atari_tuning6_replay75,
    "minatar_experts": _minatar_experts,
    "minatar_multitask": _minatar_multitask,
    "minatar_multitask_batch8": _minatar_multitask_batch8,
    "ablation": _ablation,
    "minatar_sweep": _minatar_sweep,
}


def define_flags() -> None:
    # Defined only when run as a binary, so that importing this module (tests) defines no flags.
    flags.DEFINE_enum("experiment", None, list(EXPERIMENTS), "The experiment to re-run.")
    flags.DEFINE_bool(
        "list", False, "List the experiments (or --experiment's runs), commands and time estimates, and exit."
    )
    flags.DEFINE_string("runs_dir", "runs/reproduce", "Where the run directories go.")
    flags.DEFINE_list("only", [], "Run only these runs of the experiment (names as --list shows).")
    flags.DEFINE_bool("collect", True, "Copy each finished run's report inputs into leaderboards/inputs/.")


def _hours(secs: float) -> str:
    return f"{secs / 3600:.1f} h" if secs >= 3600 else f"{secs / 60:.0f} min"


def describe(name: str, only: list[str] | None = None) -> str:
    runs = [run for run in EXPERIMENTS[name]() if not only or run.name in only]
    total = sum(run.estimate_secs() for run in runs)
    lines = [f"{name}: {len(runs)} runs, about {_hours(total)} on 2 cores"]
    for run in runs:
        lines.append(
            f"  {run.name:<26} {run.frames / 1e6:>5.0f}M frames  ~{_hours(run.estimate_secs()):>7}  "
            f"python -m suites.{run.suite} {' '.join(run.flags)} --total_frames={run.frames}"
        )
    return "\n".join(lines)


def _python(*args: str) -> int:
    child = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO)
    while True:
        try:
            return child.wait()
        except KeyboardInterrupt:
            # Ctrl-C reaches the child too (one process group): the trainer checkpoints and exits 130, which
            # reproduce() reports in one line with how to resume; waiting here keeps a traceback off the screen.
            continue


def _known_runs(name: str, only: list[str]) -> bool:
    """Whether every name in `only` is a run of experiment `name` (else one line on stderr)."""
    unknown = sorted(set(only) - {run.name for run in EXPERIMENTS[name]()})
    if unknown:
        print(f"error: {name} has no run {', '.join(unknown)}; --list shows them", file=sys.stderr)
    return not unknown


def reproduce(name: str, runs_dir: Path, only: list[str], collect: bool) -> int:
    if not _known_runs(name, only):
        return 1
    runs = [run for run in EXPERIMENTS[name]() if not only or run.name in only]
    print(describe(name, only), flush=True)
    for i, run in enumerate(runs, 1):
        logdir = runs_dir / name / run.name
        print(f"[{i}/{len(runs)}] {run.name}: ~{_hours(run.estimate_secs())}, {logdir}", flush=True)
        start = time.time()
        code = _python(
            f"suites.{run.suite}", f"--logdir={logdir}", f"--total_frames={run.frames}", *run.flags
        )
        if code != 0:
            print(
                f"error: {run.name} stopped with exit code {code}; the same command resumes it",
                file=sys.stderr,
            )
            return code
        if not (logdir / "eval_summary.json").exists():
            code = _python(
                "impala_tf.evaluate",
                f"--logdir={logdir}",
                f"--episodes={run.eval_episodes}",
                f"--agent={run.agent}",
            )
            if code != 0:
                return code
        if collect:
            from experiments.collect_inputs import collect as collect_run

            collect_run(logdir.parent, INPUTS / name, run.episode_stride, only=run.name)
        print(f"[{i}/{len(runs)}] {run.name} done in {_hours(time.time() - start)}", flush=True)
    return 0


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.list:  # every experiment, or the one --experiment names (its --only runs)
        names = [FLAGS.experiment] if FLAGS.experiment else list(EXPERIMENTS)
        if FLAGS.experiment and not _known_runs(FLAGS.experiment, FLAGS.only):
            return 1
        print("\n\n".join(describe(name, FLAGS.only) for name in names))
        return 0
    if not FLAGS.experiment:
        raise app.UsageError("--experiment is required (or --list)")
    return reproduce(FLAGS.experiment, Path(FLAGS.runs_dir), FLAGS.only, FLAGS.collect)


if __name__ == "__main__":
    define_flags()
    app.run(main)
