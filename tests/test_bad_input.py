"""Bad input everywhere a user types: one line on stderr, a non-zero exit, no traceback, nothing written.

Every case runs a real binary in a subprocess; a module fixture runs a group's cases in parallel (they mostly
wait on TensorFlow's import) and each test checks one of them.
"""

import fcntl
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A script that hides one Atari ROM from the environments, as an ale-py without it would, then runs atari5.
WITHOUT_QBERT_ROM = """
from impala_tf import trainer
from impala_tf.envs import atari
roms = atari.rom_ids()
atari.rom_ids = lambda: tuple(r for r in roms if r != "qbert")
trainer.main_for_suite("atari5")
"""


def other_suite_run(logdir: Path) -> None:
    logdir.mkdir()
    (logdir / "config.json").write_text(json.dumps({"suite": "minatar", "games": ["breakout"], "flags": {}}))


def deep_network_run(logdir: Path) -> None:
    logdir.mkdir()
    config = {"suite": "catch", "games": ["catch"], "flags": {"network": "deep"}, "num_actions": 3}
    (logdir / "config.json").write_text(json.dumps(config))


HELD_LOCKS = []  # open lock files of "another training process": held until this module's tests end


def run_dir_held_by_another_trainer(logdir: Path) -> None:
    """A run directory whose .lock another process holds (flock, as the trainer takes it; an open file
    description of this test process conflicts with the subprocess's like another trainer's would)."""
    logdir.mkdir()
    (logdir / "episodes.csv").write_text("task,frames,episode_return,episode_frames,wall_time\n")
    handle = open(logdir / ".lock", "a+")  # noqa: SIM115 - kept open in HELD_LOCKS
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    handle.write("12345\n")
    handle.flush()
    HELD_LOCKS.append(handle)


def malformed_suite_file(logdir: Path) -> None:
    (logdir.parent / "suite.json").write_text('{"name": "mine", "backend": "atari", "games": ["pong"')


def run_dir_without_checkpoints(logdir: Path) -> None:
    logdir.mkdir()
    flags = {
        "suite": "catch",
        "network": "shallow",
        "use_lstm": False,
        "reward_clipping": "abs_one",
        "unroll_length": 10,
    }
    (logdir / "config.json").write_text(json.dumps({"suite": "catch", "games": ["catch"], "flags": flags}))


