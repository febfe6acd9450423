"""Fixtures shared by several test files: a small RunSpec, and a run directory holding an untrained checkpoint."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from impala_tf import agent, checkpoints, suites
from impala_tf import learner as learner_lib
from impala_tf.losses import LossConfig


def small_run_spec(suite: suites.Suite, **overrides: Any) -> agent.RunSpec:
    """A RunSpec for tests: shallow network, no LSTM or PopArt, one actor with one environment, no XLA."""
    fields = dict(
        suite=suite,
        protocol=None,
        action_set=None,
        seed=1,
        network="shallow",
        use_lstm=False,
        popart=False,
        reward_clipping="abs_one",
        unroll_length=5,
        num_actors=1,
        envs_per_actor=1,
        inference_xla=False,
    )
    return agent.RunSpec(**(fields | overrides))


@pytest.fixture(scope="session")
def run_spec() -> Callable[..., agent.RunSpec]:
    """`run_spec(suite, **overrides)`: see `small_run_spec`."""
    return small_run_spec


def write_untrained_run(
    root: Path,
    suite_name: str,
    games: Sequence[str],
    *,
    use_lstm: bool,
    popart_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    eval_episodes: int | None = None,
) -> Path:
    """A run directory as the trainer leaves one (config.json and a checkpoint) for an untrained learner.

    The weights are perturbed (seeded) so that greedy actions are far from ties; the learner is at frame 4321.
    `popart_stats` = (μ, ν) per game turns PopArt on and stores those statistics in the checkpoint.
    """
    suite = suites.get_suite(suite_name).restrict(list(games))
    popart_on = popart_stats is not None
    spec = small_run_spec(suite, use_lstm=use_lstm, popart=popart_on)
    env = agent.make_env(spec, [0], 1)
    network = agent.make_network(spec, env)
    env.close()
    rng = np.random.default_rng(0)
    for variable in network.variables:
        variable.assign(variable.numpy() + rng.normal(0, 0.05, variable.shape).astype(np.float32))
    learner = learner_lib.Learner(
        network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1000, xla=False
    )
    learner.num_frames.assign(4321)
    if popart_on:
        learner.popart_mu.assign(popart_stats[0])
        learner.popart_nu.assign(popart_stats[1])
    run = root / f"run_{suite_name}"
    checkpoints.RunCheckpoints(run / "checkpoints", learner).save()
    flag_values = {
        "suite": suite_name,
        "network": spec.network,
        "use_lstm": use_lstm,
        "popart": popart_on,
        "reward_clipping": spec.reward_clipping,
        "unroll_length": spec.unroll_length,
        "seed": spec.seed,
        "xla": "off",
        "action_set": None,
        # The loss the learner above has (LossConfig's defaults), as the trainer records it.
        **{
            name: getattr(LossConfig(), name)
            for name in (
                "discount",
                "baseline_cost",
                "entropy_cost",
                "correction",
                "clip_rho_threshold",
                "clip_pg_rho_threshold",
                "vtrace_lambda",
            )
        },
    }
    if eval_episodes is not None:
        flag_values["eval_episodes"] = eval_episodes
    config = {"suite": suite_name, "games": list(games), "protocol": suite.protocol, "flags": flag_values}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.fixture(scope="session")
def untrained_run() -> Callable[..., Path]:
    """`untrained_run(root, suite_name, games, *, use_lstm, popart_stats=None, eval_episodes=None)`: see
    `write_untrained_run`."""
    return write_untrained_run


def leaderboards_command(module: str, *needles: str, out: Path | None = None) -> list[str]:
    """The arguments `make leaderboards` passes to `python -m <module>` on its line that holds every needle, as
    make expands them (`make -n`): the Makefile stays the one list of each committed report's inputs. With `out`,
    its `--out=` names that directory instead. The paths are relative to the repository."""
    repo = Path(__file__).resolve().parents[1]
    dry_run = subprocess.run(
        ["make", "-n", "leaderboards"], cwd=repo, capture_output=True, text=True, timeout=60, check=True
    )
    for line in dry_run.stdout.splitlines():
        words = line.split()
        if words[1:3] == ["-m", module] and all(needle in words for needle in needles):
            args = words[3:]
            if out is not None:
                args = [arg for arg in args if not arg.startswith("--out=")] + [f"--out={out}"]
            return args
    raise AssertionError(f"`make leaderboards` runs no `-m {module}` with {' '.join(needles)}")


@pytest.fixture(scope="session")
def makefile_command() -> Callable[..., list[str]]:
    """`makefile_command(module, *needles, out=None)`: see `leaderboards_command`."""
    return leaderboards_command
