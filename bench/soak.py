"""Soak test (`make soak`): a long run with random actor failures and one kill -9 + resume, then checks.

    python -m bench.soak [--minutes=30] [--suite=catch] [--fault_rate=0.001] [--logdir=DIR]

Phase 1 trains with actors that fail at random (IMPALA_TF_FAULT_RATE: the chance that an actor raises after an
unroll) and is killed with SIGKILL at a random moment 30-60% into the time budget; phase 2 re-runs the same
command, which resumes, and is stopped with SIGTERM when the budget is spent. Then it checks that:
  - the resume started from the newest checkpoint and phase 2 ended gracefully (exit 128 + SIGTERM);
  - episodes.csv lost no row written before that checkpoint, holds no row of the re-played stretch twice, no
    torn row, and its frame counter never decreases;
  - actors failed, were restarted, and the run carried on;
  - memory stayed flat (RSS from the progress lines of phase 2, after warm-up);
  - the agent still learned (late returns beat early ones; Catch: mean return of the last 500 games >= 0.5).
Prints one line per check and a JSON summary; exits 1 if a check failed.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]

flags.DEFINE_float("minutes", 30.0, "Wall-clock budget of the whole soak.")
flags.DEFINE_string("suite", "catch", "Suite binary to soak: catch or minatar.")
flags.DEFINE_list("games", [], "Restrict the suite to these games (e.g. breakout for minatar).")
flags.DEFINE_float("fault_rate", 0.001, "Chance that an actor raises after an unroll (IMPALA_TF_FAULT_RATE).")
flags.DEFINE_float(
    "learning_rate", 0.003, "Learning rate (the schedule barely anneals: the frame budget is huge)."
)
flags.DEFINE_integer("checkpoint_every_secs", 30, "Checkpoint period of the soaked run.")
flags.DEFINE_string(
    "logdir", None, "Run directory (default: a fresh temporary one, removed when all passed)."
)
flags.DEFINE_integer("seed", 0, "Seed of the kill moment.")
flags.DEFINE_float(
    "max_rss_growth_mb", 100.0, "Largest RSS growth from early to late phase 2 that counts as flat."
)
FLAGS = flags.FLAGS

PROGRESS_RSS = re.compile(r"\| rss (\d+)MB \|")
RESUMED = re.compile(r"resumed from (\S+) at ([\d,]+) frames")


def start(logdir: Path, out: Path, err: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        f"suites.{FLAGS.suite}",
        f"--logdir={logdir}",
        "--total_frames=10000000000",
        f"--learning_rate={FLAGS.learning_rate}",
        f"--checkpoint_every_secs={FLAGS.checkpoint_every_secs}",
        "--progress_every_secs=10",
        "--max_actor_restarts=1000000",
    ]
    if FLAGS.games:
        command.append(f"--games={','.join(FLAGS.games)}")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "IMPALA_TF_FAULT_RATE": str(FLAGS.fault_rate)}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=out.open("w"), stderr=err.open("w"))


def checkpoint_frames(logdir: Path) -> int | None:
    import tensorflow as tf

    from impala_tf import checkpoints

    paths = checkpoints.checkpoint_paths(logdir / "checkpoints")
    if not paths:
        return None
    return int(
        tf.train.load_checkpoint(paths[-1]).get_tensor("learner/num_frames/.ATTRIBUTES/VARIABLE_VALUE")
    )


def complete_rows(path: Path) -> list[str]:
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()[1:]  # a torn last row lacks its newline


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.minutes <= 0:
        raise app.UsageError("--minutes must be > 0")
    logdir = Path(FLAGS.logdir) if FLAGS.logdir else Path(tempfile.mkdtemp(prefix="impala_soak_")) / "run"
    if logdir.exists() and any(logdir.iterdir()):
        raise app.UsageError(f"--logdir={logdir} is not empty; the soak needs a fresh run directory")
    logdir.mkdir(parents=True, exist_ok=True)
    budget = FLAGS.minutes * 60
    began = time.time()
    kill_at = random.Random(FLAGS.seed).uniform(0.3, 0.6) * budget
    print(f"soak: {FLAGS.suite}, {FLAGS.minutes:g} min, fault rate {FLAGS.fault_rate:g}, logdir {logdir}")

    # Phase 1: train with failing actors, then kill -9.
    phase1 = start(logdir, logdir.parent / "phase1.out", logdir.parent / "phase1.err")
    while time.time() - began < kill_at and phase1.poll() is None:
        time.sleep(1)
    if phase1.poll() is not None:
        print(f"FAIL phase 1 exited by itself with {phase1.returncode}; see {logdir.parent / 'phase1.err'}")
        return 1
    phase1.kill()
    phase1.wait()
    killed_at = time.time() - began
    frames_at_kill = checkpoint_frames(logdir)
    kept = [
        r for r in complete_rows(logdir / "episodes.csv") if int(r.split(",")[1]) <= (frames_at_kill or 0)
    ]
    print(
        f"phase 1: killed (SIGKILL) after {killed_at:.0f} s; newest checkpoint at {frames_at_kill:,} frames"
    )

    # Phase 2: the same command resumes; SIGTERM when the budget is spent.
    phase2 = start(logdir, logdir.parent / "phase2.out", logdir.parent / "phase2.err")
    while time.time() - began < budget and phase2.poll() is None:
        time.sleep(1)
    stop_sent = time.time()
    if phase2.poll() is None:
        phase2.send_signal(signal.SIGTERM)
    try:
        phase2.wait(timeout=120)
    except subprocess.TimeoutExpired:
        phase2.kill()
    stop_seconds = time.time() - stop_sent
    out = (logdir.parent / "phase2.out").read_text()
    errors = (logdir.parent / "phase1.err").read_text() + (logdir.parent / "phase2.err").read_text()

    results: list[tuple[str, bool, str]] = []

    def check(name: str, ok: bool, detail: str) -> None:
        results.append((name, ok, detail))
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")

    resumed = RESUMED.search(out)
    resumed_frames = int(resumed.group(2).replace(",", "")) if resumed else None
    check(
        "resumed from the newest checkpoint",
        resumed_frames == frames_at_kill,
        f"at {resumed_frames} frames; newest checkpoint at kill {frames_at_kill}",
    )
    check(
        "graceful stop on SIGTERM",
        phase2.returncode == 128 + signal.SIGTERM and stop_seconds < 30,
        f"exit {phase2.returncode} after {stop_seconds:.1f} s",
    )
    text = (logdir / "episodes.csv").read_text()
    rows = text.splitlines()[1:]
    frames = [int(r.split(",")[1]) for r in rows]
    final_frames = checkpoint_frames(logdir) or 0
    check(
        "episodes.csv has no torn row",
        text.endswith("\n") and all(r.count(",") == 4 for r in rows),
        f"{len(rows):,} rows",
    )
    check(
        "frames never decrease",
        frames == sorted(frames) and final_frames > (frames_at_kill or 0),
        f"episodes.csv up to {frames[-1] if frames else 0:,}; final checkpoint {final_frames:,} frames",
    )
    after = rows[len(kept) :]
    check(
        "no row lost or duplicated across the kill",
        rows[: len(kept)] == kept and (not after or int(after[0].split(",")[1]) > (frames_at_kill or 0)),
        f"{len(kept):,} rows up to the checkpoint kept verbatim; {len(after):,} rows after it",
    )
    failures = len(re.findall(r"actor \d+ failed", errors))
    check(
        "actors failed and were restarted", failures > 0 and "InjectedFault" in errors, f"{failures} failures"
    )
    rss = [int(m) for m in PROGRESS_RSS.findall(out)]
    if len(rss) >= 8:
        early, late = (
            statistics.median(rss[len(rss) // 4 : len(rss) // 2]),
            statistics.median(rss[-len(rss) // 4 :]),
        )
        check(
            "memory flat",
            late - early <= FLAGS.max_rss_growth_mb,
            f"RSS {early:.0f} MB -> {late:.0f} MB (phase 2)",
        )
    else:
        check("memory flat", False, f"only {len(rss)} progress lines in phase 2: run longer")
    returns = [float(r.split(",")[2]) for r in rows]
    window = max(1, min(500, len(returns) // 5))
    first, last = statistics.fmean(returns[:window] or [0]), statistics.fmean(returns[-window:] or [0])
    learned = last > first and (FLAGS.suite != "catch" or last >= 0.5)
    check(
        "the agent learned", learned, f"mean return of the first {window} games {first:.2f}, last {last:.2f}"
    )

    summary = {
        "suite": FLAGS.suite,
        "minutes": round((time.time() - began) / 60, 1),
        "frames": final_frames,
        "frames_per_second": round(final_frames / max(time.time() - began, 1e-9)),
        "episodes": len(rows),
        "actor_failures": failures,
        "killed_after_s": round(killed_at),
        "resumed_at_frames": resumed_frames,
        "rss_mb": [min(rss, default=0), max(rss, default=0)],
        "return_first_last": [round(first, 3), round(last, 3)],
        "passed": all(ok for _, ok, _ in results),
    }
    print(json.dumps(summary))
    if summary["passed"] and not FLAGS.logdir:
        shutil.rmtree(logdir.parent, ignore_errors=True)
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    app.run(main)