# id: (command, what its last line must say, optional setup of the logdir); flags may name {logdir}, {a_file}
# (a regular file) and {suite_file} (the case's suite JSON).
FAST_CASES = {
    "unknown_suite": (
        ["-m", "suites.custom", "--suite=nope", "--logdir={logdir}"],
        "unknown suite 'nope'; valid: atari57",
    ),
    "unknown_game": (
        ["-m", "suites.atari5", "--games=nope", "--logdir={logdir}"],
        "'nope' not in suite 'atari5'; valid:",
    ),
    "too_few_environments": (
        ["-m", "suites.atari5", "--num_actors=1", "--envs_per_actor=2", "--logdir={logdir}"],
        "cannot train all 5 tasks of atari5",
    ),
    "logdir_of_another_suite": (
        ["-m", "suites.catch", "--logdir={logdir}"],
        "holds a run of suite 'minatar' (1 games); this run is 'catch'",
        other_suite_run,
    ),
    "missing_rom": (
        ["-c", WITHOUT_QBERT_ROM, "--logdir={logdir}"],
        "Atari game 'qbert' has no ROM in the installed ale-py",
    ),
    "evaluate_nonexistent_logdir": (
        ["-m", "impala_tf.evaluate", "--logdir={logdir}"],
        "is not a run directory (no config.json)",
    ),
}
SLOW_CASES = {
    "negative_frames": (
        ["-m", "suites.catch", "--total_frames=-5", "--logdir={logdir}"],
        "--total_frames must be >= 1",
    ),
    "zero_unroll": (
        ["-m", "suites.catch", "--unroll_length=0", "--logdir={logdir}"],
        "--unroll_length must be >= 1",
    ),
    "zero_actors": (
        ["-m", "suites.catch", "--num_actors=0", "--logdir={logdir}"],
        "--num_actors must be >= 1",
    ),
    "batch_not_divisible_by_devices": (
        ["-m", "suites.catch", "--batch_size=5", "--learner_devices=2", "--logdir={logdir}"],
        "--batch_size=5 must be divisible by --learner_devices=2",
    ),
    "negative_queue": (
        ["-m", "suites.catch", "--queue_capacity=-1", "--logdir={logdir}"],
        "--queue_capacity must be >= 0",
    ),
    "negative_intra_op_threads": (
        ["-m", "suites.catch", "--intra_op_threads=-1", "--logdir={logdir}"],
        "--intra_op_threads must be >= 0",
    ),
    "popart_single_task": (
        ["-m", "suites.catch", "--popart", "--logdir={logdir}"],
        "--popart normalises values per task",
    ),
    "minimal_actions_multitask": (
        ["-m", "suites.atari5", "--action_set=minimal", "--logdir={logdir}"],
        "action_set='minimal' needs a single game",
    ),
    "reward_scale_syntax": (
        ["-m", "suites.catch", "--reward_scale=pong", "--logdir={logdir}"],
        "expects GAME=FACTOR",
    ),
    "reward_scale_unknown_game": (
        ["-m", "suites.catch", "--reward_scale=pong=2", "--logdir={logdir}"],
        "--reward_scale names games outside the suite: pong",
    ),
    "zero_learning_rate": (
        ["-m", "suites.catch", "--learning_rate=0", "--logdir={logdir}"],
        "--learning_rate must be a positive number, got 0.0",
    ),
    "nan_learning_rate": (
        ["-m", "suites.catch", "--learning_rate=nan", "--logdir={logdir}"],
        "--learning_rate must be a positive number, got nan",
    ),
    "zero_max_grad_norm": (
        ["-m", "suites.catch", "--max_grad_norm=0", "--logdir={logdir}"],
        "--max_grad_norm must be a positive number",
    ),
    "zero_rmsprop_epsilon": (
        ["-m", "suites.catch", "--rmsprop_epsilon=0", "--logdir={logdir}"],
        "--rmsprop_epsilon must be a positive number",
    ),
    "negative_clip_rho": (
        ["-m", "suites.catch", "--clip_rho_threshold=-1", "--logdir={logdir}"],
        "--clip_rho_threshold must be a positive number",
    ),
    "unknown_preset": (
        ["-m", "suites.catch", "--preset=mine", "--logdir={logdir}"],
        "--preset",
    ),
    "discount_out_of_range": (
        ["-m", "suites.catch", "--discount=2", "--logdir={logdir}"],
        "--discount must be in [0, 1]",
    ),
    "missing_suite_file": (
        ["-m", "suites.custom", "--suite=/nonexistent/suite.json", "--logdir={logdir}"],
        "cannot read suite file '/nonexistent/suite.json'",
    ),
    "malformed_suite_file": (
        ["-m", "suites.custom", "--suite={suite_file}", "--logdir={logdir}"],
        "is not valid JSON",
        malformed_suite_file,
    ),
    "init_from_nonexistent": (
        ["-m", "suites.catch", "--init_from=/nonexistent/run", "--logdir={logdir}"],
        "--init_from=/nonexistent/run is not a run directory",
    ),
    "logdir_under_a_file": (["-m", "suites.catch", "--logdir={a_file}/run"], "cannot write to --logdir="),
    "unexpected_argument": (
        ["-m", "suites.catch", "extra", "--logdir={logdir}"],
        "unexpected arguments: extra",
    ),
    "evaluate_run_without_checkpoints": (
        ["-m", "impala_tf.evaluate", "--logdir={logdir}"],
        "no checkpoint in",
        run_dir_without_checkpoints,
    ),
    "unknown_protocol": (
        ["-m", "suites.atari5", "--games=qbert", "--protocol=nope", "--logdir={logdir}"],
        "unknown protocol 'nope' for backend 'atari'; valid: impala, machado",
    ),
    "zero_batch": (
        ["-m", "suites.catch", "--batch_size=0", "--logdir={logdir}"],
        "--batch_size must be >= 1, got 0",
    ),
    "logdir_of_another_network": (
        ["-m", "suites.catch", "--logdir={logdir}"],
        "--network: checkpoint 'deep', now 'shallow'",
        deep_network_run,
    ),
    "logdir_in_use": (
        ["-m", "suites.catch", "--logdir={logdir}"],
        "is in use by another training process (pid 12345)",
        run_dir_held_by_another_trainer,
    ),
    "missing_logdir": (["-m", "suites.catch"], "--logdir is required"),
    "unknown_network": (["-m", "suites.catch", "--network=resnet", "--logdir={logdir}"], "<shallow|deep>"),
    "zero_frames": (
        ["-m", "suites.catch", "--total_frames=0", "--logdir={logdir}"],
        "--total_frames must be >= 1, got 0",
    ),
}


def run_cases(cases: dict, root: Path) -> dict:
    """Runs the cases, 8 at a time; returns id -> (returncode, stderr, logdir, contents of the logdir before)."""
    (root / "a_file").write_text("not a directory\n")

    def run(case_id):
        command, _, *setup = cases[case_id]
        logdir = root / case_id / "run"
        logdir.parent.mkdir()
        if setup:
            setup[0](logdir)
        before = contents(logdir)
        paths = {"logdir": logdir, "a_file": root / "a_file", "suite_file": logdir.parent / "suite.json"}
        argv = [arg.format(**paths) if arg.startswith("--") else arg for arg in command]
        process = subprocess.run(
            [sys.executable, *argv],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        return case_id, (process.returncode, process.stderr, logdir, before)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(run, cases))


@pytest.fixture(scope="module")
def fast_results(tmp_path_factory):
    return run_cases(FAST_CASES, tmp_path_factory.mktemp("bad_input_fast"))


@pytest.fixture(scope="module")
def slow_results(tmp_path_factory):
    return run_cases(SLOW_CASES, tmp_path_factory.mktemp("bad_input_slow"))


def check(result, expected: str) -> None:
    returncode, stderr, logdir, before = result
    assert returncode != 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    # The message is the last line, or, for absl's flag errors, the line before its "Pass --helpshort" hint.
    message = lines[-2] if lines[-1].startswith("Pass --helpshort") else lines[-1]
    assert expected in message, stderr[-2000:]
    assert contents(logdir) == before  # nothing written: no logdir, or the one that was there untouched


def contents(directory: Path) -> dict[str, bytes] | None:
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case_id", list(FAST_CASES))
def test_bad_input_is_one_line_nonzero_and_writes_nothing(fast_results, case_id):
    check(fast_results[case_id], FAST_CASES[case_id][1])


@pytest.mark.slow
@pytest.mark.parametrize("case_id", list(SLOW_CASES))
def test_more_bad_input_is_one_line_nonzero_and_writes_nothing(slow_results, case_id):
    check(slow_results[case_id], SLOW_CASES[case_id][1])
