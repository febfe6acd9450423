"""Transfer analyses: multi-task vs experts, the transfer-matrix arithmetic, its driver and weight adaptation."""

import csv
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments import transfer_matrix
from impala_tf import reference, transfer
from impala_tf.report import inputs
from impala_tf.report import transfer as transfer_report

REPO = Path(__file__).resolve().parents[1]
MINATAR = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def make_run(path: Path, agent: str, seed: int, scores: dict[str, float], frames: int = 1000) -> Path:
    """A minimal evaluated MinAtar run directory, as the trainer and the evaluator write it."""
    path.mkdir(parents=True, exist_ok=True)
    summary = {
        "agent": agent,
        "suite": "minatar",
        "protocol": "minatar",
        "seed": seed,
        "trained_frames": frames,
    }
    summary["mean_score"] = scores
    (path / "eval_summary.json").write_text(json.dumps(summary))
    (path / "config.json").write_text(json.dumps({"suite": "minatar", "games": sorted(scores)}))
    write_csv(
        path / "eval_scores.csv",
        ["task", "episode", "score", "frames"],
        [[g, 1, s, 100] for g, s in scores.items()],
    )
    return path


def normaliser_file(tmp_path: Path) -> str:
    rows = [[game, 0.0, 10.0] for game in MINATAR]
    return str(write_csv(tmp_path / "normaliser.csv", ["game", "low", "high"], rows))


# --- Multi-task vs experts ------------------------------------------------------------------------


def test_paper_deep_multitask_is_behind_its_experts_on_48_of_57_games():
    suite = inputs.resolve_suite("atari57")
    comparison = transfer_report.compare_with_experts(
        suite,
        transfer_report.load_side(suite, ["impala_deep_multitask"], "multitask"),
        transfer_report.load_side(suite, ["impala_deep_experts"], "experts"),
    )
    # Independently from the data files: HNS of both columns of Table C.1 and the sign of each difference.
    agents = {a.agent: a.scores for a in reference.reference_agents("impala_paper")}
    norm = reference.atari57_human_random()
    diff = {
        g: (agents["impala_deep_multitask"][g] - agents["impala_deep_experts"][g]) / (n.high - n.low) * 100
        for g, n in norm.items()
    }
    assert len(comparison.games) == 57
    assert comparison.counts == transfer_report.TransferCounts(
        positive=sum(d > 0 for d in diff.values()), negative=sum(d < 0 for d in diff.values()), neutral=1
    )
    assert comparison.counts == (8, 48, 1)  # montezuma_revenge: 0 for both
    assert {g for g, d in zip(comparison.games, comparison.difference, strict=True) if d > 0} == {
        "krull",
        "kangaroo",
        "enduro",
        "freeway",
        "frostbite",
        "skiing",
        "venture",
        "pitfall",
    }
    # The medians of the paper's Table 4: 59.7 % (multi-task) and 191.8 % (experts).
    assert np.median(comparison.multitask_normalised) == pytest.approx(59.7, abs=0.05)
    assert np.median(comparison.experts_normalised) == pytest.approx(191.8, abs=0.05)


def test_experts_merge_single_game_runs_and_differences_are_normalised(tmp_path):
    suite = inputs.resolve_suite("minatar", normaliser_file(tmp_path))
    multitask = make_run(tmp_path / "mt", "mt", 1, {g: 5.0 for g in MINATAR})
    experts = [
        make_run(tmp_path / "experts" / g, f"expert_{g}", 1, {g: float(i * 2)}) for i, g in enumerate(MINATAR)
    ]
    comparison = transfer_report.compare_with_experts(
        suite,
        transfer_report.load_side(suite, [str(multitask)], "multitask"),
        transfer_report.load_side(suite, [str(tmp_path / "experts")], "experts"),
    )
    # experts: 0, 2, 4, 6, 8 -> 0 %, 20 %, ...; multi-task 50 % everywhere.
    np.testing.assert_allclose(comparison.difference, [50.0, 30.0, 10.0, -10.0, -30.0])
    assert comparison.counts == (3, 2, 0)
    assert experts[0].exists()


