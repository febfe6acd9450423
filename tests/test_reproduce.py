"""experiments.reproduce: the registry of committed experiments and its driver's checks (no training here)."""

import subprocess
import sys
from pathlib import Path

from experiments import reproduce

REPO = Path(__file__).resolve().parents[1]


def test_every_experiment_lists_its_runs_with_exact_commands_and_an_estimate():
    for name in reproduce.EXPERIMENTS:
        text = reproduce.describe(name)
        runs = reproduce.EXPERIMENTS[name]()
        assert text.startswith(f"{name}: {len(runs)} runs, about ")
        for run in runs:
            assert f"python -m suites.{run.suite} {' '.join(run.flags)} --total_frames={run.frames}" in text


def test_run_names_are_unique_within_an_experiment():
    for name, make_runs in reproduce.EXPERIMENTS.items():
        names = [run.name for run in make_runs()]
        assert len(names) == len(set(names)), name


def test_unknown_run_is_one_line_and_exit_1_before_anything_starts(tmp_path, capsys):
    assert reproduce.reproduce("minatar_experts", tmp_path, ["no_such_run"], collect=False) == 1
    assert "minatar_experts has no run no_such_run" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_list_with_an_experiment_shows_only_that_experiments_runs_and_rejects_unknown_ones():
    def listing(*flags: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "experiments.reproduce", "--experiment=ablation", "--list", *flags]
        return subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)

    result = listing("--only=vtrace_s1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ablation: 1 runs, about ")
    assert "vtrace_s1" in result.stdout and "minatar_experts" not in result.stdout
    result = listing("--only=no_such_run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "ablation has no run no_such_run" in result.stderr


def test_time_estimate_grows_with_the_replayed_share_of_each_batch():
    def estimate(*flags: str) -> float:
        return reproduce.Run("r", "atari_tuning6", flags, 10_000_000).estimate_secs()

    fresh = estimate()
    half = estimate("--replay_capacity=64")  # the flag's default fraction
    assert half == estimate("--replay_capacity=64", "--replay_fraction=0.5")
    assert fresh < half < estimate("--replay_capacity=128", "--replay_fraction=0.75")
    # No buffer, no replay:
    assert estimate("--replay_fraction=0.75") == estimate("--replay_capacity=0") == fresh


def test_the_estimates_replay_fraction_default_is_the_training_flags():
    from absl import flags

    from impala_tf import config  # noqa: F401  (defines the training flags)

    assert flags.FLAGS["replay_fraction"].default == reproduce.REPLAY_FRACTION_DEFAULT


def test_ctrl_c_waits_for_the_run_to_checkpoint_and_reports_its_exit_code_without_a_traceback(monkeypatch):
    class InterruptedChild:
        """A child whose first wait is interrupted by Ctrl-C; it then stops as the trainer does (exit 130)."""

        waits = 0

        def __init__(self, *args, **kwargs):
            pass

        def wait(self):
            InterruptedChild.waits += 1
            if InterruptedChild.waits == 1:
                raise KeyboardInterrupt
            return 130

    monkeypatch.setattr(reproduce.subprocess, "Popen", InterruptedChild)
    assert reproduce._python("suites.catch") == 130
    assert InterruptedChild.waits == 2
