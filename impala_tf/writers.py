"""What a run writes: atomic files, the append-only episodes.csv, progress lines.

Rule for every file: written to a temporary name in the same directory and renamed into place (a reader sees the
old file or the new one, never half of one), or appended line by line and flushed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from impala_tf import scoring

EPISODE_COLUMNS = ("task", "frames", "episode_return", "episode_frames", "wall_time")
# The progress line lists each task's recent return up to this many tasks, and summarises more.
MAX_LISTED_RETURNS = 8


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide reports from other users


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and an atomic rename (fsynced): the one atomic writer
    every file a run or report writes goes through."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write_bytes` of UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_files(files: Mapping[str, str | bytes], out_dir: str | os.PathLike) -> None:
    """Each file written atomically into `out_dir` (created if needed; other files there are left alone)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        if isinstance(content, str):
            content = content.encode("utf-8")
        if not isinstance(content, bytes):
            raise TypeError(f"{name}: expected text or bytes, got {type(content).__name__}")
        atomic_write_bytes(out_dir / name, content)


def png_bytes(figure: Any, dpi: int = 90) -> bytes:
    """A matplotlib figure as PNG bytes, without a version stamp (so that regenerated reports diff clean); closes
    the figure."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def remove_stale_temporaries(directory: str | os.PathLike) -> None:
    """Deletes what atomic writes of a killed process left in `directory` (never a file anyone reads)."""
    for leftover in Path(directory).glob(".*.tmp"):
        leftover.unlink(missing_ok=True)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class EpisodeLog:
    """episodes.csv: one row per finished game, appended and flushed, never rewritten in place.

    Resume rule: a row's `frames` is the learner's frame counter when the row was written, and the trainer writes
    a batch's rows before it checkpoints. When a run resumes from a checkpoint taken at F frames, rows with
    frames > F belong to training that is about to be re-played, so they are dropped (the file is rewritten
    atomically, once, before appending); rows with frames <= F are kept as they are. A torn line (a kill
    mid-write, a full disk) is dropped too. Hence: no duplicates, no torn rows, and `frames` never decreases.
    `dropped_rows` says how many rows the resume removed.
    """

    def __init__(self, path: str | os.PathLike, resume_frames: int | None = None):
        self.path = Path(path)
        self.dropped_rows = 0
        if self.path.exists():
            self.dropped_rows = self._truncate(resume_frames or 0)
        else:
            atomic_write_text(self.path, ",".join(EPISODE_COLUMNS) + "\n")
        self._file = open(self.path, "a", newline="")  # noqa: SIM115 - kept open for appends
        self._writer = csv.writer(self._file, lineterminator="\n")

    def _truncate(self, max_frames: int) -> int:
        text = self.path.read_text()
        lines = text.split("\n")[1:]
        rows = [line for line in lines[:-1] if line]  # lines[-1] is "" or a torn row that lacks its newline
        kept = [line for line in rows if (frames := _row_frames(line)) is not None and frames <= max_frames]
        new_text = "\n".join([",".join(EPISODE_COLUMNS), *kept]) + "\n"
        if new_text != text:
            atomic_write_text(self.path, new_text)
        return len(rows) + bool(lines and lines[-1]) - len(kept)

    def append(self, task: str, frames: int, episode_return: float, episode_frames: int) -> None:
        self._writer.writerow([task, frames, f"{episode_return:g}", episode_frames, f"{time.time():.3f}"])
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _row_frames(line: str) -> int | None:
    """The frames of a complete episodes.csv row; None for a torn or malformed one."""
    parts = line.split(",")
    if len(parts) != len(EPISODE_COLUMNS):
        return None
    try:
        float(parts[2]), int(parts[3]), float(parts[4])
        return int(parts[1])
    except ValueError:
        return None


class ReturnTracker:
    """Recent raw game returns per task, for the progress line."""

    def __init__(self, tasks: list[str], window: int = 20):
        self.tasks = tasks
        self._returns: dict[str, deque] = defaultdict(lambda: deque(maxlen=window))
        self.episodes = 0

    def add(self, task: str, episode_return: float) -> None:
        self._returns[task].append(episode_return)
        self.episodes += 1

    def means(self) -> dict[str, float]:
        return {t: sum(r) / len(r) for t, r in self._returns.items() if r}


def progress_line(
    frames: int,
    total_frames: int,
    fps: float,
    updates: int,
    policy_lag: float,
    returns: dict[str, float],
    losses: dict[str, float],
    extra: dict[str, Any] | None = None,
    *,
    reference: Mapping[str, tuple[float, float]] | None = None,
    num_tasks: int | None = None,
) -> str:
    """One line of training progress. `returns`: recent mean raw return per task that has finished a game.

    Up to MAX_LISTED_RETURNS tasks, each return is listed. With more, a summary over the tasks: the median
    human-normalised score (HNS, `reference[task]` = (random, human)) and the best and worst task by it, when
    `reference` covers every task listed in `returns`; otherwise the median raw return and the tasks with the
    highest and lowest raw return. `num_tasks` (the suite's) says how many tasks have no finished game yet.
    The ETA counts down to 0 and stays there once `frames` passes `total_frames`.
    """
    eta = max(total_frames - frames, 0) / fps if fps > 0 else float("inf")
    parts = [
        f"frames {frames:,}/{total_frames:,} ({100 * frames / max(total_frames, 1):.1f}%)",
        f"{fps:,.0f} f/s",
        f"updates {updates:,}",
        f"lag {policy_lag:.1f}",
        f"eta {_duration(eta)}",
    ]
    if losses:
        parts.append(" ".join(f"{k} {v:.3g}" for k, v in losses.items()))
    if len(returns) > MAX_LISTED_RETURNS:
        parts.append(_returns_summary(returns, reference, num_tasks))
    elif returns:
        parts.append("return " + " ".join(f"{k}={v:.1f}" for k, v in sorted(returns.items())))
    for k, v in (extra or {}).items():
        parts.append(f"{k} {v}")
    return " | ".join(parts)


def _returns_summary(
    returns: dict[str, float], reference: Mapping[str, tuple[float, float]] | None, num_tasks: int | None
) -> str:
    """E.g. `return median HNS 12.3% over 50/57 tasks, best pong 105.2%, worst skiing -3.1%`."""
    over = f"{len(returns)}/{max(num_tasks or 0, len(returns))} tasks"
    if reference is not None and all(task in reference for task in returns):
        scores = {t: float(scoring.human_normalised_score(r, *reference[t])) for t, r in returns.items()}
        best, worst = max(scores, key=scores.get), min(scores, key=scores.get)
        return (
            f"return median HNS {statistics.median(scores.values()):.1f}% over {over}, "
            f"best {best} {scores[best]:.1f}%, worst {worst} {scores[worst]:.1f}%"
        )
    best, worst = max(returns, key=returns.get), min(returns, key=returns.get)
    return (
        f"return median {statistics.median(returns.values()):.1f} over {over}, "
        f"best {best}={returns[best]:.1f}, worst {worst}={returns[worst]:.1f}"
    )


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s"


def progress_bar(frames: int, total_frames: int, width: int = 30) -> str:
    done = int(width * min(frames / max(total_frames, 1), 1.0))
    return "[" + "#" * done + "." * (width - done) + "]"


def is_terminal() -> bool:
    return sys.stdout.isatty()


def csv_text(rows: list[list[Any]], header: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
