"""The trainer's bookkeeping beside its loop: policy lag, replay age, finished episodes, progress lines and
TensorBoard summaries. It only observes: nothing here changes what the learner does.

  monitor.on_batch(versions, num_replayed, updates)   before each update
  monitor.on_update(frames, logs, runtime_stats)      after it: episodes.csv rows, then a report when due
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import psutil
import tensorflow as tf

from impala_tf import popart, writers
from impala_tf.envs.base import EpisodeStats


class Monitor:
    """Collects what actors and learner report and writes it: `episodes.csv` (through `episodes`), the progress
    line every `every_secs` and at `stop_frames`, and TensorBoard scalars with it."""

    def __init__(
        self,
        suite: Any,
        learner: Any,
        episodes: writers.EpisodeLog,
        summary_writer: Any,
        total_frames: int,
        stop_frames: int,
        every_secs: float,
        num_tasks: int,
        replay: Any = None,
    ):
        self._suite = suite
        self._learner = learner
        self._episodes = episodes
        self._summary_writer = summary_writer
        self._total_frames = total_frames
        self._stop_frames = stop_frames
        self._every_secs = every_secs
        self._num_tasks = num_tasks
        self._replay = replay
        self._returns = writers.ReturnTracker(list(suite.games))
        self._pending: list[EpisodeStats] = []
        self._lock = threading.Lock()
        self._process = psutil.Process()
        # The rate's clock starts at the first update: before it come start-up, the actors' first games and the
        # learner's tracing, which made a resumed run's first line read ~1 % of its rate and its ETA days.
        self._last_time: float | None = None
        self._last_frames = 0
        self._lag_sum = self._lag_n = 0.0
        self._age_sum = self._age_n = 0.0  # learner updates since the replayed unrolls were acted

    def on_episode(self, episode: EpisodeStats) -> None:
        """Called by actor threads (or the Ray pump) when a game ends."""
        with self._lock:
            self._pending.append(episode)

    def on_batch(self, versions: np.ndarray, num_replayed: int, updates: int) -> None:
        """Before an update: the batch's policy versions `[B]` (fresh unrolls first, then `num_replayed`
        replayed ones) against the learner's update count."""
        num_fresh = len(versions) - num_replayed
        self._lag_sum += updates - float(np.mean(versions[:num_fresh]))
        self._lag_n += 1
        if num_replayed:
            self._age_sum += updates - float(np.mean(versions[num_fresh:]))
            self._age_n += 1

    def on_update(self, frames: int, logs: dict[str, Any], runtime_stats: dict[str, Any]) -> None:
        """After an update: writes the games that ended since, then reports if due."""
        with self._lock:
            finished, self._pending[:] = list(self._pending), []
        for episode in finished:
            task = self._suite.games[episode.task_id]
            self._episodes.append(task, frames, episode.episode_return, episode.episode_frames)
            self._returns.add(task, episode.episode_return)
        now = time.time()
        if self._last_time is None:
            self._last_time, self._last_frames = now, frames
            if frames < self._stop_frames:
                return
        if now - self._last_time >= self._every_secs or frames >= self._stop_frames:
            self._report(now, frames, logs, dict(runtime_stats))

    def _report(self, now: float, frames: int, logs: dict[str, Any], stats: dict[str, Any]) -> None:
        fps = (frames - self._last_frames) / max(now - self._last_time, 1e-9)
        lag = self._lag_sum / max(self._lag_n, 1)
        rss_mb = self._process.memory_info().rss / 2**20
        scalars = {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}
        if self._replay is not None:
            stats["replay"] = len(self._replay)
            stats["replay_age"] = round(self._age_sum / self._age_n, 1) if self._age_n else 0.0
            stats["replay_mb"] = round(self._replay.nbytes / 2**20)
        self._summaries(frames, fps, lag, rss_mb, scalars, stats)
        shown = {k: scalars[k] for k in ("total_loss", "pg_loss", "baseline_loss", "entropy") if k in scalars}
        line = writers.progress_line(
            frames,
            self._total_frames,
            fps,
            int(self._learner.num_updates.numpy()),
            lag,
            self._returns.means(),
            shown,
            {"rss": f"{rss_mb:.0f}MB", **stats},
            reference=self._suite.reference,
            num_tasks=self._num_tasks,
        )
        if writers.is_terminal():
            line = writers.progress_bar(frames, self._total_frames) + " " + line
        print(line, flush=True)
        self._last_time, self._last_frames = now, frames
        self._lag_sum = self._lag_n = self._age_sum = self._age_n = 0.0

    def _summaries(self, frames, fps, lag, rss_mb, scalars, stats) -> None:
        with self._summary_writer.as_default(step=frames):
            tf.summary.scalar("perf/frames_per_second", fps)
            tf.summary.scalar("perf/policy_lag", lag)
            tf.summary.scalar("perf/rss_mb", rss_mb)
            for k, v in stats.items():
                tf.summary.scalar(f"perf/{k}", float(v))
            for k, v in scalars.items():
                tf.summary.scalar(f"learner/{k}", v)
            for task, value in self._returns.means().items():
                tf.summary.scalar(f"return/{task}", value)
            learner = self._learner
            if learner.uses_popart:
                mu = learner.popart_mu.numpy()
                sigma = popart.sigma_from_moments(learner.popart_mu, learner.popart_nu).numpy()
                for i, task in enumerate(self._suite.games):
                    tf.summary.scalar(f"popart_mu/{task}", mu[i])
                    tf.summary.scalar(f"popart_sigma/{task}", sigma[i])
        self._summary_writer.flush()
