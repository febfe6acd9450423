"""`make bench-ray`: the whole trainer's frames/s with Ray actors (1, 2, 4) against local actor threads.

For each number of actors N, one run with `--runtime=ray` (N Ray actor processes, one CPU each, on a local
loopback-only Ray instance shared by the runs) and one with `--runtime=local` (N actor threads), both with N x
--envs_per_actor environments. A run's frames/s is the learner's frame counter over a window that starts once
updates flow and a warm-up has passed; overhead = 1 - ray / local. Frames are emulator frames (agent steps x 4
on Atari). The last line printed is one JSON object, also saved under bench/results/.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from bench.loop import measure_loop  # noqa: E402
from impala_tf import rundir, writers  # noqa: E402
from impala_tf.runtime import ray as ray_runtime  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("bench_actors", ["1", "2", "4"], "Numbers of actors to measure.")
flags.DEFINE_string("bench_suite", "atari5", "Suite of the runs.")
flags.DEFINE_list("bench_games", [], "Restrict the suite to these games (empty: all of them).")
flags.DEFINE_integer("bench_envs_per_actor", 8, "Environments per actor.")
flags.DEFINE_float("warmup_secs", 6.0, "Seconds after the first updates before the window opens.")
flags.DEFINE_float("window_secs", 12.0, "Measured window of each run.")
flags.DEFINE_string("results_dir", "bench/results", "Where the JSON result is saved.")


def measure(runtime: str, num_actors: int) -> dict:
    """One trainer run in this process: the learner's frames/s over the window, and the seconds to its first updates."""
    return measure_loop(
        FLAGS.bench_suite,
        FLAGS.bench_games,
        FLAGS.warmup_secs,
        FLAGS.window_secs,
        runtime=runtime,
        num_actors=num_actors,
        envs_per_actor=FLAGS.bench_envs_per_actor,
    )


def main(argv):
    del argv
    counts = [int(n) for n in FLAGS.bench_actors]
    envs = FLAGS.bench_envs_per_actor
    games = ",".join(FLAGS.bench_games) or "all"
    print(
        f"Ray vs local actors: {FLAGS.bench_suite} ({games}), {envs} envs per actor, window {FLAGS.window_secs:.0f} s, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    # One loopback instance for every Ray run, with a logical CPU per actor even beyond the cores.
    ray_runtime.init_ray(None, num_cpus=max(os.cpu_count() or 1, max(counts)))
    rows = []
    for n in counts:
        ray_result = measure("ray", n)
        local_result = measure("local", n)
        row = {
            "actors": n,
            "envs": n * envs,
            "ray_fps": round(ray_result["fps"], 1),
            "local_fps": round(local_result["fps"], 1),
            "overhead": round(1.0 - ray_result["fps"] / max(local_result["fps"], 1e-9), 3),
            "ray_startup_secs": round(ray_result["startup_secs"], 1),
            "local_startup_secs": round(local_result["startup_secs"], 1),
        }
        rows.append(row)
        print(
            f"  {n} actors x {envs} envs: ray {row['ray_fps']:>9,.0f} f/s   local {row['local_fps']:>9,.0f} f/s   "
            f"overhead {row['overhead']:+.0%}   (first updates after {row['ray_startup_secs']:.0f} s / "
            f"{row['local_startup_secs']:.0f} s)",
            flush=True,
        )
    import ray

    ray.shutdown()

    print(f"\n  {'actors':>6} {'envs':>5} {'ray f/s':>10} {'local f/s':>10} {'overhead':>9}")
    for row in rows:
        print(
            f"  {row['actors']:>6} {row['envs']:>5} {row['ray_fps']:>10,.0f} {row['local_fps']:>10,.0f} "
            f"{row['overhead']:>+9.0%}"
        )
    results = {
        "bench": "ray",
        "suite": FLAGS.bench_suite,
        "games": FLAGS.bench_games,
        "envs_per_actor": envs,
        "window_secs": FLAGS.window_secs,
        "rows": rows,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        "commit": rundir.git_commit() or "unknown",
    }
    out_dir = Path(FLAGS.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    writers.atomic_write_json(out_dir / f"{stamp}_ray_cpu.json", results)
    print(json.dumps(results, sort_keys=True))
    sys.stdout.flush()
    os._exit(0)  # actor threads and learner-batch threads of the runs are daemonic; do not wait for them


if __name__ == "__main__":
    app.run(main)
