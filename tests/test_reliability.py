"""Fault injection (issue 8): kill -9, corrupt checkpoints, NaNs, failing actors, a full disk, signals.

The subprocess tests run the real binary (`python -m suites.catch`) the way a user would and look only at what it
leaves behind: exit code, stderr's last line, the run directory.
"""

import errno
import json
import logging
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from impala_tf import agent, checkpoints, trainer, writers
from impala_tf import learner as learner_lib
from impala_tf.actor import ParamSnapshot
from impala_tf.envs.base import BatchedEnv, BatchedTimeStep
from impala_tf.losses import LossConfig
from impala_tf.networks import NetworkConfig, make_network
from impala_tf.runtime import local
from impala_tf.suites import get_suite

FLAGS = flags.FLAGS
REPO = Path(__file__).resolve().parents[1]
T, B = 5, 8
CATCH_FLAGS = dict(unroll_length=T, batch_size=B, num_actors=1, envs_per_actor=8, learning_rate=0.01)
# The binaries' flags for a quick Catch run that checkpoints every second.
FAST_RUN = ["--checkpoint_every_secs=1", "--progress_every_secs=1", "--learning_rate=0.01"]


# --- helpers ---------------------------------------------------------------------------------------------------


def binary(logdir: Path, *args: str, env: dict | None = None, **popen) -> subprocess.Popen:
    """Starts `python -m suites.catch --logdir=LOGDIR ARGS` (stdout piped, line by line)."""
    return subprocess.Popen(
        [sys.executable, "-m", "suites.catch", f"--logdir={logdir}", *args],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def wait_for_training(process: subprocess.Popen, checkpoints_dir: Path | None = None) -> None:
    """Reads stdout until the first progress line (training has begun), then, given `checkpoints_dir`, waits
    for a checkpoint to be listed there."""
    while not (line := process.stdout.readline()).startswith("frames "):
        if not line:
            raise AssertionError(f"exited before training: {process.wait()}\n{process.stderr.read()[-3000:]}")
    deadline = time.time() + 60
    while checkpoints_dir is not None and not checkpoints.checkpoint_paths(checkpoints_dir):
        assert time.time() < deadline, "no checkpoint within 60 s"
        time.sleep(0.05)


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def checkpoint_counters(logdir: Path) -> dict[str, int]:
    """Counters of the checkpoint a resume would start from: the newest readable one."""
    path = checkpoints.checkpoint_paths(logdir / "checkpoints")[-1]
    reader = tf.train.load_checkpoint(path)
    names = ("num_frames", "num_updates", "num_nonfinite")
    return {n: int(reader.get_tensor(f"learner/{n}/.ATTRIBUTES/VARIABLE_VALUE")) for n in names}


def episode_rows(logdir: Path) -> list[str]:
    """episodes.csv rows as written; asserts the file has its header and no torn row."""
    text = (logdir / "episodes.csv").read_text()
    assert text.startswith(",".join(writers.EPISODE_COLUMNS) + "\n")
    assert text.endswith("\n"), "torn last row"
    rows = text.splitlines()[1:]
    for row in rows:
        task, frames, episode_return, episode_frames, wall_time = row.split(",")
        assert task == "catch" and int(frames) > 0 and float(episode_return) in (-1.0, 1.0)
        assert int(episode_frames) == 9 and float(wall_time) > 0
    return rows


def tensorboard_scalars(logdir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of `tag` over every event file, read the way TensorBoard reads them."""
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(
        str(logdir / "tensorboard"), size_guidance={"tensors": 0}
    )
    accumulator.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def train_in_process(logdir: Path, **overrides) -> int:
    """The catch binary's work in this process (for tests that patch its environment)."""
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(suite="catch", logdir=str(logdir), **{**CATCH_FLAGS, **overrides}):
        return trainer.Trainer(get_suite("catch"), str(logdir)).run()


# --- kill -9 ---------------------------------------------------------------------------------------------------


def kill_and_resume(
    tmp_path: Path, total_frames: int, kill_after: list[float], wait_for_progress: bool
) -> None:
    """Kills the run (SIGKILL) once per entry of `kill_after` (seconds after start, or after its first progress
    line), re-running the same command each time, then lets it finish; checks what a resume promises."""
    logdir = tmp_path / "run"
    args = [f"--total_frames={total_frames}", *FAST_RUN]
    kept_before_resume = []  # per kill: the rows a resume must keep, verbatim
    for delay in kill_after:
        process = binary(logdir, *args)
        if wait_for_progress:
            wait_for_training(process, logdir / "checkpoints")
        time.sleep(delay)
        assert process.poll() is None, "the run ended before the kill: raise total_frames"
        process.kill()
        process.communicate()
        if (logdir / "checkpoints").exists() and checkpoints.checkpoint_paths(logdir / "checkpoints"):
            frames = checkpoint_counters(logdir)["num_frames"]
            text = (logdir / "episodes.csv").read_text()
            complete = text[: text.rfind("\n") + 1].splitlines()[1:]  # a torn last row lacks its newline
            kept_before_resume.append((frames, [r for r in complete if int(r.split(",")[1]) <= frames]))
    final = binary(logdir, *args)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-3000:]
    assert "Traceback" not in err

    counters = checkpoint_counters(logdir)
    assert counters["num_frames"] >= total_frames
    # Frames and updates continued from the checkpoint: every update of every attempt counted exactly once.
    assert counters["num_frames"] == counters["num_updates"] * 10 * 16  # the catch suite's T=10, B=16
    if kept_before_resume:
        assert f"at {kept_before_resume[-1][0]:,} frames" in out  # resumed from the last checkpoint
    rows = episode_rows(logdir)
    frames = [int(r.split(",")[1]) for r in rows]
    assert frames == sorted(frames) and frames[-1] <= counters["num_frames"]
    for checkpoint_frames, kept in kept_before_resume:
        assert rows[: len(kept)] == kept  # nothing written before a checkpoint was lost or rewritten
        after = rows[len(kept) :]
        assert not after or int(after[0].split(",")[1]) > checkpoint_frames
    # Killed writes leave no temporaries behind once the run has resumed.
    assert not [p for p in logdir.rglob("*.tmp")] and not [p for p in logdir.rglob("*_temp")]
    # TensorBoard reads every event file, including those of killed attempts.
    steps = [step for step, _ in tensorboard_scalars(logdir, "perf/frames_per_second")]
    assert steps and max(steps) >= total_frames


def test_kill_9_twice_during_training_then_resume_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(0)
    kill_and_resume(tmp_path, 40_000, [rng.uniform(0.0, 1.0) for _ in range(2)], wait_for_progress=True)


@pytest.mark.slow
def test_kill_9_at_random_moments_including_startup_then_resume(tmp_path):
    rng = random.Random(1)
    kill_and_resume(tmp_path, 100_000, [rng.uniform(1.0, 15.0) for _ in range(6)], wait_for_progress=False)


# --- corrupt checkpoints ---------------------------------------------------------------------------------------


def small_learner() -> learner_lib.Learner:
    network = make_network(NetworkConfig(torso="shallow", num_actions=3), (10, 5, 1))
    network.step(
        np.zeros((1, 10, 5, 1), np.uint8),
        np.zeros(1, np.int32),
        np.zeros(1, np.float32),
        np.zeros(1, np.uint8),
        np.zeros(1, np.int32),
        network.initial_state(1),
    )
    return learner_lib.Learner(
        network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1000, xla=False
    )


def saved_checkpoints(directory: Path, counts: list[int]) -> list[str]:
    """Saves one checkpoint per entry of `counts`, with num_updates = num_frames = that count."""
    learner = small_learner()
    saver = checkpoints.RunCheckpoints(directory, learner)
    paths = []
    for count in counts:
        learner.num_updates.assign(count)
        learner.num_frames.assign(count)
        paths.append(saver.save())
    return paths


def test_truncated_newest_checkpoint_falls_back_to_the_previous_one_with_a_warning(tmp_path, caplog):
    paths = saved_checkpoints(tmp_path, [10, 20])
    data = Path(paths[-1] + ".data-00000-of-00001")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # killed mid-copy
    with caplog.at_level(logging.WARNING):
        frames = checkpoints.RunCheckpoints(tmp_path, small_learner()).restore_latest()
    assert frames == 10
    assert any("ckpt-20" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


def test_corrupt_checkpoint_index_falls_back_to_the_checkpoint_files(tmp_path, caplog):
    saved_checkpoints(tmp_path, [10, 20])
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-2')  # torn
    with caplog.at_level(logging.WARNING):
        saver = checkpoints.RunCheckpoints(tmp_path, small_learner())
        frames = saver.restore_latest()
    assert frames == 20  # not a silent fresh start
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    # The run goes on checkpointing with a fresh index.
    saver._learner.num_updates.assign(30)
    assert saver.save().endswith("ckpt-30")
    assert checkpoints.checkpoint_paths(tmp_path)[-1].endswith("ckpt-30")


def test_no_readable_checkpoint_is_a_one_line_error(tmp_path):
    for path in saved_checkpoints(tmp_path, [10]):
        Path(path + ".index").write_bytes(b"garbage")
    with pytest.raises(checkpoints.CheckpointError, match="no readable checkpoint .*ckpt-10"):
        checkpoints.RunCheckpoints(tmp_path, small_learner()).restore_latest()


def test_checkpoint_of_another_network_is_a_clear_error_not_a_shape_traceback(tmp_path):
    saved_checkpoints(tmp_path, [10])
    network = make_network(NetworkConfig(torso="shallow", num_actions=5), (10, 5, 1))
    network.step(
        np.zeros((1, 10, 5, 1), np.uint8),
        np.zeros(1, np.int32),
        np.zeros(1, np.float32),
        np.zeros(1, np.uint8),
        np.zeros(1, np.int32),
        network.initial_state(1),
    )
    other = learner_lib.Learner(
        network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1000, xla=False
    )
    with pytest.raises(checkpoints.CheckpointError, match="does not fit this network"):
        checkpoints.RunCheckpoints(tmp_path, other).restore_latest()


def test_saving_the_same_update_count_again_does_not_rewrite_the_checkpoint(tmp_path):
    path = saved_checkpoints(tmp_path, [10])[0]
    before = Path(path + ".index").stat().st_mtime_ns
    learner = small_learner()
    saver = checkpoints.RunCheckpoints(tmp_path, learner)
    saver.restore_latest()
    assert (
        saver.save() == path
    )  # e.g. stopped right after resuming: the one good copy is not torn by a rewrite
    assert Path(path + ".index").stat().st_mtime_ns == before


# --- NaN / Inf -------------------------------------------------------------------------------------------------


class NaNRewards(BatchedEnv):
    """Catch whose rewards turn NaN after `after` steps."""

    def __init__(self, env: BatchedEnv, after: int):
        self._env, self._after, self._steps = env, after, 0
        self.num_envs, self.task_ids, self.frames_per_step = env.num_envs, env.task_ids, env.frames_per_step

    def observation_spec(self):
        return self._env.observation_spec()

    def action_spec(self):
        return self._env.action_spec()

    def legal_action_mask(self):
        return self._env.legal_action_mask()

    def reset(self) -> BatchedTimeStep:
        return self._env.reset()

    def step(self, actions) -> BatchedTimeStep:
        timestep = self._env.step(actions)
        self._steps += 1
        if self._steps > self._after:
            timestep = timestep._replace(reward=np.full_like(timestep.reward, np.nan))
        return timestep

    def pop_finished_episodes(self):
        return self._env.pop_finished_episodes()


def test_nonfinite_updates_stop_the_run_with_the_last_good_checkpoint_intact(tmp_path, monkeypatch, capsys):
    logdir = tmp_path / "run"
    assert train_in_process(logdir, total_frames=400) == trainer.EXIT_OK
    good = checkpoint_counters(logdir)
    make_env = agent.make_env
    monkeypatch.setattr(agent, "make_env", lambda *a, **k: NaNRewards(make_env(*a, **k), after=0))

    code = train_in_process(logdir, total_frames=100_000, reward_clipping="none")

    assert code == trainer.EXIT_NONFINITE
    message = last_line(capsys.readouterr().err)
    assert message.startswith("error: 20 consecutive updates had a non-finite loss") and "ckpt-" in message
    # The checkpoint a resume would use is the one written before the NaNs, and its weights are finite.
    assert checkpoint_counters(logdir) == good
    reader = tf.train.load_checkpoint(checkpoints.checkpoint_paths(logdir / "checkpoints")[-1])
    values = [reader.get_tensor(name) for name in reader.get_variable_to_shape_map()]
    floats = [v for v in values if isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating)]
    assert len(floats) > 10 and all(np.all(np.isfinite(v)) for v in floats)


# --- actors that raise -----------------------------------------------------------------------------------------


class FakeEnv:
    def __init__(self):
        self.closed = False

    def close(self):
        self.closed = True


class FakeActor:
    """Yields `good` batches of one unroll each, then raises (or yields forever when `good` is None)."""

    unroll_length = T

    def __init__(self, good: int | None):
        self.env = FakeEnv()
        self._good = good

    def unrolls(self):
        count = 0
        while self._good is None or count < self._good:
            count += 1
            yield ["unroll"]
        raise ValueError("environment exploded")


def test_failing_actor_is_restarted_with_fresh_environments_and_logged_once(caplog):
    stop, failures = threading.Event(), local.ActorFailures(max_restarts=10)
    made: list[tuple[int, FakeActor]] = []

    def make_actor(actor_id, incarnation):
        made.append((incarnation, FakeActor(good=2 if incarnation < 3 else None)))
        return made[-1][1]

    unroll_queue = local.UnrollQueue(100, stop)
    thread = local.ActorThread(0, make_actor, unroll_queue, stop, failures)
    with caplog.at_level(logging.ERROR):
        thread.start()
        deadline = time.time() + 10
        while unroll_queue.qsize() < 12 and time.time() < deadline:
            time.sleep(0.01)
        stop.set()
        thread.join(5)
    assert not thread.is_alive()
    assert [incarnation for incarnation, _ in made] == [0, 1, 2, 3]  # a new actor (new env seed) per failure
    assert all(actor.env.closed for _, actor in made)
    assert failures.count == 3 and thread.restarts == 3 and failures.fatal is None
    with_traceback = [r for r in caplog.records if "Traceback" in r.getMessage()]
    assert len(with_traceback) == 1 and "environment exploded" in with_traceback[0].getMessage()
    assert sum("failed again" in r.getMessage() for r in caplog.records) == 2


def test_persistent_actor_failure_stops_the_run_and_the_learner_does_not_hang():
    stop, failures = threading.Event(), local.ActorFailures(max_restarts=4)
    unroll_queue = local.UnrollQueue(10, stop)
    threads = [
        local.ActorThread(i, lambda actor_id, incarnation: FakeActor(good=0), unroll_queue, stop, failures)
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    start = time.time()
    assert list(unroll_queue) == []  # the learner's iteration ends instead of waiting for unrolls
    assert time.time() - start < 5
    assert stop.is_set() and failures.count == 5
    assert "5 actor failures, more than --max_actor_restarts=4" in failures.fatal
    assert "ValueError: environment exploded" in failures.fatal


def test_learner_stops_waiting_when_every_actor_thread_has_exited():
    stop = threading.Event()
    alive = threading.Event()
    unroll_queue = local.UnrollQueue(10, stop, producers_alive=alive.is_set)
    start = time.time()
    assert list(unroll_queue) == []
    assert unroll_queue.producers_gone and stop.is_set() and time.time() - start < 5


class FakeLearner:
    """Updates a version counter on its own thread, bracketed as the trainer brackets `Learner.step`;
    `snapshot` is a ParamServer's snapshot function and records whether it ever read a half-done update."""

    def __init__(self):
        self.applied = 0  # the version the variables hold (it changes midway through an update)
        self.finished = 0  # updates finished: the newest parameters an actor can be given
        self.in_update = False
        self.torn_reads = 0
        self.server: local.ParamServer | None = None

    def snapshot(self) -> ParamSnapshot:
        self.torn_reads += self.in_update
        return ParamSnapshot(self.applied, ())

    def update(self, seconds: float) -> None:
        self.server.before_update()
        self.in_update = True
        time.sleep(seconds / 2)
        self.applied += 1  # the variables change midway through the update
        time.sleep(seconds / 2)
        self.in_update = False
        self.finished += 1
        self.server.after_update()


def test_actor_gets_the_learners_newest_parameters_not_a_snapshot_from_its_previous_ask():
    learner, stop = FakeLearner(), threading.Event()
    learner.server = local.ParamServer(learner.snapshot, stop)
    asks: list[tuple[int, int]] = []  # (the learner's newest finished update when asked, version got)

    def learn():
        rng = random.Random(0)
        for _ in range(150):
            learner.update(rng.uniform(0.0, 0.004))
            time.sleep(rng.choice([0.0, 0.0, 0.003]))  # sometimes idle between updates (waiting for data)

    def act(seed: int):
        rng = random.Random(seed)
        while not stop.is_set():
            time.sleep(rng.uniform(0.0, 0.01))  # an unroll
            newest = learner.finished
            asks.append((newest, learner.server.get().version))

    actors = [threading.Thread(target=act, args=(i,)) for i in range(3)]
    for thread in actors:
        thread.start()
    learn()
    stop.set()
    for thread in actors:
        thread.join(5)
    assert len(asks) > 50
    stale = [(newest, got) for newest, got in asks if got < newest]
    assert not stale, stale[:5]
    assert learner.torn_reads == 0  # never copied while an update was changing the variables


def test_parameters_are_copied_only_when_asked_and_at_once_between_updates():
    learner = FakeLearner()
    server = learner.server = local.ParamServer(learner.snapshot, threading.Event())
    for _ in range(5):
        learner.update(0.0)
    assert server.copies == 1  # nobody asked: no copies
    start = time.monotonic()
    assert server.get().version == 5  # the learner is between updates: the ask copies its variables at once
    assert time.monotonic() - start < 0.5 and server.copies == 2
    assert server.get().version == 5 and server.copies == 2  # unchanged: no new copy


def test_parameter_request_returns_promptly_when_the_run_stops_or_the_learner_is_stuck():
    learner, stop = FakeLearner(), threading.Event()
    server = learner.server = local.ParamServer(learner.snapshot, stop, wait_secs=1.0)
    learner.update(0.0)  # version 1, which nobody asked for
    server.before_update()  # ... and an update that never ends
    learner.in_update = True
    start = time.monotonic()
    assert server.get().version == 0  # waited wait_secs for the update, then the newest snapshot there is
    assert 0.9 < time.monotonic() - start < 3.0

    server = learner.server = local.ParamServer(learner.snapshot, stop, wait_secs=600.0)
    learner.in_update = False
    learner.update(0.0)
    server.before_update()
    got: list[ParamSnapshot] = []
    asker = threading.Thread(target=lambda: got.append(server.get()))
    asker.start()
    time.sleep(0.3)
    assert not got  # waits for the update in progress
    start = time.monotonic()
    stop.set()
    asker.join(5)
    assert not asker.is_alive() and time.monotonic() - start < 1.0
    assert got[0].version == 1


def test_injected_actor_faults_restart_actors_and_the_run_completes(tmp_path, monkeypatch):
    monkeypatch.setenv(local.FAULT_RATE_ENV, "0.2")
    logdir = tmp_path / "run"
    code = train_in_process(logdir, total_frames=2_000, max_actor_restarts=1_000, progress_every_secs=1)
    assert code == trainer.EXIT_OK
    assert checkpoint_counters(logdir)["num_frames"] >= 2_000
    failures = tensorboard_scalars(logdir, "perf/actor_failures")
    assert failures and failures[-1][1] > 0


def test_actor_failures_past_max_actor_restarts_stop_the_run_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(local.FAULT_RATE_ENV, "1")
    logdir = tmp_path / "run"
    code = train_in_process(logdir, total_frames=100_000, max_actor_restarts=3)
    assert code == trainer.EXIT_ACTORS_FAILED
    message = last_line(capsys.readouterr().err)
    assert message.startswith("error: 4 actor failures, more than --max_actor_restarts=3")
    assert "InjectedFault" in message
    # It stopped cleanly: a final checkpoint and a complete episodes.csv.
    assert checkpoints.checkpoint_paths(logdir / "checkpoints")
    assert (logdir / "episodes.csv").read_text().endswith("\n")


# --- a full disk -----------------------------------------------------------------------------------------------


def test_full_disk_stops_with_one_line_and_leaves_no_partial_checkpoint(tmp_path, capsys):
    logdir = tmp_path / "run"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # Writes past 100 KB now fail with EFBIG ("File too large"), as writes to a full disk fail with ENOSPC; the
    # first checkpoint (~220 KB) is the first file to hit it.
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        code = train_in_process(logdir, total_frames=100_000, checkpoint_every_secs=1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert code == trainer.EXIT_WRITE_FAILED
    message = last_line(capsys.readouterr().err)
    assert message.startswith("error: cannot write checkpoint") and message.count("File too large") == 1
    assert list((logdir / "checkpoints").iterdir()) == []  # the failed save's files are gone
    assert not list(logdir.rglob("*.tmp"))
    json.loads((logdir / "config.json").read_text())
    episode_rows(logdir)


def test_episodes_csv_write_failure_stops_with_one_line_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    logdir = tmp_path / "run"
    assert train_in_process(logdir, total_frames=400) == trainer.EXIT_OK
    good = checkpoint_counters(logdir)

    def disk_full(self, *row):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    monkeypatch.setattr(writers.EpisodeLog, "append", disk_full)
    assert train_in_process(logdir, total_frames=100_000) == trainer.EXIT_WRITE_FAILED
    message = last_line(capsys.readouterr().err)
    assert message.startswith(f"error: cannot write {logdir / 'episodes.csv'}: No space left on device")
    assert "ckpt-" in message
    assert checkpoint_counters(logdir) == good  # no checkpoint after rows that could not be written


# --- signals ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)])
def test_signal_stops_the_run_gracefully_within_seconds(tmp_path, signum):
    logdir = tmp_path / "run"
    process = binary(
        logdir, "--total_frames=10000000", "--checkpoint_every_secs=600", "--progress_every_secs=1"
    )
    wait_for_training(process)
    time.sleep(0.5)
    sent = time.time()
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    seconds = time.time() - sent
    assert process.returncode == 128 + signum, err[-3000:]
    assert seconds < 10, f"took {seconds:.1f} s to stop"
    assert f"signal {signal.Signals(signum).name}" in err and "Traceback" not in err
    # The final checkpoint holds every frame trained; episodes.csv is complete up to it.
    done = last_line(out)
    assert done.startswith("done: ")
    frames = checkpoint_counters(logdir)["num_frames"]
    assert done.startswith(f"done: {frames:,} frames") and frames > 0
    rows = episode_rows(logdir)
    assert rows and max(int(r.split(",")[1]) for r in rows) <= frames
