"""`make bench --quick` runs end to end and prints the agreed JSON keys as its last line."""

import json
import os
import subprocess
import sys

import pytest

KEYS = {
    "env_fps",
    "infer_fps_shallow",
    "infer_fps_deep",
    "learn_fps_shallow",
    "learn_fps_deep",
    "pipeline_fps",
    "loop_fps_shallow",
    "loop_fps_deep",
    "limit_fps_shallow",
    "limit_fps_deep",
    "efficiency_shallow",
    "efficiency_deep",
    "loop_fps_shallow_synchronous",
    "synchronous_over_async_shallow",
    "loop_fps_minatar",
    "limit_fps_minatar",
    "efficiency_minatar",
    "loop_fps_minatar_grid",
    "limit_fps_minatar_grid",
    "efficiency_minatar_grid",
    "replay_unroll_bytes",
    "replay_unroll_bytes_stored",
    "peak_rss_mb",
    "device",
}


# ~2 min alone on 2 cores, but five fresh TensorFlow processes: a new machine's cold caches slow each one.
@pytest.mark.timeout(600)
def test_quick_bench_prints_every_key_and_saves_the_result(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "bench.run_bench", "--quick", f"--results_dir={tmp_path}"],
        cwd=repo,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert KEYS <= result.keys()
    assert all(result[k] > 0 for k in KEYS - {"device"})
    saved = list(tmp_path.glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["commit"] == result["commit"]
