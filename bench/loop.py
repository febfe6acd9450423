"""One trainer run in this process, measured: the frames/s the learner takes in over a window.

Shared by `make bench` (bench/run_bench.py) and `make bench-ray` (bench/ray_bench.py).
"""

from __future__ import annotations

import tempfile
import threading
import time

from absl import flags

from impala_tf import rundir, trainer

FLAGS = flags.FLAGS


def measure_loop(suite: str, games: list[str], warmup_secs: float, window_secs: float, **flag_values) -> dict:
    """Trains `suite` (restricted to `games`, if any) with these training-flag values in a throw-away logdir.

    The window opens `warmup_secs` after the first updates (actors up, step compiled). Frames move in whole
    updates (T x B x frames-per-step at a time), so the window is timed from the first update in it to the last.
    Returns fps, updates_in_window and startup_secs (seconds from start to the first updates).
    """
    with tempfile.TemporaryDirectory() as logdir:
        values = {
            "logdir": logdir,
            "total_frames": 10**12,
            "checkpoint_every_secs": 10**6,
            "progress_every_secs": 10**6,
            **flag_values,
        }
        for key, value in values.items():
            setattr(FLAGS, key, value)
        run = trainer.Trainer(rundir.resolve_suite(suite, games), logdir)
        thread = threading.Thread(target=run.run, daemon=True)
        started = time.perf_counter()
        thread.start()
        deadline = time.time() + 600
        while run.learner.num_updates.numpy() < 2 and time.time() < deadline:
            time.sleep(0.2)
        startup_secs = time.perf_counter() - started
        time.sleep(warmup_secs)
        changes = []  # (time, frames, updates) at each update seen in the window
        frames, window_end = int(run.learner.num_frames.numpy()), time.perf_counter() + window_secs
        while time.perf_counter() < window_end:
            now = int(run.learner.num_frames.numpy())
            if now != frames:
                frames = now
                changes.append((time.perf_counter(), now, int(run.learner.num_updates.numpy())))
            time.sleep(0.01)
        run.stop.set()
        thread.join(120)
    if len(changes) < 2:
        return {"fps": 0.0, "updates_in_window": 0, "startup_secs": startup_secs}
    (t0, frames0, updates0), (t1, frames1, updates1) = changes[0], changes[-1]
    return {
        "fps": (frames1 - frames0) / (t1 - t0),
        "updates_in_window": updates1 - updates0,
        "startup_secs": startup_secs,
    }
