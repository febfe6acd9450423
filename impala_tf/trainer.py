"""The trainer: one agent across every task of a suite. Builds envs, network, learner and actors from flags, then
runs the learner loop over unrolls that a runtime (local threads or Ray) delivers.

    actors ──Unroll──▶ runtime transport ──▶ LearnerBatches (time-major, made ahead) ──▶ Learner.step ──▶ params
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import keras
import tensorflow as tf
from absl import app, flags

from impala_tf import agent, checkpoints, config, writers
from impala_tf import learner as learner_lib
from impala_tf import replay as replay_lib
from impala_tf.actor import snapshot_of
from impala_tf.monitor import Monitor
from impala_tf.rundir import (
    UserError,
    check_existing_run,
    claimed_run_dir,
    git_commit,
    resolve_suite,
    versions,
)
from impala_tf.runtime.local import put_unless_stopped
from impala_tf.unroll import Unroll, unroll_dtypes

FLAGS = flags.FLAGS
log = logging.getLogger("impala_tf")


# Exit codes of a training binary.
EXIT_OK = 0
EXIT_USER_ERROR = 1  # bad flags or logdir (absl usage errors exit 1 too); nothing written
EXIT_NONFINITE = 2  # too many consecutive non-finite updates; the last checkpoint is the last good one
EXIT_ACTORS_FAILED = 3  # more actor failures than --max_actor_restarts; final checkpoint written
EXIT_WRITE_FAILED = 4  # a run file (checkpoint, episodes.csv) could not be written: disk full, permissions
# A run stopped by SIGINT / SIGTERM exits 128 + the signal's number (130 / 143), as a shell reports it, after
# its final checkpoint: the run is incomplete and resumes with the same command.


def configure_intra_op_threads(threads: int, explicit: bool = False) -> None:
    """Sets TensorFlow's threads per op (0: leave its default). Only possible before TensorFlow first runs in
    this process; otherwise (a trainer embedded after other TensorFlow work) the setting is left as it is."""
    if threads == 0 or tf.config.threading.get_intra_op_parallelism_threads() == threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        (log.warning if explicit else log.info)(
            "intra-op threads stay %d, not %d: TensorFlow ran in this process before the trainer",
            tf.config.threading.get_intra_op_parallelism_threads(),
            threads,
        )


class LearnerBatches:
    """The learner's input: (time-major batch of B as tensors, number of replayed unrolls in it) from an iterable
    of single unrolls (`replay.learner_batches`), made `depth` batches ahead on a thread of its own: stacking and
    the host-to-device copy (to `device` when given, e.g. "/GPU:0") overlap the learner step. Ends when the
    unrolls end; an error in making a batch (one shaped unlike the first, say) is raised by the `next` that would
    have returned it. `close()` stops the thread.

    A thread and a queue rather than tf.data: with `from_generator` the learner thread spent ~1.5 ms per batch
    getting it, with this ~0.2 ms (bench/NOTES.md).
    """

    _END = object()

    def __init__(
        self,
        unrolls: Iterable[Unroll],
        batch_size: int,
        device: str | None = None,
        replay: replay_lib.ReplayBuffer | None = None,
        replay_fraction: float = 0.0,
        depth: int = 2,
    ):
        self._queue: queue.Queue = queue.Queue(depth)
        self._closed = threading.Event()
        self._done = False
        batches = replay_lib.learner_batches(unrolls, batch_size, replay, replay_fraction)
        self._thread = threading.Thread(
            target=self._fill, args=(batches, device), name="learner-batches", daemon=True
        )
        self._thread.start()

    def _fill(self, batches: Iterator[tuple[Unroll, int]], device: str | None) -> None:
        dtypes = unroll_dtypes()  # the contract's: one trace of the learner step, whatever a transport sent

        def to_tensor(x, dtype):
            # tf.identity under the device's scope: the host-to-device copy happens here, not in the step.
            x = tf.convert_to_tensor(x, dtype)
            return tf.identity(x) if device else x

        shapes = None  # the first batch's: a later one that differs is an error, not a retrace of the step
        try:
            for batch, num_replayed in batches:
                shapes = shapes or [x.shape for x in batch]
                for name, x, shape in zip(Unroll._fields, batch, shapes, strict=True):
                    if x.shape != shape:
                        raise ValueError(
                            f"a learner batch's {name} has shape {x.shape}, the first had {shape}"
                        )
                with tf.device(device) if device else contextlib.nullcontext():
                    tensors = Unroll(*(to_tensor(x, d) for x, d in zip(batch, dtypes, strict=True)))
                if not self._put((tensors, tf.constant(num_replayed, tf.int32))):
                    return
        except Exception as error:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(error)
            return
        self._put(self._END)

    def _put(self, item) -> bool:
        return put_unless_stopped(self._queue, item, self._closed)

    def __iter__(self) -> LearnerBatches:
        return self

    def __next__(self) -> tuple[Unroll, tf.Tensor]:
        if self._done:
            raise StopIteration
        item = self._queue.get()
        if item is self._END or isinstance(item, Exception):
            self._done = True
            if item is self._END:
                raise StopIteration
            raise item
        return item

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=10.0)  # a daemon: a source that never ends does not hold up the exit


class Trainer:
    """Owns one run: its directory, learner, checkpoints and writers; `run()` trains until the frame budget."""

    def __init__(self, suite, logdir: str):
        config.validate()
        self.suite = suite
        self.logdir = Path(logdir)
        self.spec = config.run_spec_from_flags(suite)
        self.total_frames = FLAGS.total_frames or suite.default_total_frames
        self.flag_values = config.flag_values_dict()
        self.flag_values["total_frames"] = self.total_frames
        if self.spec.num_actors * self.spec.envs_per_actor < self.spec.num_tasks:
            raise UserError(
                f"--num_actors x --envs_per_actor = {self.spec.num_actors * self.spec.envs_per_actor} environments "
                f"cannot train all {self.spec.num_tasks} tasks of {suite.name}: use at least {self.spec.num_tasks}"
            )
        if FLAGS.popart and self.spec.num_tasks < 2:
            raise UserError(
                f"--popart normalises values per task and needs a suite of 2 or more games; {suite.name} has 1"
            )

        configure_intra_op_threads(
            config.intra_op_threads(
                FLAGS.intra_op_threads, FLAGS.runtime, self.spec.num_actors, os.cpu_count() or 1
            ),
            explicit=bool(FLAGS.intra_op_threads),
        )
        # Keras 3's initialisers draw from a generator that tf.random.set_seed does not reach: without this the
        # same --seed gave different initial weights on every run.
        keras.utils.set_random_seed(self.spec.seed)
        # One probe environment gives the specs; the network and learner follow from them.
        try:
            probe_env = agent.make_env(self.spec, [0], self.spec.seed)
        except ValueError as error:  # e.g. a protocol or --reward_scale that the suite does not have
            raise UserError(str(error)) from None
        self.obs_shape = tuple(probe_env.observation_spec().shape)
        self.num_actions = probe_env.action_spec().num_values
        self.frames_per_step = probe_env.frames_per_step
        try:
            strategy = learner_lib.mirrored_strategy(FLAGS.learner_devices)
        except ValueError as error:
            raise UserError(f"--learner_devices: {error}") from None
        with learner_lib.strategy_scope(strategy):
            network = agent.make_network(self.spec, probe_env)
        probe_env.close()
        check_existing_run(
            self.logdir, suite.name, tuple(suite.games), self.flag_values, self.obs_shape, self.num_actions
        )
        self.learner = learner_lib.Learner(
            network,
            config.loss_config_from_flags(),
            config.optimizer_config_from_flags(),
            total_frames=self.total_frames,
            frames_per_step=self.frames_per_step,
            xla=config.use_xla(FLAGS.xla, learner=True),
            popart_step_size=FLAGS.popart_step_size,
            strategy=strategy,
        )
        if FLAGS.batch_size % self.learner.num_replicas:
            raise UserError(
                f"--batch_size={FLAGS.batch_size} must be divisible by the {self.learner.num_replicas} "
                "learner devices"
            )
        # Before anything is written: an --init_from that is no run, or does not fit, is a user error.
        self.init_path = checkpoints.init_network_from(FLAGS.init_from, network) if FLAGS.init_from else None
        # Created only now, after every check, so that a rejected command writes nothing.
        try:
            self.logdir.mkdir(parents=True, exist_ok=True)
            probe = self.logdir / ".write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as error:
            raise UserError(f"cannot write to --logdir={self.logdir}: {error.strerror}") from None
        self.checkpoints = checkpoints.RunCheckpoints(
            self.logdir / "checkpoints", self.learner, max_to_keep=FLAGS.keep_checkpoints
        )
        self.stop = threading.Event()  # set by signals, a fatal actor error, or whoever embeds the trainer
        self.stop_signal: int | None = None  # the signal that stopped the run, if one did

    def write_config(self, frames0: int) -> None:
        """config.json: the latest command's suite, flags, spaces, versions and commit, and `starts`: the frames,
        commit and time of every start whose training the checkpoint still holds. A start at or past `frames0`,
        where this one resumes, trained nothing that survived (as episodes.csv drops its rows)."""
        path = self.logdir / "config.json"
        starts = []
        if frames0 and path.exists():  # check_existing_run has read it: a JSON object of this run
            old = json.loads(path.read_text()).get("starts", [])
            starts = [s for s in old if isinstance(s, dict) and s.get("frames", frames0) < frames0]
        now = datetime.now(UTC).isoformat(timespec="seconds")
        starts.append({"frames": frames0, "git_commit": git_commit(), "time": now})
        writers.atomic_write_json(
            path,
            {
                "suite": self.suite.name,
                "games": list(self.suite.games),
                "backend": self.suite.backend,
                "protocol": self.spec.protocol or self.suite.protocol,
                "flags": self.flag_values,
                "observation_shape": list(self.obs_shape),
                "num_actions": self.num_actions,
                "frames_per_step": self.frames_per_step,
                "task_proportions": self.spec.task_proportions(),
                "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),  # 0: every core
                "versions": versions(),
                "git_commit": starts[-1]["git_commit"],
                "starts": starts,
            },
        )

    def run(self, until_frames: int | None = None) -> int:
        """Trains until the frame budget (or `until_frames`, when sooner: a stretch of a longer run, which the
        learning-rate schedule still anneals over the whole budget), a signal, or a fatal error; returns the
        exit code (EXIT_*)."""
        resumed_frames = self.checkpoints.restore_latest()  # a checkpoint overrides --init_from's weights
        frames0 = int(self.learner.num_frames.numpy())
        stop_frames = self.total_frames if until_frames is None else min(until_frames, self.total_frames)
        if frames0 >= stop_frames and stop_frames < self.total_frames:
            return EXIT_OK
        if frames0 >= self.total_frames:
            print(
                f"{self.logdir} is already trained to {frames0:,} frames (--total_frames={self.total_frames:,}); "
                "nothing to do",
                flush=True,
            )
            return EXIT_OK
        writers.remove_stale_temporaries(self.logdir)
        self.write_config(frames0)
        episodes = writers.EpisodeLog(self.logdir / "episodes.csv", resume_frames=resumed_frames or 0)
        summary_writer = tf.summary.create_file_writer(str(self.logdir / "tensorboard"))
        if resumed_frames is not None:
            print(
                f"resumed from {self.checkpoints.latest_path} at {frames0:,} frames "
                f"({episodes.dropped_rows} episodes.csv rows after it dropped)",
                flush=True,
            )
        elif self.init_path:
            print(f"initialised the network from {self.init_path}", flush=True)
        proportions = ", ".join(f"{g} {p:.0%}" for g, p in self.spec.task_proportions().items())
        print(f"suite {self.suite.name}: {self.spec.num_tasks} tasks ({proportions})", flush=True)
        num_envs = self.spec.num_actors * self.spec.envs_per_actor
        if num_envs % self.spec.num_tasks:
            print(
                f"note: {num_envs} environments do not divide evenly over {self.spec.num_tasks} tasks, so tasks "
                "train on unequal shares; make --num_actors x --envs_per_actor a multiple of the number of tasks",
                flush=True,
            )
        print(f"logdir {self.logdir}", flush=True)

        stop = self.stop
        previous_handlers = self._install_signal_handlers()
        # Not in the checkpoint: a resumed run refills it from fresh unrolls (README, "Experience replay").
        replay = (
            replay_lib.ReplayBuffer(FLAGS.replay_capacity, seed=self.spec.seed + frames0)
            if FLAGS.replay_capacity
            else None
        )
        monitor = Monitor(
            self.suite,
            self.learner,
            episodes,
            summary_writer,
            self.total_frames,
            stop_frames,
            FLAGS.progress_every_secs,
            self.spec.num_tasks,
            replay,
        )
        runtime = self._make_runtime(stop, monitor.on_episode)
        # One GPU learner: batches wait in its memory. A mirrored learner splits them across its devices.
        one_gpu = self.learner.strategy is None and bool(tf.config.list_logical_devices("GPU"))
        batches = LearnerBatches(
            runtime.unrolls(),
            FLAGS.batch_size,
            device="/GPU:0" if one_gpu else None,
            replay=replay,
            replay_fraction=FLAGS.replay_fraction,
        )
        last_checkpoint = start = time.time()
        nonfinite_streak = 0
        exit_code = EXIT_OK
        updates = int(self.learner.num_updates.numpy())
        try:
            runtime.start()
            # The loop: actors -> batches -> one learner update -> parameters published to the actors.
            for batch, num_replayed in batches:
                monitor.on_batch(batch.policy_version.numpy(), int(num_replayed), updates)
                runtime.before_update()  # actors asking for parameters now get this update's result
                logs = self.learner.step(batch, num_replayed)
                runtime.after_update()
                updates, frames = int(logs.pop("num_updates")), int(logs.pop("num_frames"))
                nonfinite_streak = nonfinite_streak + 1 if float(logs["nonfinite"]) else 0
                if nonfinite_streak >= learner_lib.MAX_NONFINITE_STREAK:
                    _error(
                        f"{nonfinite_streak} consecutive updates had a non-finite loss or gradient and were "
                        f"skipped; stopping. The last good checkpoint is {self._last_checkpoint()}"
                    )
                    exit_code = EXIT_NONFINITE
                    break
                monitor.on_update(frames, logs, runtime.stats())
                if time.time() - last_checkpoint >= FLAGS.checkpoint_every_secs:
                    self.checkpoints.save()
                    last_checkpoint = time.time()
                if frames >= stop_frames or stop.is_set():
                    break
        except (OSError, checkpoints.CheckpointError) as error:  # a full disk, a logdir gone read-only
            _error(
                f"{_describe_write_error(error)}; stopping. The last checkpoint is {self._last_checkpoint()}"
            )
            exit_code = EXIT_WRITE_FAILED
        finally:
            stop.set()
            runtime.stop()
            batches.close()  # after the stop, which ends the unrolls it waits on
            try:
                episodes.close()
            except OSError:
                pass  # its complete rows are on disk; a torn last one is dropped on resume
            summary_writer.close()
        if runtime.fatal:
            _error(runtime.fatal)
            exit_code = exit_code or EXIT_ACTORS_FAILED
        if exit_code in (EXIT_OK, EXIT_ACTORS_FAILED):
            try:
                self.checkpoints.save()
            except checkpoints.CheckpointError as error:
                _error(f"{error}. The last checkpoint is {self._last_checkpoint()}")
                exit_code = EXIT_WRITE_FAILED
        if exit_code == EXIT_OK and self.stop_signal is not None:
            exit_code = 128 + self.stop_signal
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)
        frames = int(self.learner.num_frames.numpy())
        elapsed = time.time() - start
        print(
            f"done: {frames:,} frames, {int(self.learner.num_updates.numpy()):,} updates, "
            f"{(frames - frames0) / max(elapsed, 1e-9):,.0f} frames/s; checkpoint {self._last_checkpoint()}",
            flush=True,
        )
        return exit_code

    def _last_checkpoint(self) -> str:
        return self.checkpoints.latest_path or "(none written yet)"

    def _make_runtime(self, stop: threading.Event, on_episode):
        learner = self.learner

        def snapshot():
            return snapshot_of(learner.network, int(learner.num_updates.numpy()))

        capacity = FLAGS.queue_capacity or 2 * FLAGS.batch_size
        if FLAGS.runtime == "ray":
            from impala_tf.runtime import ray as ray_runtime

            return ray_runtime.RayRuntime(
                self.spec,
                snapshot,
                on_episode,
                stop,
                capacity,
                FLAGS.max_actor_restarts,
                address=FLAGS.ray_address,
                actor_cpus=FLAGS.actor_cpus,
                learner_gpus=FLAGS.learner_gpus,
            )
        from impala_tf.runtime import local

        return local.LocalRuntime(self.spec, snapshot, on_episode, stop, capacity, FLAGS.max_actor_restarts)

    def _install_signal_handlers(self) -> dict:
        """SIGINT / SIGTERM: finish the update, checkpoint, close; a second signal leaves at once. Returns the
        handlers they replace (the trainer may be embedded, e.g. in a test process)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_signal is not None:
                os._exit(128 + signum)
            self.stop_signal = signum
            print(
                f"\nsignal {signal.Signals(signum).name}: stopping after this update (again: leave now)",
                file=sys.stderr,
                flush=True,
            )
            self.stop.set()

        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
        for signum in previous:
            signal.signal(signum, handler)
        return previous


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def _describe_write_error(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename:
        return f"cannot write {error.filename}: {error.strerror}"
    if isinstance(error, OSError):
        return f"cannot write the run's files: {error.strerror or error}"
    return str(error)


def quiet_logging() -> None:
    """This package logs INFO; TensorFlow's Python side (absl logging, e.g. its checkpoint code's "Sharding
    callback duration") only WARNING and above."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("impala_tf").setLevel(logging.INFO)


def main_for_suite(suite_name: str) -> None:
    """Entry point of a suite binary: `python -m suites.<name>`."""
    from impala_tf.suites import get_suite

    if suite_name is not None:  # suites.custom takes --suite=FILE from the command line instead
        try:
            defaults = get_suite(suite_name).default_flags
        except ValueError as error:  # e.g. a game of the suite whose ROM the installed ale-py lacks
            _error(str(error))
            sys.exit(EXIT_USER_ERROR)
        config.set_suite_defaults({"suite": suite_name, **defaults})

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        quiet_logging()
        try:
            config.apply_preset()
            config.validate()
            if not FLAGS.suite:
                raise UserError("--suite is required (a suite name or a suite JSON file)")
            suite = resolve_suite(FLAGS.suite, FLAGS.games)
            with claimed_run_dir(Path(FLAGS.logdir), (UserError, checkpoints.CheckpointError)):
                trainer = Trainer(suite, FLAGS.logdir)
                return trainer.run()
        except flags.ValidationError as error:
            raise app.UsageError(str(error)) from None
        except (UserError, checkpoints.CheckpointError) as error:
            _error(str(error))
            return EXIT_USER_ERROR
        except OSError as error:  # e.g. config.json on a full disk, before the learner loop
            _error(_describe_write_error(error))
            return EXIT_WRITE_FAILED

    app.run(main)
