"""The trainer's progress lines: the rate and ETA they print."""

import re
import types

import tensorflow as tf

from impala_tf import monitor as monitor_lib
from impala_tf import writers
from impala_tf.suites import get_suite


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_monitor(tmp_path, monkeypatch, frames0: int, every_secs: float = 10.0) -> tuple:
    clock = FakeClock()
    monkeypatch.setattr(monitor_lib.time, "time", clock)
    learner = types.SimpleNamespace(
        num_frames=tf.Variable(frames0, dtype=tf.int64),
        num_updates=tf.Variable(0, dtype=tf.int64),
        uses_popart=False,
    )
    suite = get_suite("catch")
    monitor = monitor_lib.Monitor(
        suite,
        learner,
        writers.EpisodeLog(tmp_path / "episodes.csv"),
        tf.summary.create_noop_writer(),
        total_frames=frames0 + 1_000_000,
        stop_frames=frames0 + 1_000_000,
        every_secs=every_secs,
        num_tasks=len(suite.games),
    )
    return monitor, clock


def rate(line: str) -> float:
    return float(re.search(r"([\d,]+) f/s", line).group(1).replace(",", ""))


def test_first_progress_line_measures_the_rate_from_the_first_update_not_from_start_up(
    tmp_path, monkeypatch, capsys
):
    frames0 = 11_603_040  # a resumed run
    monitor, clock = make_monitor(tmp_path, monkeypatch, frames0)
    clock.now += 30.0  # start-up and the learner's first (tracing) update: 640 frames in 30 s
    monitor.on_update(frames0 + 640, {}, {})
    assert capsys.readouterr().out == ""
    for i in range(1, 11):  # then 3,200 frames/s
        clock.now += 1.0
        monitor.on_update(frames0 + 640 + 3_200 * i, {}, {})
    line = capsys.readouterr().out.strip()
    assert rate(line) == 3_200
    assert "eta 0h05m" in line


def test_progress_line_is_printed_when_the_first_update_reaches_the_stop(tmp_path, monkeypatch, capsys):
    monitor, clock = make_monitor(tmp_path, monkeypatch, frames0=0)
    clock.now += 5.0
    monitor.on_update(1_000_000, {}, {})
    assert "1,000,000/1,000,000" in capsys.readouterr().out
