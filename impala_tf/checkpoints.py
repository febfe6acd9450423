"""Checkpoints of a run: save every few minutes and at exit, resume from the newest *valid* one.

TensorFlow writes a checkpoint's files before it updates the `checkpoint` index (atomically), so a kill mid-save
leaves the previous checkpoints listed and intact; a save never rewrites a checkpoint number it already holds, so
the one being restored from cannot be torn either. A truncated or corrupt file is still possible (a full disk, a
copy gone wrong): restoring tries the newest first and falls back, warning with the name of each bad one. An
unreadable index is moved aside and the checkpoint files themselves are tried, newest first.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

import tensorflow as tf

log = logging.getLogger(__name__)

_PREFIX = "ckpt"
_INDEX = "checkpoint"  # tf.train.CheckpointManager's list of checkpoints


class CheckpointError(Exception):
    """No usable checkpoint, one that does not fit this network, or one that cannot be written; one line."""


class RunCheckpoints:
    """The learner's checkpoints in `directory`, named ckpt-<num_updates>; the newest `max_to_keep` are kept."""

    def __init__(self, directory: str | Path, learner: tf.Module, max_to_keep: int = 3):
        self.directory = Path(directory)
        _set_aside_unreadable_index(self.directory)
        for leftover in self.directory.glob(f"{_PREFIX}-*_temp"):  # a save that a kill interrupted
            shutil.rmtree(leftover, ignore_errors=True)
        self._checkpoint = tf.train.Checkpoint(learner=learner)
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, str(self.directory), max_to_keep=max_to_keep, checkpoint_name=_PREFIX
        )
        self._learner = learner
        self.latest_path: str | None = None

    def save(self) -> str:
        """Saves ckpt-<num_updates> (once per update count); raises CheckpointError when it cannot be written."""
        number = int(self._learner.num_updates.numpy())
        if self.latest_path is not None and _number(self.latest_path) == number:
            return self.latest_path  # same weights; rewriting in place could tear the only good copy
        try:
            self.latest_path = self._manager.save(checkpoint_number=number)
        except (tf.errors.OpError, OSError) as error:
            self._remove_unlisted(number)
            raise CheckpointError(
                f"cannot write checkpoint {self.directory / f'{_PREFIX}-{number}'}: {_os_reason(error)}"
            ) from None
        return self.latest_path

    def restore_latest(self) -> int | None:
        """Restores the newest valid checkpoint; returns its frame count, or None when there is none."""
        path = _restore_newest(self.directory, self._checkpoint, partial=False)
        if path is None:
            return None
        self.latest_path = path
        return int(self._learner.num_frames.numpy())

    def _remove_unlisted(self, number: int) -> None:
        """Deletes what a failed save left of ckpt-<number> (a full disk needs the space back)."""
        if any(_number(path) == number for path in self._manager.checkpoints):
            return
        for leftover in self.directory.glob(f"{_PREFIX}-{number}[._]*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def restore_network(directory: str | Path, network: tf.Module, path: str | None = None) -> tuple[str, int]:
    """Restores `network` (only) from the newest readable checkpoint in `directory`, or from `path`, one of them.

    Returns (checkpoint path, frames trained). The network's variables are tracked through the learner that
    owns them, so a throw-away Learner around `network` reads the checkpoint; its optimiser state is dropped.
    """
    from impala_tf import learner as learner_lib
    from impala_tf.losses import LossConfig

    holder = learner_lib.Learner(
        network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1, xla=False
    )
    checkpoint = tf.train.Checkpoint(learner=holder)
    if path is None:
        path = _restore_newest(Path(directory), checkpoint, partial=True)
        if path is None:
            raise CheckpointError(f"no checkpoint in {directory}")
    else:
        try:
            checkpoint.restore(path).expect_partial().assert_existing_objects_matched()
        except Exception as error:  # unreadable or not this network's: one line, as for the newest
            raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(error)}") from None
    return path, int(holder.num_frames.numpy())


def init_network_from(run_dir: str | Path, network: tf.Module) -> str:
    """Copies the network weights of another run (e.g. pre-training for transfer); optimiser state is not copied."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists():
        raise CheckpointError(f"--init_from={run_dir} is not a run directory (no config.json)")
    path, _ = restore_network(run_dir / "checkpoints", network)
    return path


def checkpoint_paths(directory: str | Path) -> list[str]:
    """The checkpoints of `directory`, oldest first: those the index lists, or, without a readable index, every
    ckpt-N whose .index file exists."""
    directory = Path(directory)
    try:
        state = tf.train.get_checkpoint_state(str(directory))
    except ValueError:  # an index without a latest checkpoint, e.g. an empty file
        state = None
    if state is not None and state.all_model_checkpoint_paths:
        return list(state.all_model_checkpoint_paths)
    found = [
        p for p in directory.glob(f"{_PREFIX}-*.index") if re.fullmatch(rf"{_PREFIX}-\d+\.index", p.name)
    ]
    return [str(p.with_suffix("")) for p in sorted(found, key=lambda p: _number(str(p.with_suffix(""))))]


def _restore_newest(directory: Path, checkpoint: tf.train.Checkpoint, partial: bool) -> str | None:
    """Restores the newest checkpoint of `directory` that reads; warns naming each bad one. None: there are none."""
    bad = []
    for path in reversed(checkpoint_paths(directory)):
        try:
            status = checkpoint.restore(path)
            if partial:
                status.expect_partial()
            status.assert_existing_objects_matched()
        except Exception as error:  # whatever fails to read makes the checkpoint unusable
            if _is_shape_mismatch(error):
                raise CheckpointError(
                    f"checkpoint {path} does not fit this network: {_first_line(error)}"
                ) from None
            log.warning("checkpoint %s is unreadable (%s); trying the previous one", path, _first_line(error))
            bad.append(path)
            continue
        if bad:
            log.warning("skipped bad checkpoint(s) %s; restored %s", ", ".join(bad), path)
        return path
    if bad:
        raise CheckpointError(f"no readable checkpoint in {directory} (bad: {', '.join(bad)})")
    return None


def _set_aside_unreadable_index(directory: Path) -> None:
    """Moves a corrupt `checkpoint` index out of the way: TensorFlow would otherwise ignore every checkpoint (and
    the run would silently start over) or refuse to build a CheckpointManager at all."""
    index = directory / _INDEX
    if not index.exists():
        return
    try:
        readable = tf.train.get_checkpoint_state(str(directory)) is not None
    except ValueError:
        readable = False
    if not readable:
        aside = index.with_name(f"{_INDEX}.unreadable")
        index.replace(aside)
        log.warning(
            "checkpoint index %s is unreadable (moved to %s); trying the checkpoint files", index, aside
        )


def _number(path: str) -> int:
    return int(path.rsplit("-", 1)[1])


def _is_shape_mismatch(error: Exception) -> bool:
    text = str(error)
    return "shape" in text.lower() and ("mismatch" in text.lower() or "incompatible" in text.lower())


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _os_reason(error: Exception) -> str:
    """ "File too large" out of TensorFlow's "{{function_node ...}} /path/file.tempstate123; File too large [Op:SaveV2]"."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = re.sub(r"\s*\[Op:\w+\]$", "", _first_line(error))
    return text.rsplit("; ", 1)[-1]
