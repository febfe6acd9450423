"""Checkpoints of a run: save every few minutes and at exit, resume from the newest *valid* one.

TensorFlow writes a checkpoint's files before it updates the `checkpoint` index, so a kill mid-save leaves the
previous checkpoints listed and intact. A truncated or corrupt file is still possible (a full disk, a copy gone
wrong): restoring tries the newest first and falls back, warning with the name of each bad one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """No usable checkpoint, or one that does not fit this network; a one-line message for the user."""


class RunCheckpoints:
    def __init__(self, directory: str | Path, learner: tf.Module, max_to_keep: int = 3):
        self.directory = Path(directory)
        self._checkpoint = tf.train.Checkpoint(learner=learner)
        self._manager = tf.train.CheckpointManager(self._checkpoint, str(self.directory), max_to_keep=max_to_keep)
        self._learner = learner
        self.latest_path: str | None = None

    def save(self) -> str:
        self.latest_path = self._manager.save(checkpoint_number=int(self._learner.num_updates.numpy()))
        return self.latest_path

    def restore_latest(self) -> int | None:
        """Restores the newest valid checkpoint; returns its frame count, or None when there is none."""
        candidates = list(reversed(self._manager.checkpoints))
        bad = []
        for path in candidates:
            try:
                status = self._checkpoint.restore(path)
                status.assert_existing_objects_matched()
            except (tf.errors.OpError, ValueError, AssertionError) as error:
                if _is_shape_mismatch(error):
                    raise CheckpointError(f"checkpoint {path} does not fit this network: {_first_line(error)}") from None
                log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, _first_line(error))
                bad.append(path)
                continue
            if bad:
                print(f"warning: skipped bad checkpoint(s) {', '.join(bad)}; using {path}", flush=True)
            self.latest_path = path
            return int(self._learner.num_frames.numpy())
        if bad:
            raise CheckpointError(f"no readable checkpoint in {self.directory} (bad: {', '.join(bad)})")
        return None


def restore_network(directory: str | Path, network: tf.Module) -> tuple[str, int]:
    """Restores `network` (only) from the newest readable checkpoint in `directory`.

    Returns (checkpoint path, frames trained). The network's variables are tracked through the learner that
    owns them, so a throw-away Learner around `network` reads the checkpoint; its optimiser state is dropped.
    """
    from impala_tf import learner as learner_lib
    from impala_tf.losses import LossConfig

    directory = Path(directory)
    state = tf.train.get_checkpoint_state(str(directory))
    paths = list(reversed(state.all_model_checkpoint_paths)) if state else []
    if not paths:
        raise CheckpointError(f"no checkpoint in {directory}")
    holder = learner_lib.Learner(network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1, xla=False)
    checkpoint = tf.train.Checkpoint(learner=holder)
    for path in paths:
        try:
            checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
            return path, int(holder.num_frames.numpy())
        except (tf.errors.OpError, ValueError, AssertionError) as error:
            if _is_shape_mismatch(error):
                raise CheckpointError(f"checkpoint {path} does not fit this network: {_first_line(error)}") from None
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, _first_line(error))
    raise CheckpointError(f"no readable checkpoint in {directory}")


def init_network_from(run_dir: str | Path, network: tf.Module) -> str:
    """Copies the network weights of another run (e.g. pre-training for transfer); optimiser state is not copied."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"--init_from={run_dir} is not a run directory (no config.json)")
    path, _ = restore_network(run_dir / "checkpoints", network)
    return path


def _is_shape_mismatch(error: Exception) -> bool:
    text = str(error)
    return "shape" in text.lower() and ("mismatch" in text.lower() or "incompatible" in text.lower())


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
