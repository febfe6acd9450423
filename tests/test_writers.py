"""episodes.csv and atomic writes: no torn rows, no duplicates after a resume, no half-written files."""

import os

import pytest

from impala_tf import writers


def _rows(path):
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(writers.EPISODE_COLUMNS)
    return [line.split(",") for line in lines[1:]]


def test_episode_log_appends_flushed_rows(tmp_path):
    log = writers.EpisodeLog(tmp_path / "episodes.csv")
    log.append("pong", 100, -21.0, 3000)
    # Visible before close: every row is flushed as it is written.
    assert [r[:4] for r in _rows(tmp_path / "episodes.csv")] == [["pong", "100", "-21", "3000"]]
    log.close()


def test_resume_drops_rows_after_the_checkpoint_frames(tmp_path):
    log = writers.EpisodeLog(tmp_path / "episodes.csv")
    for frames in (100, 200, 300, 400):
        log.append("pong", frames, 1.0, 10)
    log.close()
    log = writers.EpisodeLog(tmp_path / "episodes.csv", resume_frames=250)
    log.append("pong", 260, 2.0, 10)
    log.close()
    assert [int(r[1]) for r in _rows(tmp_path / "episodes.csv")] == [100, 200, 260]


def test_resume_drops_a_torn_last_row(tmp_path):
    path = tmp_path / "episodes.csv"
    log = writers.EpisodeLog(path)
    log.append("pong", 100, 1.0, 10)
    log.close()
    with open(path, "a") as f:
        f.write("pong,200,3")  # killed mid-write
    writers.EpisodeLog(path, resume_frames=10_000).close()
    assert [int(r[1]) for r in _rows(path)] == [100]


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    writers.atomic_write_text(path, "old\n")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        writers.atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left behind


def test_progress_line_names_frames_rate_lag_and_returns():
    line = writers.progress_line(1000, 4000, 250.0, 7, 1.5, {"pong": -20.5}, {"total_loss": 0.5})
    for part in (
        "1,000/4,000",
        "250 f/s",
        "updates 7",
        "lag 1.5",
        "pong=-20.5",
        "total_loss 0.5",
        "eta 0h00m12s",
    ):
        assert part in line


def test_progress_line_summarises_many_tasks_by_median_human_normalised_score():
    games = [f"game{i}" for i in range(57)]
    reference = {g: (0.0, 100.0) for g in games}
    returns = {g: float(i) for i, g in enumerate(games[:50])}  # 7 tasks have not finished a game yet
    line = writers.progress_line(1000, 4000, 250.0, 7, 1.5, returns, {}, reference=reference, num_tasks=57)
    assert "return median HNS 24.5% over 50/57 tasks, best game49 49.0%, worst game0 0.0%" in line
    assert "game25" not in line  # not one return per task
    assert line.count("=") == 0


def test_progress_line_summarises_many_tasks_by_raw_return_without_references():
    returns = {f"game{i}": float(10 * i) for i in range(9)}
    line = writers.progress_line(1000, 4000, 250.0, 7, 1.5, returns, {})
    assert "return median 40.0 over 9/9 tasks, best game8=80.0, worst game0=0.0" in line
    few = writers.progress_line(1000, 4000, 250.0, 7, 1.5, dict(list(returns.items())[:8]), {})
    assert "return game0=0.0 game1=10.0" in few and "game7=70.0" in few  # up to 8 tasks: each listed


def test_progress_line_eta_stays_at_zero_past_the_frame_budget():
    line = writers.progress_line(4_100_000, 4_000_000, 250.0, 7, 1.5, {}, {})
    assert "eta 0h00m00s" in line and "-" not in line.split("eta ")[1].split(" |")[0]
