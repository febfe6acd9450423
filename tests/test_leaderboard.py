"""The leaderboard binary: inputs, validation, outputs, the regression guard and the committed leaderboard."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impala_tf import leaderboard, reference
from impala_tf.report import inputs, plots, render, statistics

REPO = Path(__file__).resolve().parents[1]
HUMAN_RANDOM = reference.atari57_human_random()


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = leaderboard.run(["leaderboard", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def score_at(game: str, hns: float) -> float:
    """The raw score of `game` whose human-normalised score is `hns` percent."""
    low, high = HUMAN_RANDOM[game]
    return low + hns / 100.0 * (high - low)


def hns_of(game: str, score: float) -> float:
    low, high = HUMAN_RANDOM[game]
    return 100.0 * (score - low) / (high - low)


def make_run(
    path: Path,
    agent: str,
    seed: int,
    scores: dict[str, list[float]],
    protocol="impala",
    trained_frames: int = 2_000_000,
) -> Path:
    path.mkdir(parents=True)
    summary = {
        "agent": agent,
        "suite": "atari57",
        "protocol": protocol,
        "seed": seed,
        "trained_frames": trained_frames,
    }
    (path / "eval_summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps({"suite": "atari57", "games": sorted(scores)}))
    rows = [[game, i + 1, score, 1000] for game, values in scores.items() for i, score in enumerate(values)]
    write_csv(path / "eval_scores.csv", ["task", "episode", "score", "frames"], rows)
    episodes = [[game, 1000 * (i + 1), float(i), 500, 0.0] for game in scores for i in range(20)]
    write_csv(
        path / "episodes.csv", ["task", "frames", "episode_return", "episode_frames", "wall_time"], episodes
    )
    return path


# --- JSON output and aggregates -------------------------------------------------------------------


def test_json_output_reports_each_agent_with_hns_aggregates(tmp_path, capsys):
    rows = [["human_like", game, score_at(game, 100.0)] for game in ("pong", "breakout", "qbert")]
    rows += [["half", game, score_at(game, 50.0)] for game in ("pong", "breakout")]
    scores = write_csv(tmp_path / "scores.csv", ["agent", "game", "score"], rows)
    code, out, err = run_cli(capsys, f"--scores={scores}", "--reference=none", "--format=json")
    assert code == 0, err
    agents = json.loads(out)["agents"]
    assert list(agents) == ["human_like", "half"]
    for name, expected, games in (("human_like", 100.0, 3), ("half", 50.0, 2)):
        entry = agents[name]
        assert set(entry) >= {"median_hns", "mean_hns", "iqm_hns", "capped_mean_hns", "games"}
        for key in ("median_hns", "mean_hns", "iqm_hns", "capped_mean_hns"):
            assert entry[key] == pytest.approx(expected)
        assert entry["games"] == games
    assert not (REPO / "leaderboards" / "atari57" / "scores.csv").exists()


def test_json_output_includes_the_requested_reference_rows(tmp_path, capsys):
    scores = write_csv(tmp_path / "mine.csv", ["game", "score"], [["pong", 21.0]])
    code, out, _ = run_cli(
        capsys, f"--scores={scores}", "--reference=impala_paper,machado_repro", "--format=json"
    )
    agents = json.loads(out)["agents"]
    assert code == 0
    assert "mine" in agents  # no agent column: the file stem names the agent
    assert agents["impala_deep_experts"]["median_hns"] == pytest.approx(191.8, abs=0.05)
    assert agents["moolib_impala"]["median_hns"] == pytest.approx(124.4, abs=0.05)


def test_markdown_shows_partial_coverage_intervals_and_per_game_scores(tmp_path, capsys):
    games = ["pong", "breakout", "qbert", "seaquest"]
    rng = np.random.default_rng(0)
    rows = [[game, seed, score_at(game, 80.0 + 10.0 * rng.normal())] for game in games for seed in range(3)]
    scores = write_csv(tmp_path / "seeded.csv", ["game", "seed", "score"], rows)
    out_dir = tmp_path / "board"
    code, _, err = run_cli(capsys, f"--scores={scores}", f"--out={out_dir}", "--bootstrap_resamples=300")
    assert code == 0, err
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "README.md",
        "aggregates.csv",
        "per_game.csv",
        "per_game.md",
        "report.html",
    ]
    readme = (out_dir / "README.md").read_text()
    row = next(line for line in readme.splitlines() if "| seeded |" in line)
    assert "4/57" in row and "aggregates over 4/57 games" in row
    assert row.count("[") == 4  # a 95 % interval on each of the four aggregates (3 seeds)
    with open(out_dir / "aggregates.csv") as f:
        seeded = next(r for r in csv.DictReader(f) if r["agent"] == "seeded")
    assert float(seeded["median_hns_low"]) <= float(seeded["median_hns"]) <= float(seeded["median_hns_high"])
    assert seeded["seeds"] == "3" and seeded["games"] == "4"
    per_game = (out_dir / "per_game.md").read_text()
    assert "| pong |" in per_game and "impala_deep_experts %" in per_game
    html = (out_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3


def test_mixed_protocols_and_frame_budgets_get_a_warning_column(tmp_path, capsys):
    rows = [
        ["sticky", "pong", 10.0, "machado", 50_000_000],
        ["sticky", "breakout", 30.0, "machado", 50_000_000],
    ]
    scores = write_csv(tmp_path / "s.csv", ["agent", "game", "score", "protocol", "frames"], rows)
    code, out, _ = run_cli(
        capsys, f"--scores={scores}", "--reference=impala_paper", f"--out={tmp_path / 'b'}"
    )
    assert code == 0
    readme = (tmp_path / "b" / "README.md").read_text()
    assert "mixes evaluation protocols" in readme
    row = next(line for line in readme.splitlines() if "| sticky |" in line)
    assert "machado" in row and "50M" in row
    # The submitted agent sets the baseline: the paper's rows are the ones flagged.
    paper_row = next(line for line in readme.splitlines() if "| impala_deep_experts |" in line)
    assert "⚠ protocol impala ≠ machado" in paper_row and "frames 200M ≠ 50M" in paper_row


def test_budget_baseline_is_the_most_common_budget_counting_near_equal_budgets_as_one(tmp_path, capsys):
    rows = [
        ["a", "breakout", 30.0, 10_000_640],
        ["b", "breakout", 40.0, 10_001_280],
        ["c", "breakout", 50.0, 15_000_000],
    ]
    scores = write_csv(tmp_path / "s.csv", ["agent", "game", "score", "frames"], rows)
    code, _, err = run_cli(capsys, f"--scores={scores}", f"--out={tmp_path / 'b'}")
    assert code == 0, err
    lines = (tmp_path / "b" / "README.md").read_text().splitlines()
    assert "frames 15M ≠ 10M" in next(line for line in lines if "| c |" in line)
    for agent in ("a", "b"):
        assert "frames" not in next(line for line in lines if f"| {agent} |" in line).split("⚠")[-1]


def test_an_agent_whose_games_had_different_budgets_shows_each_games_frames_and_seeds(tmp_path, capsys):
    runs = tmp_path / "runs"
    # "mixed": breakout trained 10M frames (seed 1), pong 20M frames (seeds 1 and 2), one game per run.
    make_run(runs / "m_b1", "mixed", 1, {"breakout": [30.0]}, trained_frames=10_000_000)
    make_run(runs / "m_p1", "mixed", 1, {"pong": [0.0]}, trained_frames=20_000_000)
    make_run(runs / "m_p2", "mixed", 2, {"pong": [2.0]}, trained_frames=20_000_000)
    # "even": one run of two games, 10M frames each.
    make_run(runs / "e1", "even", 1, {"breakout": [20.0], "pong": [-5.0]}, trained_frames=20_000_000)
    out_dir = tmp_path / "board"
    code, _, err = run_cli(capsys, f"--runs={runs}", "--reference=none", f"--out={out_dir}")
    assert code == 0, err
    lines = (out_dir / "README.md").read_text().splitlines()
    header = [cell.strip() for cell in next(line for line in lines if line.startswith("| rank")).split("|")]

    def shown(agent: str, column: str) -> str:
        row = next(line for line in lines if f"| {agent} |" in line)
        return [cell.strip() for cell in row.split("|")][header.index(column)]

    assert shown("mixed", "frames/game") == "10M–20M"  # not the median of 10M and 20M
    assert shown("mixed", "seeds") == "1–2 (2 in all)"
    assert "frames 10M–20M ≠ 10M" in shown("mixed", "warning")
    assert shown("even", "frames/game") == "10M" and shown("even", "seeds") == "1"
    assert "frames" not in shown("even", "warning")
    with open(out_dir / "per_game.csv") as f:
        per_game = {(r["agent"], r["game"]): (r["frames"], r["seeds"]) for r in csv.DictReader(f)}
    assert per_game[("mixed", "breakout")] == ("10000000", "1")
    assert per_game[("mixed", "pong")] == ("20000000", "2")
    assert per_game[("even", "pong")] == ("10000000", "1")
    with open(out_dir / "aggregates.csv") as f:
        by_agent = {r["agent"]: r for r in csv.DictReader(f)}
    assert (by_agent["mixed"]["frames_per_game_min"], by_agent["mixed"]["frames_per_game_max"]) == (
        "10000000",
        "20000000",
    )
    per_game_md = (out_dir / "per_game.md").read_text()
    assert "mixed (breakout 10M, pong 20M), even 10M." in per_game_md


def test_unspecified_protocol_is_flagged_on_its_own_row(tmp_path, capsys):
    scores = write_csv(tmp_path / "plain.csv", ["game", "score"], [["pong", 0.0]])
    code, _, _ = run_cli(capsys, f"--scores={scores}", f"--out={tmp_path / 'b'}")
    assert code == 0
    lines = (tmp_path / "b" / "README.md").read_text().splitlines()
    assert "⚠ protocol unspecified" in next(line for line in lines if "| plain |" in line)
    assert "protocol" not in next(line for line in lines if "| impala_deep_experts |" in line).split("⚠")[-1]


def test_reference_rows_are_restricted_to_the_suite_games():
    games = ("battle_zone", "double_dunk", "name_this_game", "phoenix", "qbert")
    suite = inputs.SuiteInfo("atari5", games, {game: HUMAN_RANDOM[game] for game in games}, "human/random")
    board = statistics.build_leaderboard(suite, [], ["impala_paper"], num_resamples=10)
    paper = {a.agent: a for a in reference.reference_agents("impala_paper")}
    assert {a.name for a in board.agents} == set(paper)
    for a in board.agents:
        assert a.games == list(games) and not a.warnings
        hns = [hns_of(game, paper[a.name].scores[game]) for game in games]
        assert a.estimates["median"].point == pytest.approx(np.median(hns))


def test_suite_without_normaliser_reports_raw_scores():
    suite = inputs.SuiteInfo("toy", ("catch", "maze"), None, "none (raw scores)")
    agent = inputs.AgentData(name="agent", protocol=None, scores={"catch": {0: 0.5, 1: 0.7}})
    board = statistics.build_leaderboard(suite, [agent], [], num_resamples=10)
    files = render.render(board)
    assert "raw scores only" in files["README.md"]
    assert "| catch | 0.6 |" in files["per_game.md"]
    entry = render.leaderboard_json(board)["agents"]["agent"]
    assert entry["median_hns"] is None and entry["games"] == 1


# --- Run directories ------------------------------------------------------------------------------


def test_run_directories_score_the_mean_of_eval_games_and_plot_learning_curves(tmp_path, capsys):
    pong_low, pong_high = HUMAN_RANDOM["pong"]
    runs = tmp_path / "runs"
    make_run(
        runs / "a", "agent_a", 1, {"pong": [pong_low, pong_high], "breakout": [score_at("breakout", 40.0)]}
    )
    make_run(runs / "b", "agent_a", 2, {"pong": [pong_high], "breakout": [score_at("breakout", 60.0)]})
    out_dir = tmp_path / "board"
    code, out, err = run_cli(
        capsys, f"--runs={runs}", "--reference=none", "--format=json", f"--out={out_dir}"
    )
    assert code == 0, err
    entry = json.loads(out)["agents"]["agent_a"]
    # pong: seed 1 scores 50 % (mean of its two games), seed 2 100 %; breakout: 40 %, 60 %.
    assert entry["mean_hns"] == pytest.approx((75.0 + 50.0) / 2.0)
    assert entry["seeds"] == 2 and entry["games"] == 2
    assert entry["frames_per_game"] == pytest.approx(1_000_000)  # 2M trained frames over 2 games
    assert entry["eval_games_per_task"] == 1  # seed 2 played one game of each
    assert "Learning curves" in (out_dir / "report.html").read_text()


def test_eval_games_column_shows_the_games_per_task_of_each_runs_eval_scores_and_dash_for_reference_rows(
    tmp_path, capsys
):
    runs = tmp_path / "runs"
    make_run(runs / "steady", "steady", 1, {"pong": [0.0] * 10, "breakout": [1.0] * 10})
    # One seed played 3 games of pong, another 10: the table shows the fewest and the most.
    make_run(runs / "uneven1", "uneven", 1, {"pong": [0.0] * 3, "breakout": [1.0] * 10})
    make_run(runs / "uneven2", "uneven", 2, {"pong": [0.0] * 10, "breakout": [1.0] * 10})
    scores = write_csv(tmp_path / "file_agent.csv", ["game", "score"], [["pong", 0.0]])
    out_dir = tmp_path / "board"
    code, _, err = run_cli(
        capsys,
        f"--runs={runs}",
        f"--scores={scores}",
        "--reference=impala_paper",
        f"--out={out_dir}",
        "--bootstrap_resamples=50",
    )
    assert code == 0, err
    lines = (out_dir / "README.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| rank"))
    cells = [cell.strip() for cell in header.strip("|").split("|")]
    assert cells[cells.index("seeds") + 1 : cells.index("seeds") + 3] == ["eval games/task", "protocol"]
    column = cells.index("eval games/task")

    def shown(agent: str) -> str:
        row = next(line for line in lines if f"| {agent} |" in line)
        return [cell.strip() for cell in row.strip("|").split("|")][column]

    assert shown("steady") == "10" and shown("uneven") == "3–10"
    assert shown("file_agent") == "—"  # a score file does not say how many games its scores average
    for name in ("impala_deep_experts", "impala_shallow_experts", "impala_deep_multitask"):
        assert shown(name) == "—"  # nor does the paper's Table C.1
    with open(out_dir / "aggregates.csv") as f:
        by_agent = {r["agent"]: r for r in csv.DictReader(f)}
    assert by_agent["steady"]["eval_games_per_task"] == "10"
    assert by_agent["uneven"]["eval_games_per_task"] == "3"  # the fewest
    assert by_agent["file_agent"]["eval_games_per_task"] == ""
    assert by_agent["impala_deep_experts"]["eval_games_per_task"] == ""
    with open(out_dir / "per_game.csv") as f:
        per_game = {(r["agent"], r["game"]): r["eval_games"] for r in csv.DictReader(f)}
    assert per_game[("uneven", "pong")] == "3" and per_game[("uneven", "breakout")] == "10"
    assert per_game[("impala_deep_experts", "pong")] == ""
    note = "Evaluation games per task (per seed; — where the input does not say): "
    per_game_md = (out_dir / "per_game.md").read_text()
    assert note in per_game_md and "uneven 3–10" in per_game_md and "impala_deep_experts —" in per_game_md
    report = (out_dir / "report.html").read_text()
    assert "<th>eval games/task</th>" in report and "uneven 3–10" in report


def test_minatar_runs_are_raw_without_reference_rows_unless_a_normaliser_is_given(tmp_path, capsys):
    run = make_run(tmp_path / "r", "mini", 1, {"breakout": [10.0, 20.0]}, protocol="minatar")
    code, out, err = run_cli(capsys, "--suite=minatar", f"--runs={run}", "--format=json")
    assert code == 0, err
    agents = json.loads(out)["agents"]
    assert list(agents) == ["mini"]  # the Atari paper rows do not apply, though MinAtar reuses game names
    assert agents["mini"]["median_hns"] is None and agents["mini"]["games"] == 1
    rows = [[game, 0.0, 60.0] for game in ("asterix", "breakout", "freeway", "seaquest", "space_invaders")]
    normaliser = write_csv(tmp_path / "minatar_norm.csv", ["game", "low", "high"], rows)
    code, out, _ = run_cli(
        capsys, "--suite=minatar", f"--runs={run}", f"--normaliser={normaliser}", "--format=json"
    )
    assert code == 0 and json.loads(out)["agents"]["mini"]["median_hns"] == pytest.approx(25.0)


def test_a_breakout_run_gets_the_published_small_budget_points_and_other_boards_none(tmp_path, capsys):
    def readme(name: str, *args: str) -> str:
        out_dir = tmp_path / f"board_{name}"
        code, _, err = run_cli(capsys, *args, f"--out={out_dir}", "--bootstrap_resamples=50")
        assert code == 0, err
        return (out_dir / "README.md").read_text()

    breakout = make_run(tmp_path / "breakout", "mine", 1, {"breakout": [10.0], "qbert": [200.0]})
    text = readme("breakout", f"--runs={breakout}", "--reference=impala_paper")
    assert "## Published points for orientation" in text
    assert "| breakout | RLlib IMPALA | 10M | 72 | no sticky actions;" in text
    assert "| breakout | PPO | 40M | 274.8 |" in text
    assert "| qbert | RLlib IMPALA | 10M | 850 |" in text  # the run's other game has points too
    assert "| pong |" not in text.split("## Published points")[1]  # pong was not played
    assert "training-episode returns" in text.lower() and "not comparable rows" in text
    report = (tmp_path / "board_breakout" / "report.html").read_text()
    assert "Published points" in report and "<td>RLlib IMPALA</td>" in report

    seaquest = make_run(tmp_path / "seaquest", "mine", 1, {"seaquest": [200.0]})
    # Not on a board whose games have no published points, nor beside sticky-action (machado) runs, nor on
    # MinAtar's breakout, nor on a board of reference rows only.
    machado = make_run(tmp_path / "machado", "sticky", 1, {"breakout": [10.0]}, protocol="machado")
    minatar = make_run(tmp_path / "minatar", "mini", 1, {"breakout": [10.0]}, protocol="minatar")
    for name, args in (
        ("seaquest", [f"--runs={seaquest}"]),
        ("machado", [f"--runs={machado}"]),
        ("minatar", ["--suite=minatar", f"--runs={minatar}"]),
        ("reference_only", ["--reference=impala_paper,machado_repro"]),
    ):
        assert "Published points" not in readme(name, *args), name


def test_published_points_beyond_the_curves_are_listed_not_drawn():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in reference.atari_published_small_budget() if p.game == "breakout"]
    figure, axis = plt.subplots()
    handles: dict = {}
    plots._draw_published(axis, points, 9_900_000.0, handles)  # curves end near 10M frames
    assert list(handles) == ["RLlib IMPALA (published)"]
    (marker,) = axis.lines
    assert list(marker.get_xdata()) == [10_000_000] and list(marker.get_ydata()) == [72.0]
    texts = [t.get_text() for t in axis.texts]
    assert "RLlib IMPALA 72" in texts
    note = next(t for t in texts if t.startswith("published, beyond the axis"))
    assert "RLlib IMPALA: 260 @ 20M, 385 @ 40M" in note and "A2C: 303 @ 40M" in note
    plt.close(figure)


def test_same_agent_and_seed_in_two_runs_is_a_duplicate(tmp_path, capsys):
    make_run(tmp_path / "a", "agent", 1, {"pong": [1.0]})
    make_run(tmp_path / "b", "agent", 1, {"pong": [2.0]})
    code, _, err = run_cli(capsys, f"--runs={tmp_path / 'a'},{tmp_path / 'b'}", f"--out={tmp_path / 'o'}")
    assert code == 1
    assert "eval_scores.csv, row 2, column 'task': duplicate (agent='agent', game='pong', seed=1)" in err
    assert not (tmp_path / "o").exists()


def test_run_directory_without_a_required_summary_key_is_rejected(tmp_path, capsys):
    run = make_run(tmp_path / "r", "agent", 1, {"pong": [1.0]})
    summary = json.loads((run / "eval_summary.json").read_text())
    del summary["trained_frames"]
    (run / "eval_summary.json").write_text(json.dumps(summary))
    code, _, err = run_cli(capsys, f"--runs={run}", f"--out={tmp_path / 'o'}")
    assert code == 1
    assert err.strip() == f"error: {run / 'eval_summary.json'}, key 'trained_frames': missing " + (
        "(run not evaluated with impala_tf.evaluate?)"
    )


# --- Malformed inputs: one line naming file, row and column; non-zero exit; nothing written -------


MALFORMED = {
    "game outside the suite": (
        ["game", "score"],
        [["pong", 1.0], ["super_mario", 2.0]],
        "row 3, column 'game': 'super_mario' is not a game of suite atari57",
    ),
    "close misspelling": (["game", "score"], [["Pong", 1.0]], "row 2, column 'game': 'Pong' is not a game"),
    "missing score column": (
        ["game", "points"],
        [["pong", 1.0]],
        "row 1, column 'score': missing required column",
    ),
    "duplicate agent game seed": (
        ["agent", "game", "seed", "score"],
        [["a", "pong", 0, 1.0], ["a", "breakout", 0, 1.0], ["a", "pong", 0, 2.0]],
        "row 4, column 'game': duplicate (agent='a', game='pong', seed=0); first given at",
    ),
    "nan score": (["game", "score"], [["pong", "nan"]], "row 2, column 'score': non-finite value 'nan'"),
    "infinite score": (
        ["game", "score"],
        [["pong", 1.0], ["qbert", "-inf"]],
        "row 3, column 'score': non-finite",
    ),
    "text score": (["game", "score"], [["pong", "high"]], "row 2, column 'score': 'high' is not a number"),
    "fractional seed": (
        ["game", "seed", "score"],
        [["pong", 0.5, 1.0]],
        "row 2, column 'seed': '0.5' is not an",
    ),
    "unknown protocol": (
        ["game", "score", "protocol"],
        [["pong", 1.0, "sticky"]],
        "row 2, column 'protocol': unknown protocol 'sticky'; valid: impala, machado",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_score_file_is_one_line_error_and_writes_nothing(tmp_path, capsys, case):
    header, rows, message = MALFORMED[case]
    path = write_csv(tmp_path / "bad.csv", header, rows)
    out_dir = tmp_path / "board"
    code, out, err = run_cli(capsys, f"--scores={path}", f"--out={out_dir}")
    assert code != 0
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path}, ") and message in err
    assert not out_dir.exists() and list(tmp_path.iterdir()) == [path]
    assert out == ""


def test_empty_score_file_is_rejected(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("")
    code, _, err = run_cli(capsys, f"--scores={path}", f"--out={tmp_path / 'o'}")
    assert code == 1 and f"{path}, row 1: empty file" in err


def test_unknown_suite_and_reference_are_one_line_errors(capsys):
    code, _, err = run_cli(capsys, "--suite=atari99", "--format=json")
    assert code == 1 and err.count("\n") == 1 and "atari99" in err and "valid:" in err
    code, _, err = run_cli(capsys, "--reference=impala_paper,rainbow", "--format=json")
    assert code == 1 and err.strip() == (
        "error: --reference: unknown value 'rainbow'; valid: impala_paper, machado_repro, none"
    )


def test_nothing_to_score_is_an_error(capsys):
    code, _, err = run_cli(capsys, "--reference=none", "--format=json")
    assert code == 1 and "nothing to score" in err


def test_normaliser_file_normalises_and_must_cover_the_suite(tmp_path, capsys):
    games = inputs.resolve_suite("atari57").games
    normaliser = write_csv(tmp_path / "norm.csv", ["game", "low", "high"], [[g, 0.0, 10.0] for g in games])
    scores = write_csv(tmp_path / "s.csv", ["game", "score"], [["pong", 5.0]])
    code, out, _ = run_cli(
        capsys, f"--scores={scores}", f"--normaliser={normaliser}", "--reference=none", "--format=json"
    )
    assert code == 0 and json.loads(out)["agents"]["s"]["median_hns"] == pytest.approx(50.0)
    out_dir = tmp_path / "board"
    code, _, _ = run_cli(
        capsys, f"--scores={scores}", f"--normaliser={normaliser}", "--reference=none", f"--out={out_dir}"
    )
    header = next(
        line for line in (out_dir / "per_game.md").read_text().splitlines() if line.startswith("| game")
    )
    assert code == 0 and "low (0 %) | high (100 %)" in header and "random" not in header  # not random/human
    partial = write_csv(tmp_path / "partial.csv", ["game", "low", "high"], [["pong", 0.0, 10.0]])
    code, _, err = run_cli(capsys, f"--scores={scores}", f"--normaliser={partial}", "--format=json")
    assert code == 1 and "no normaliser for alien" in err


# --- Atomic output --------------------------------------------------------------------------------


def test_existing_report_survives_a_failure_while_rendering(tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "board"
    assert run_cli(capsys, "--reference=impala_paper", f"--out={out_dir}")[0] == 0
    before = {p.name: p.read_bytes() for p in out_dir.iterdir()}

    def broken_report(board):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(render, "report_html", broken_report)
    with pytest.raises(RuntimeError, match="plotting failed"):
        leaderboard.run(["leaderboard", "--reference=impala_paper,machado_repro", f"--out={out_dir}"])
    assert {p.name: p.read_bytes() for p in out_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"]  # no staging directory left behind


def test_a_failure_while_writing_files_leaves_the_old_report_and_no_staging_directory(tmp_path):
    out_dir = tmp_path / "board"
    render.write_atomically({"README.md": render.GENERATED_MARKER + "\nold\n"}, out_dir)
    files = {"README.md": render.GENERATED_MARKER + "\nnew\n", "broken.csv": None}  # fails on the 2nd
    with pytest.raises(TypeError):
        render.write_atomically(files, out_dir)
    assert [p.name for p in out_dir.iterdir()] == ["README.md"]
    assert (out_dir / "README.md").read_text().endswith("old\n")
    assert [p.name for p in tmp_path.iterdir()] == ["board"]


def test_a_new_report_replaces_the_old_one_completely(tmp_path, capsys):
    out_dir = tmp_path / "board"
    assert run_cli(capsys, "--reference=impala_paper", f"--out={out_dir}")[0] == 0
    assert run_cli(capsys, "--reference=machado_repro", f"--out={out_dir}")[0] == 0
    readme = (out_dir / "README.md").read_text()
    assert "cleanba_impala" in readme and "impala_deep_experts" not in readme
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"]


def test_refuses_to_replace_a_directory_it_did_not_write(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    code, _, err = run_cli(capsys, f"--out={precious}")
    assert code == 1 and "refusing to replace" in err
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]


# --- Regression guard -----------------------------------------------------------------------------


def test_check_passes_on_identical_inputs(tmp_path, capsys):
    rows = [[game, score_at(game, 120.0)] for game in ("pong", "breakout", "qbert")]
    baseline = write_csv(tmp_path / "base.csv", ["game", "score"], rows)
    code, out, err = run_cli(capsys, "check", f"--baseline={baseline}", f"--candidate={baseline}")
    assert code == 0, err
    assert out.count("\n") == 1 and out.startswith("OK: base within 5 normalised points of base on 3 games")


def test_check_fails_naming_the_game_that_dropped(tmp_path, capsys):
    games = ("pong", "breakout", "qbert")
    baseline = write_csv(tmp_path / "base.csv", ["game", "score"], [[g, score_at(g, 120.0)] for g in games])
    dropped = {"pong": 120.0, "breakout": 60.0, "qbert": 118.0}  # qbert drops within tolerance
    candidate = write_csv(
        tmp_path / "cand.csv", ["game", "score"], [[g, score_at(g, h)] for g, h in dropped.items()]
    )
    code, out, err = run_cli(capsys, "check", f"--baseline={baseline}", f"--candidate={candidate}")
    assert code == 1
    assert "REGRESSION game breakout" in out and "qbert" not in out and "game pong" not in out
    assert "aggregate capped_mean" in out  # capped at 100: 100, 60, 100 vs 100, 100, 100
    assert "FAIL" in err and "game breakout" in err


def test_check_is_bootstrap_aware_with_seeds(tmp_path, capsys):
    games = ("pong", "breakout")
    baseline = write_csv(tmp_path / "base.csv", ["game", "score"], [[g, score_at(g, 100.0)] for g in games])

    def candidate(name: str, spread: float) -> Path:
        rows = [
            [g, seed, score_at(g, 90.0 + spread * offset)]
            for g in games
            for seed, offset in enumerate((-1, 0, 1))
        ]
        return write_csv(tmp_path / f"{name}.csv", ["game", "seed", "score"], rows)

    # Both candidates average 90 % (a 10-point drop, tolerance 5); only the noisy one's interval reaches 95.
    code, out, _ = run_cli(
        capsys, "check", f"--baseline={baseline}", f"--candidate={candidate('noisy', 30.0)}"
    )
    assert code == 0, out
    code, out, _ = run_cli(
        capsys, "check", f"--baseline={baseline}", f"--candidate={candidate('steady', 1.0)}"
    )
    assert code == 1 and "game pong" in out and "game breakout" in out and "aggregate median" in out


def test_check_flags_games_missing_from_the_candidate(tmp_path, capsys):
    baseline = write_csv(tmp_path / "base.csv", ["game", "score"], [["pong", 0.0], ["qbert", 100.0]])
    candidate = write_csv(tmp_path / "cand.csv", ["game", "score"], [["pong", 0.0]])
    code, out, _ = run_cli(capsys, "check", f"--baseline={baseline}", f"--candidate={candidate}")
    assert code == 1 and "game qbert: missing from the candidate" in out


def test_check_needs_one_agent_per_side_and_a_known_command(tmp_path, capsys):
    rows = [["a", "pong", 1.0], ["b", "pong", 2.0]]
    two = write_csv(tmp_path / "two.csv", ["agent", "game", "score"], rows)
    code, _, err = run_cli(capsys, "check", f"--baseline={two}", f"--candidate={two}")
    assert code == 1 and "expected the scores of one agent, found 2 (a, b)" in err
    code, _, err = run_cli(capsys, "compare")
    assert code == 1 and "unknown command 'compare'; valid: check" in err


# --- The committed leaderboard and the real binary ------------------------------------------------


def test_committed_atari57_leaderboard_matches_the_code(tmp_path):
    committed = REPO / "leaderboards" / "atari57"
    generated = tmp_path / "atari57"  # the command `make leaderboards` runs
    assert (
        leaderboard.run(
            ["leaderboard", "--suite=atari57", "--reference=impala_paper,machado_repro", f"--out={generated}"]
        )
        == 0
    )
    names = sorted(p.name for p in generated.iterdir() if p.suffix in (".md", ".csv"))
    assert names == ["README.md", "aggregates.csv", "per_game.csv", "per_game.md"]
    for name in names:
        assert (committed / name).read_text() == (generated / name).read_text(), (
            f"leaderboards/atari57/{name} is stale: run `make leaderboards`"
        )
    assert (committed / "report.html").exists()


@pytest.mark.parametrize("suite", ["atari5", "atari_tuning6", "minatar"])
def test_committed_leaderboard_matches_its_committed_runs(tmp_path, monkeypatch, suite, makefile_command):
    monkeypatch.chdir(REPO)  # the Makefile's paths are relative to the repository
    args = makefile_command("impala_tf.leaderboard", f"--suite={suite}", out=tmp_path)
    assert leaderboard.run(["leaderboard", *args]) == 0
    for name in ("README.md", "aggregates.csv", "per_game.csv", "per_game.md"):
        assert (REPO / "leaderboards" / suite / name).read_text() == (tmp_path / name).read_text(), (
            f"leaderboards/{suite}/{name} is stale: run `make leaderboards`"
        )


def test_binary_prints_json_and_reports_bad_input_without_traceback(tmp_path):
    scores = write_csv(tmp_path / "agent.csv", ["game", "score"], [["pong", 21.0], ["breakout", 400.0]])
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "impala_tf.leaderboard", f"--scores={scores}", "--format=json"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["agents"]["agent"]["games"] == 2
    bad = write_csv(tmp_path / "bad.csv", ["game", "score"], [["pong", "inf"]])
    command[3] = f"--scores={bad}"
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr == f"error: {bad}, row 2, column 'score': non-finite value 'inf'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.csv", "bad.csv"]