def test_per_game_intervals_over_seeds_need_two_seeds_on_both_sides(tmp_path):
    suite = inputs.resolve_suite("minatar", normaliser_file(tmp_path))
    for seed, offset in ((1, 0.0), (2, 1.0)):
        make_run(
            tmp_path / "mt" / f"s{seed}", "mt", seed, {"breakout": 8.0 + offset, "freeway": 5.0 + offset}
        )
        make_run(tmp_path / "ex" / f"breakout_s{seed}", "ex", seed, {"breakout": 2.0 + offset})
    make_run(tmp_path / "ex" / "freeway_s1", "ex", 1, {"freeway": 4.0})  # one seed: no interval for freeway
    comparison = transfer_report.compare_with_experts(
        suite,
        transfer_report.load_side(suite, [str(tmp_path / "mt")], "multitask"),
        transfer_report.load_side(suite, [str(tmp_path / "ex")], "experts"),
    )
    assert comparison.games == ["breakout", "freeway"]
    np.testing.assert_array_equal(comparison.experts_seeds, [2, 1])
    # breakout: multi-task 80 % / 90 %, experts 20 % / 30 %: every resampled difference is 50-70 points.
    assert 50.0 <= comparison.difference_low[0] <= 60.0 <= comparison.difference_high[0] <= 70.0
    assert np.isnan(comparison.difference_low[1]) and np.isnan(comparison.difference_high[1])
    assert comparison.clear_counts == (1, 0, 0)
    text = transfer_report.experts_markdown(comparison)
    assert "Where both sides have two or more seeds (1 of 2 games)" in text
    assert "| 2 / 2 |" in text and "| — / — |" not in text and "[—, —] | 1 / 2 |" in text


def test_two_sources_giving_the_same_game_and_seed_are_rejected(tmp_path):
    suite = inputs.resolve_suite("minatar")
    a = make_run(tmp_path / "a", "a", 1, {"breakout": 1.0})
    b = make_run(tmp_path / "b", "b", 1, {"breakout": 2.0})
    with pytest.raises(transfer_report.TransferError, match=r"\(breakout, seed 1\) a second time"):
        transfer_report.load_side(suite, [str(a), str(b)], "experts")


