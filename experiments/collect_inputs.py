"""Copy what a report reads from run directories into a committed inputs folder (no checkpoints, no TensorBoard).

  python -m experiments.collect_inputs --src=runs/popart --dst=leaderboards/inputs/minatar/popart \\
      [--episode_stride=10]

For each run directory under --src (any folder holding eval_summary.json), copies config.json,
eval_summary.json and eval_scores.csv, and episodes.csv — with --episode_stride=k > 1 only every k-th episode of
each task (a systematic sample: its smoothed learning curve estimates the full one, at a k-th of the size).
The relative layout is kept; every file is written atomically.
"""

from __future__ import annotations

from pathlib import Path

from absl import app, flags

from impala_tf import writers

FLAGS = flags.FLAGS


def define_flags() -> None:
    # Defined only when run as a binary: importing this module (tests) must not clash with other flags.
    flags.DEFINE_string("src", None, "Folder of run directories (searched recursively).")
    flags.DEFINE_string("dst", None, "Destination folder.")
    flags.DEFINE_integer("episode_stride", 1, "Keep every k-th episode of each task in episodes.csv.")


RUN_FILES = ("config.json", "eval_summary.json", "eval_scores.csv")


def thin_episodes(text: str, stride: int) -> str:
    """episodes.csv text keeping, per task (first column), the 1st, (1+k)-th, (1+2k)-th, ... row."""
    lines = text.splitlines()
    kept, seen = [lines[0]], {}
    for line in lines[1:]:
        task = line.split(",", 1)[0]
        if seen.get(task, 0) % stride == 0:
            kept.append(line)
        seen[task] = seen.get(task, 0) + 1
    return "\n".join(kept) + "\n"


def collect(src: Path, dst: Path, stride: int = 1, only: str | None = None) -> list[Path]:
    """Copies every evaluated run under `src` (or only the one whose directory is named `only`) into `dst`."""
    copied = []
    for summary in sorted(src.rglob("eval_summary.json")):
        run = summary.parent
        if only is not None and run.name != only:
            continue
        target = dst / run.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in RUN_FILES:
            if (run / name).exists():
                writers.atomic_write_text(target / name, (run / name).read_text())
        if (run / "episodes.csv").exists():
            writers.atomic_write_text(
                target / "episodes.csv", thin_episodes((run / "episodes.csv").read_text(), stride)
            )
        copied.append(target)
    return copied


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.src or not FLAGS.dst or FLAGS.episode_stride < 1:
        raise app.UsageError("--src and --dst are required; --episode_stride must be >= 1")
    copied = collect(Path(FLAGS.src), Path(FLAGS.dst), FLAGS.episode_stride)
    print(f"copied {len(copied)} run(s) into {FLAGS.dst}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