def test_experts_cli_writes_report_and_names_bad_sources(tmp_path, capsys):
    out = tmp_path / "out"
    code = transfer.run(
        [
            "transfer",
            "experts",
            "--multitask=impala_deep_multitask",
            "--experts=impala_deep_experts",
            f"--out={out}",
        ]
    )
    assert code == 0
    assert "8 positive, 48 negative" in capsys.readouterr().out
    assert set(os.listdir(out)) == set(transfer_report.EXPERTS_FILES)
    text = (out / "transfer_vs_experts.md").read_text()
    assert text.startswith(transfer_report.GENERATED_MARKER) and "| krull |" in text
    assert (out / "transfer_vs_experts.png").read_bytes()[:4] == b"\x89PNG"

    code = transfer.run(["transfer", "experts", "--multitask=nope", "--experts=impala_deep_experts"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "impala_deep_multitask" in err  # names the valid published agents
    assert transfer.run(["transfer", "explain"]) == 1
    assert "valid: experts" in capsys.readouterr().err
    assert transfer.run(["transfer", "matrix", "--notrain"]) == 1  # moved: named in one line
    assert "python -m experiments.transfer_matrix" in capsys.readouterr().err


def test_committed_atari57_transfer_report_is_up_to_date(tmp_path):
    code = transfer.run(
        [
            "transfer",
            "experts",
            "--multitask=impala_deep_multitask",
            "--experts=impala_deep_experts",
            f"--out={tmp_path}",
        ]
    )
    assert code == 0
    for name in ("transfer_vs_experts.md", "transfer_vs_experts.csv"):
        committed = REPO / "leaderboards" / "atari57" / name
        assert committed.read_text() == (tmp_path / name).read_text(), (
            f"{committed} is stale: make leaderboards"
        )


# --- Matrix arithmetic ----------------------------------------------------------------------------


def test_transfer_counts_respect_the_tolerance():
    assert transfer_report.transfer_counts(np.array([3.0, -0.5, 0.2, -2.0, 0.0]), tolerance=0.5) == (1, 1, 3)
    with pytest.raises(ValueError, match="finite"):
        transfer_report.transfer_counts(np.array([np.nan]))


def test_relative_gain_is_ratio_minus_one_and_undefined_on_a_zero_baseline():
    np.testing.assert_allclose(
        transfer_report.relative_gain([6.0, 2.0, 4.0], [4.0, 4.0, 4.0]), [0.5, -0.5, 0.0]
    )
    assert np.isnan(transfer_report.relative_gain(1.0, 0.0))
    assert np.isnan(transfer_report.relative_gain(1.0, -2.0))


def test_auc_of_a_constant_curve_is_the_constant_and_of_a_ramp_is_half_its_end():
    frames = np.arange(1, 1001) * 100.0
    assert transfer_report.curve_auc(frames, np.full(1000, 3.0), budget=100_000) == pytest.approx(3.0)
    ramp = frames / 100_000 * 10.0  # return rises linearly from 0 to 10 over the budget
    assert transfer_report.curve_auc(frames, ramp, budget=100_000, window=1) == pytest.approx(5.0, abs=0.01)
    # Held constant after the last episode: learning fast and plateauing beats learning the same amount late.
    early = transfer_report.curve_auc(frames[:100], np.full(100, 10.0), budget=100_000)
    assert early == pytest.approx(10.0)
    with pytest.raises(ValueError, match="at least one episode"):
        transfer_report.curve_auc(np.array([]), np.array([]), budget=10)


def synthetic_run(final: float, start: float, n: int = 400, budget: int = 40_000, seed: int = 0):
    """Episode returns rising linearly from `start` to `final` (plus noise) over the budget."""
    rng = np.random.default_rng(seed)
    frames = np.linspace(budget / n, budget, n)
    returns = start + (final - start) * frames / budget + rng.normal(0.0, 0.05, n)
    return frames, returns, final


def test_matrix_gains_on_synthetic_learning_curves():
    budget = 40_000
    scratch = {"a": [synthetic_run(4.0, 0.0, seed=s) for s in (1, 2)], "b": [synthetic_run(2.0, 0.0, seed=3)]}
    finetuned = {
        ("a", "b"): [synthetic_run(3.0, 2.0, seed=4)],  # starts where scratch b ends: positive transfer
        ("b", "a"): [synthetic_run(2.0, 0.0, seed=5)],  # ends at half of scratch a: negative transfer
    }
    m = transfer_report.matrix_from_curves(["a", "b"], budget, scratch, finetuned, seeds=[1], window=1)
    assert np.isnan(m.auc_gain[0, 0]) and np.isnan(m.final_gain[1, 1])  # no diagonal cells
    assert m.final_gain[0, 1] == pytest.approx(0.5)  # 3 / 2 - 1
    assert m.final_gain[1, 0] == pytest.approx(-0.5)  # 2 / 4 - 1
    # AUC: a ramp from s to f averages (s + f) / 2: b from scratch 1.0, a -> b 2.5; a from scratch 2.0, b -> a 1.0.
    assert m.auc_gain[0, 1] == pytest.approx(1.5, abs=0.05)
    assert m.auc_gain[1, 0] == pytest.approx(-0.5, abs=0.05)
    csv_rows = list(csv.DictReader(transfer_report.matrix_csv(m).splitlines()))
    assert [(r["source"], r["target"]) for r in csv_rows] == [("a", "b"), ("b", "a")]
    assert float(csv_rows[0]["final_gain"]) == pytest.approx(0.5)
    text = transfer_report.matrix_markdown(m)
    assert "raises the final score on 1 and lowers it on 1" in text and "| a | — | +50 % |" in text


# --- Matrix driver --------------------------------------------------------------------------------


class FakeSuiteBinary:
    """Stands in for `python -m suites.minatar` / `impala_tf.evaluate`: writes what they would, fast.

    A fine-tuned run learns faster when its --init_from source is `helpful`."""

    def __init__(self, helpful: str):
        self.helpful = helpful
        self.commands: list[list[str]] = []

    def __call__(self, command: list[str], log_path: Path) -> None:
        self.commands.append(command)
        args = dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)
        logdir = Path(args["logdir"])
        if "impala_tf.evaluate" in command:
            config = json.loads((logdir / "config.json").read_text())
            game = config["games"][0]
            frames = json.loads((logdir / "done.json").read_text())["frames"]
            final = config["final"]
            summary = {
                "agent": logdir.name,
                "suite": "minatar",
                "protocol": "minatar",
                "seed": config["seed"],
            }
            summary.update(trained_frames=frames, mean_score={game: final})
            (logdir / "eval_summary.json").write_text(json.dumps(summary))
            return
        game, frames = args["games"], int(args["total_frames"])
        source = Path(args["init_from"]).parts[-2] if "init_from" in args else None
        start, final = (3.0, 6.0) if source == self.helpful else (0.0, 4.0)
        logdir.mkdir(parents=True, exist_ok=True)
        config = {
            "suite": "minatar",
            "games": [game],
            "observation_shape": [10, 10, 4],
            "seed": int(args["seed"]),
        }
        (logdir / "config.json").write_text(json.dumps({**config, "final": final}))
        run_frames, returns, _ = synthetic_run(final, start, budget=frames)
        rows = [[game, int(f), r, 10, 0.0] for f, r in zip(run_frames, returns, strict=True)]
        write_csv(
            logdir / "episodes.csv", ["task", "frames", "episode_return", "episode_frames", "wall_time"], rows
        )
        (logdir / "done.json").write_text(json.dumps({"frames": frames}))


def test_matrix_driver_trains_scratch_then_finetunes_from_it_and_skips_finished_runs(tmp_path):
    fake = FakeSuiteBinary(helpful="asterix")
    fv = transfer_matrix.flags.FlagValues()
    transfer_matrix.define_flags(fv)
    fv(
        [
            "transfer_matrix",
            "--suite=minatar",
            "--games=asterix,breakout",
            "--frames=20000",
            "--seeds=1,2",
            f"--workdir={tmp_path / 'runs'}",
            f"--out={tmp_path / 'out'}",
            "--train_args=--learning_rate=0.002",
        ]
    )
    assert transfer_matrix._main(["transfer_matrix"], fv, runner=fake) == 0

    trains = [c for c in fake.commands if "impala_tf.evaluate" not in c]
    assert len(trains) == 2 * 2 + 2 * 2  # (2 scratch + 2 fine-tuned) x 2 seeds
    assert all(
        c[:3] == [sys.executable, "-m", "suites.minatar"] and "--learning_rate=0.002" in c for c in trains
    )
    assert all("--init_from" not in " ".join(c) for c in trains[:4])  # scratch runs first
    init = [a for c in trains[4:] for a in c if a.startswith("--init_from=")]
    assert init[0] == f"--init_from={tmp_path / 'runs' / 'scratch' / 'asterix' / 'seed1'}"
    assert len(fake.commands) == 16  # each training followed by its evaluation

    rows = {
        (r["source"], r["target"]): r for r in csv.DictReader(open(tmp_path / "out" / "transfer_matrix.csv"))
    }
    assert float(rows[("asterix", "breakout")]["final_gain"]) == pytest.approx(0.5)  # 6 / 4 - 1
    assert float(rows[("breakout", "asterix")]["final_gain"]) == pytest.approx(0.0)
    assert float(rows[("asterix", "breakout")]["auc_gain"]) > 1.0
    assert rows[("asterix", "breakout")]["seeds"] == "2"
    assert (tmp_path / "out" / "transfer_matrix.png").read_bytes()[:4] == b"\x89PNG"

    fake.commands.clear()
    assert transfer_matrix._main(["transfer_matrix"], fv, runner=fake) == 0
    assert fake.commands == []  # everything was evaluated already


def test_matrix_rejects_bad_input_in_one_line(tmp_path, capsys):
    base = ["transfer_matrix", "--suite=minatar", f"--workdir={tmp_path}"]
    assert transfer_matrix.run([*base, "--games=breakout,pong"]) == 1
    assert "pong not in suite minatar; valid: asterix" in capsys.readouterr().err
    assert transfer_matrix.run([*base, "--games=breakout"]) == 1
    assert "at least 2 games" in capsys.readouterr().err
    assert transfer_matrix.run([*base, "--games=breakout,asterix", "--seeds=x"]) == 1
    assert "--seeds must be integers" in capsys.readouterr().err
    assert transfer_matrix.run([*base, "--games=breakout,asterix", "--notrain"]) == 1
    err = capsys.readouterr().err
    assert "episodes.csv: missing" in err and len(err.strip().splitlines()) == 1


# --- Weight adaptation across observation shapes --------------------------------------------------


def test_adapt_weights_slices_or_zero_pads_input_channels_only():
    kernel = np.arange(2 * 2 * 4 * 3, dtype=np.float32).reshape(2, 2, 4, 3)
    padded = transfer_matrix.adapt_weights(kernel, (2, 2, 10, 3))
    np.testing.assert_array_equal(padded[:, :, :4], kernel)
    assert not padded[:, :, 4:].any()
    np.testing.assert_array_equal(transfer_matrix.adapt_weights(kernel, (2, 2, 3, 3)), kernel[:, :, :3])
    np.testing.assert_array_equal(transfer_matrix.adapt_weights(np.ones(5), (5,)), np.ones(5))
    with pytest.raises(transfer_report.TransferError, match="cannot adapt"):
        transfer_matrix.adapt_weights(kernel, (2, 2, 4, 5))


def test_adapted_breakout_weights_initialise_a_seaquest_network(tmp_path):
    import tensorflow as tf

    from impala_tf import agent, checkpoints, rundir
    from impala_tf import learner as learner_lib
    from impala_tf.losses import LossConfig

    source = tmp_path / "breakout_run"
    source.mkdir()
    flags_ = {"suite": "minatar", "network": "shallow", "use_lstm": False, "reward_clipping": "abs_one"}
    flags_.update(unroll_length=20, xla="off", seed=1)
    config = {"suite": "minatar", "games": ["breakout"], "protocol": "minatar", "flags": flags_}
    (source / "config.json").write_text(json.dumps({**config, "observation_shape": [10, 10, 4]}))
    _, spec = rundir.load_run_spec(source)
    env = agent.make_env(spec, [0], 0)
    network = agent.make_network(spec, env)
    holder = learner_lib.Learner(
        network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1, xla=False
    )
    tf.train.CheckpointManager(tf.train.Checkpoint(learner=holder), str(source / "checkpoints"), 1).save()

    adapted = transfer_matrix.adapt_checkpoint(source, "seaquest", tmp_path / "adapted")
    assert json.loads((adapted / "config.json").read_text())["observation_shape"] == [10, 10, 10]
    target_spec = rundir.load_run_spec(adapted)[1]
    target_env = agent.make_env(target_spec, [0], 0)
    assert target_env.observation_spec().shape == (10, 10, 10)
    target = agent.make_network(target_spec, target_env)
    checkpoints.init_network_from(adapted, target)  # what the trainer's --init_from does
    source_vars, target_vars = network.variables, target.variables
    first = source_vars[0].numpy()
    np.testing.assert_array_equal(target_vars[0].numpy()[:, :, :4], first)
    assert not target_vars[0].numpy()[:, :, 4:].any()
    for s, t in zip(source_vars[1:], target_vars[1:], strict=True):
        np.testing.assert_array_equal(s.numpy(), t.numpy())


# --- End to end (slow) ----------------------------------------------------------------------------


@pytest.mark.slow
def test_matrix_end_to_end_on_minatar_with_real_runs(tmp_path):
    """Real subprocesses: scratch runs of two games with different observation channels, adaptation, then
    fine-tuning through --init_from, evaluation and the report (tiny budgets: a smoke test, not a result)."""
    out = tmp_path / "out"
    code = transfer_matrix.run(
        [
            "transfer_matrix",
            "--suite=minatar",
            "--games=breakout,space_invaders",
            "--frames=6400",
            f"--workdir={tmp_path / 'runs'}",
            f"--out={out}",
            "--eval_episodes=2",
            "--train_args=--num_actors=1",
        ]
    )
    assert code == 0
    assert (tmp_path / "runs" / "adapted" / "breakout_for_space_invaders" / "seed1" / "checkpoints").is_dir()
    rows = list(csv.DictReader(open(out / "transfer_matrix.csv")))
    assert {(r["source"], r["target"]) for r in rows} == {
        ("breakout", "space_invaders"),
        ("space_invaders", "breakout"),
    }
    log = (tmp_path / "runs" / "logs" / "finetune_breakout_to_space_invaders_seed1.train.log").read_text()
    assert "initialised the network from" in log


# --- Committed MinAtar reports (leaderboards/minatar, regenerated by `make leaderboards`) ----------

INPUTS = REPO / "leaderboards" / "inputs" / "minatar"
MATRIX_ARGS = [
    "--suite=minatar",
    "--games=breakout,space_invaders,asterix",
    "--frames=500000",
    "--seeds=1,2",
    "--train_args=--learning_rate=0.002",
    "--eval_episodes=20",
    "--notrain",
]


def test_committed_minatar_transfer_matrix_is_up_to_date(tmp_path):
    args = ["transfer_matrix", *MATRIX_ARGS, f"--workdir={INPUTS / 'transfer'}", f"--out={tmp_path}"]
    assert transfer_matrix.run(args) == 0
    for name in ("transfer_matrix.md", "transfer_matrix.csv"):
        committed = REPO / "leaderboards" / "minatar" / name
        assert committed.read_text() == (tmp_path / name).read_text(), f"{name}: run `make leaderboards`"


def test_committed_popart_report_is_up_to_date(tmp_path, monkeypatch):
    from experiments import minatar_popart

    monkeypatch.chdir(REPO)  # the report names its normaliser by the path given, as `make leaderboards` does
    inputs = Path("leaderboards/inputs/minatar")
    configs = list(minatar_popart.CONFIGS)
    text = minatar_popart.report(inputs / "popart", configs, str(inputs / "normaliser.csv"), tmp_path, 10_000)
    assert (REPO / "leaderboards" / "minatar" / "popart.md").read_text() == text, "run `make leaderboards`"


def test_thinned_episodes_keep_every_kth_game_of_each_task():
    from experiments.collect_inputs import thin_episodes

    rows = [f"{task},{i},{i},1,0" for i in range(6) for task in ("a", "b")]
    text = "task,frames,episode_return,episode_frames,wall_time\n" + "\n".join(rows) + "\n"
    kept = thin_episodes(text, 3).splitlines()
    assert kept[1:] == ["a,0,0,1,0", "b,0,0,1,0", "a,3,3,1,0", "b,3,3,1,0"]


def test_experts_comparisons_with_different_names_share_an_output_dir(tmp_path, capsys):
    out = tmp_path / "board"
    common = ["transfer", "experts", "--experts=impala_deep_experts", f"--out={out}"]
    assert transfer.run([*common, "--multitask=impala_deep_multitask"]) == 0
    assert (
        transfer.run([*common, "--multitask=impala_shallow_experts", "--name=shallow_vs_deep_experts"]) == 0
    )
    assert set(os.listdir(out)) == set(transfer_report.EXPERTS_FILES) | set(
        transfer_report.experts_files("shallow_vs_deep_experts")
    )
    text = (out / "shallow_vs_deep_experts.md").read_text()
    assert "plot: shallow_vs_deep_experts.png" in text and "IMPALA shallow, experts (paper)" in text
    assert transfer.run([*common, "--multitask=impala_deep_multitask", "--name=../escape"]) == 1
    assert "--name must be a file stem" in capsys.readouterr().err


def test_committed_minatar_transfer_vs_experts_is_up_to_date(tmp_path, monkeypatch, makefile_command):
    monkeypatch.chdir(REPO)  # the report names its normaliser by the path given, as `make leaderboards` does
    args = makefile_command("impala_tf.transfer", "experts", "--suite=minatar", out=tmp_path)
    assert transfer.run(["transfer", *args]) == 0
    for name in ("transfer_vs_experts.md", "transfer_vs_experts.csv"):
        committed = REPO / "leaderboards" / "minatar" / name
        assert committed.read_text() == (tmp_path / name).read_text(), f"{name}: run `make leaderboards`"
