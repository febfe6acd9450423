"""Population-based training on Ray Tune: a Catch population of 4 on 2 cores, killed once and resumed.

One run of the binary serves every check: the driver is killed (its whole process group, Ray included) once
every member has reported its first stretch, the same command resumes it, and the finished population is then
read back. Killed there, every member resumes at the first boundary with two more to go: the case in which a
resumed synchronous scheduler without its state deadlocked (impala_tf.pbt_scheduler).
"""

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

pytest.importorskip("ray.tune")

from impala_tf import pbt  # noqa: E402

# Four members share two cores with their Ray services: minutes, not seconds.
pytestmark = [pytest.mark.ray, pytest.mark.timeout(1200)]

TOTAL, INTERVAL = 30_000, 10_000
COMMAND = [
    sys.executable,
    "-m",
    "impala_tf.pbt",
    "--suite=catch",
    "--population=4",
    f"--total_frames={TOTAL}",
    f"--pbt_interval_frames={INTERVAL}",
    "--pbt_burn_in_frames=0",
    "--pbt_init=flags",  # every member starts at Catch's learning rate, so that every member can learn
    "--member_cpus=0.5",
    "--num_actors=1",
    "--envs_per_actor=8",
    "--batch_size=8",
    "--unroll_length=5",
    "--pbt_eval_episodes=50",
    "--progress_every_secs=60",
]


def _histories(logdir: Path) -> dict[str, list[dict]]:
    out = {}
    for path in sorted((logdir / "members").glob("*/pbt_history.csv")):
        with open(path, newline="") as f:
            out[path.parent.name] = list(csv.DictReader(f))
    return out


def _ray_sessions() -> set[str]:
    root = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"
    return {path.name for path in root.glob("session_2*")}


def _kill_ray_sessions(sessions: set[str]) -> None:
    """Kills the Ray instances of `sessions` only: each service names its session on its command line and the
    workers are the raylet's children. Another population on the machine (an experiment) is left alone."""
    for process in psutil.process_iter(["cmdline"]):
        if any(session in " ".join(process.info["cmdline"] or []) for session in sessions):
            with contextlib.suppress(psutil.Error):
                for child in process.children(recursive=True):
                    child.kill()
                process.kill()


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("pbt") / "population"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "RAY_DEDUP_LOGS": "0"}
    command = [*COMMAND, f"--logdir={logdir}"]
    preexisting = _ray_sessions()
    first = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    deadline = time.time() + 600
    while time.time() < deadline and first.poll() is None:
        histories = _histories(logdir).values()
        if len(histories) == 4 and all(len(rows) >= 1 for rows in histories):
            time.sleep(5)  # for the last report to reach Tune
            break
        time.sleep(1)
    assert first.poll() is None, "the population finished before it could be killed"
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray processes it started
    first.wait()
    # Some of Ray's agents leave the process group: kill those of this run's Ray too (what `ray stop` would do).
    _kill_ray_sessions(_ray_sessions() - preexisting)
    reported_before_kill = {m: len(rows) for m, rows in _histories(logdir).items()}
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    return logdir, second.stdout, reported_before_kill


def _trained_frames(rows: list[dict], member_id: str) -> list[int]:
    """Frames of the member's own rows that end a trained stretch: not a re-report of the weights the row before
    recorded (a member Tune restarted, after forgetting an exploit, with its values from before it)."""
    return [
        int(row["frames"])
        for before, row in zip([None, *rows[:-1]], rows, strict=True)
        if row["weights_from"] == member_id
        and not (
            before and (before["frames"], before["weights_digest"]) == (row["frames"], row["weights_digest"])
        )
    ]


def test_the_rerun_resumes_every_member_instead_of_starting_over(population):
    logdir, out, reported_before_kill = population
    assert "resuming the population" in out
    for member_id, rows in _histories(logdir).items():
        trained = _trained_frames(rows, member_id)
        assert trained == sorted(set(trained)), (member_id, rows)  # no stretch trained twice
        assert trained[-1] == TOTAL
    # The members that had reported before the kill kept those reports (they were not trained over again).
    for member_id, count in reported_before_kill.items():
        assert len([r for r in _histories(logdir)[member_id] if r["weights_from"] == member_id]) >= count


def _perturbed(row: dict, donor: dict) -> bool:
    """Whether each of the row's hyper-parameters is the donor's times one of the perturbation factors."""
    ratios = [float(row[name]) / float(donor[name]) for name in pbt.HYPERPARAMETERS]
    return all(min(abs(r - f) for f in pbt.PERTURBATION_FACTORS) < 1e-6 for r in ratios)


def test_an_exploiting_member_continues_from_the_donors_weights_with_perturbed_hyperparameters(population):
    logdir, _, _ = population
    histories = _histories(logdir)
    exploits = [r for m, rows in histories.items() for r in rows if r["weights_from"] != m]
    assert exploits, "no member exploited"
    for row in exploits:
        # The donor's states at those frames with bit-equal weights (more than one when a resumed donor re-reported
        # them): the copy's hyper-parameters are one of them perturbed.
        donor_states = [
            r
            for r in histories[row["weights_from"]]
            if (r["frames"], r["weights_digest"]) == (row["frames"], row["weights_digest"])
        ]
        assert donor_states, row  # bit-equal weights right after the copy
        assert any(_perturbed(row, donor) for donor in donor_states), (row, donor_states)


class _Killed(Exception):
    """Stands for the driver's SIGKILL inside an in-process member."""


class _FakeTune:
    """What Tune hands a member (its trial id, a checkpoint) and keeps of its reports (a copy of each checkpoint);
    `kill_after` reports, the member is stopped as a killed driver would stop it."""

    def __init__(
        self, trial_id: str, checkpoint=None, kill_after: int | None = None, keep: Path | None = None
    ):
        self.trial_id, self.checkpoint, self.kill_after, self.keep = trial_id, checkpoint, kill_after, keep
        self.reports: list[dict] = []

    def install(self, monkeypatch) -> None:
        from ray import tune

        monkeypatch.setattr(tune, "get_context", lambda: self)
        monkeypatch.setattr(tune, "get_checkpoint", lambda: self.checkpoint)
        monkeypatch.setattr(tune, "report", self.report)

    def get_trial_id(self) -> str:
        return self.trial_id

    def report(self, metrics, checkpoint):
        import shutil

        from ray import tune

        kept = self.keep / str(len(list(self.keep.glob("*"))) if self.keep.exists() else 0)
        shutil.copytree(checkpoint.path, kept)
        self.reports.append({**metrics, "checkpoint": tune.Checkpoint.from_directory(kept)})
        if self.kill_after is not None and len(self.reports) >= self.kill_after:
            raise _Killed


def test_a_member_restarted_by_a_tune_that_forgot_it_records_only_what_changed(tmp_path, monkeypatch):
    # The population test's kill at its worst moments, made deterministic. Member "m" reports its first stretch
    # and the driver dies before Tune saves it; Tune restarts "m" as a new member (no checkpoint) on its run
    # directory: nothing changed, nothing is recorded again. Then "m" takes donor "d"'s weights with perturbed
    # values in an exploit, and Tune forgets that too: it restarts "m" with its old values on the donor's weights,
    # and that change is recorded (the population test's CI failure was this repeat, taken for training twice).
    from absl.testing import flagsaver

    before = {"learning_rate": 0.01, "entropy_cost": 0.01, "rmsprop_epsilon": 0.01, "max_grad_norm": 40.0}
    settings = {
        "suite": "catch",
        "games": ["catch"],
        "reference": None,
        "normaliser": None,
        "logdir": str(tmp_path / "population"),
        "total_frames": 2_000,
        "interval_frames": 1_000,
        "fitness_episodes": 100,
        "seed": 1,
        "base_flags": {
            "total_frames": 2_000,
            "num_actors": 1,
            "envs_per_actor": 8,
            "batch_size": 8,
            "unroll_length": 5,
            "progress_every_secs": 60,
        },
        **before,
    }
    keep = tmp_path / "tune"

    def run_member(trial_id, checkpoint=None, kill_after=None, hyper=before):
        fake = _FakeTune(trial_id, checkpoint, kill_after, keep)
        fake.install(monkeypatch)
        with flagsaver.flagsaver(), contextlib.suppress(_Killed):
            pbt.member({**settings, **hyper})
        return fake

    def killed(*args):
        raise _Killed

    def history():
        rows = _histories(Path(settings["logdir"]))["m"]
        return [(r["frames"], r["weights_from"], float(r["learning_rate"])) for r in rows]

    donor = run_member("d", kill_after=1)
    run_member("m", kill_after=1)
    run_member("m", kill_after=1)  # Tune forgot the report: "m" re-reports the same state
    assert history() == [("1000", "m", 0.01)]
    exploit = {name: value * 1.2 for name, value in before.items()}
    with monkeypatch.context() as m:  # killed right after the exploit's copy, before training on
        m.setattr(pbt, "_train_stretch", killed)
        run_member("m", checkpoint=donor.reports[0]["checkpoint"], hyper=exploit)
    assert history() == [("1000", "m", 0.01), ("1000", "d", 0.012)]

    resumed = run_member("m")

    assert history() == [("1000", "m", 0.01), ("1000", "d", 0.012), ("1000", "m", 0.01), ("2000", "m", 0.01)]
    rows = _histories(Path(settings["logdir"]))["m"]
    assert rows[2]["weights_digest"] == rows[1]["weights_digest"]  # the donor's weights, with the old values
    assert _trained_frames(rows, "m") == [1000, 2000]
    assert [r["frames"] for r in resumed.reports] == [1_000, 2_000]  # Tune still hears of both boundaries


def test_a_resumed_scheduler_syncs_one_interval_past_the_furthest_member():
    from impala_tf.pbt_scheduler import next_boundary

    assert next_boundary(1_000_000, [2_000_000], 500_000) == 2_500_000  # not 2M: every member is there
    assert next_boundary(1_000_000, [0, 500_000], 500_000) == 1_000_000  # burn-in still ahead
    assert next_boundary(1_000_000, [], 500_000) == 1_000_000


def test_every_member_learns_and_the_best_is_evaluated_for_the_leaderboard(population):
    logdir, _, _ = population
    for member_id, rows in _histories(logdir).items():
        last = [float(r["fitness"]) for r in rows if r["weights_from"] == member_id][-1]
        assert last > 0.5, (member_id, last)  # a random Catch policy scores about -0.6
    summary = json.loads((logdir / "pbt.json").read_text())
    best = logdir / summary["best_member"]
    evaluation = json.loads((best / "eval_summary.json").read_text())
    assert evaluation["agent"] == pbt.BEST_AGENT
    assert (logdir / "pbt.png").stat().st_size > 1000

    from impala_tf.report import inputs

    suite = inputs.resolve_suite("catch")
    (agent,) = inputs.load_agents(suite, run_dirs=[str(logdir)])
    assert agent.name == pbt.BEST_AGENT


def test_fitness_is_the_mean_capped_human_normalised_score_or_the_mean_return():
    reference = {"pong": (-20.7, 14.6), "breakout": (1.7, 30.5)}
    returns = {"pong": [14.6 * 2, 14.6 * 2], "breakout": [1.7 + 0.5 * 28.8]}
    assert math.isclose(pbt.fitness(returns, reference), (100.0 + 50.0) / 2)  # pong capped at 100 %
    assert math.isclose(pbt.fitness({"catch": [1.0, 0.0]}, None), 0.5)
    assert pbt.fitness({"catch": []}, None) == -math.inf


def test_fitness_with_a_normaliser_is_the_uncapped_mean_normalised_score():
    normaliser = {"freeway": (0.0, 50.0), "breakout": (1.0, 11.0)}
    returns = {"freeway": [60.0, 60.0], "breakout": [6.0]}
    assert math.isclose(pbt.fitness(returns, None, normaliser), (120.0 + 50.0) / 2)  # freeway not capped
    # Scales no longer matter: the raw mean would be (60 + 6) / 2.
    assert not math.isclose(pbt.fitness(returns, None, normaliser), pbt.fitness(returns, None))


def test_initial_population_is_reproducible_and_within_the_papers_ranges():
    a, b = pbt.initial_population(24, seed=7), pbt.initial_population(24, seed=7)
    assert a == b
    learning_rates = np.array([m["learning_rate"] for m in a])
    assert np.all((5e-6 <= learning_rates) & (learning_rates <= 5e-3))
    assert {m["rmsprop_epsilon"] for m in a} <= {1e-1, 1e-3, 1e-5, 1e-7}
    assert all(m["max_grad_norm"] == 40.0 for m in a)


def test_the_minatar_demonstration_report_compares_the_two_arms_from_collected_inputs(tmp_path):
    from experiments import pbt_minatar

    games = ("asterix", "breakout", "freeway", "seaquest", "space_invaders")
    workdir, inputs = tmp_path / "work", tmp_path / "inputs"
    hyper = {"learning_rate": 1e-3, "entropy_cost": 0.01, "rmsprop_epsilon": 1e-5, "max_grad_norm": 40.0}
    for arm, names, score in (("pbt/members", ("a", "b"), 10.0), ("fixed", ("member_0", "member_1"), 5.0)):
        for i, name in enumerate(names):
            run_dir = workdir / arm / name
            (run_dir / "checkpoints").mkdir(parents=True)
            summary = {
                "mean_score": {g: score + i for g in games},
                "trained_frames": 100,
                "episodes_per_task": 20,
            }
            (run_dir / "eval_summary.json").write_text(json.dumps(summary))
            (run_dir / "config.json").write_text(json.dumps({"flags": hyper}))
            rows = [f"{g},{10 * k},{score + i},5,0.0" for k in range(1, 21) for g in games]
            (run_dir / "episodes.csv").write_text(
                "task,frames,episode_return,episode_frames,wall_time\n" + "\n".join(rows)
            )
            if arm == "pbt/members":
                history = [
                    {"frames": 100, "fitness": score, **hyper, "weights_from": "a", "weights_digest": "x"}
                ]
                with open(run_dir / "pbt_history.csv", "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=pbt.HISTORY_COLUMNS)
                    writer.writeheader()
                    writer.writerows(history)
    (workdir / "pbt" / "pbt.json").write_text(json.dumps({"best_member": "members/a"}))
    (workdir / "pbt" / "initial_population.json").write_text(json.dumps([hyper, hyper]))

    pbt_minatar.collect(workdir, inputs)
    assert not list(inputs.rglob("checkpoints"))
    assert len(list(inputs.rglob("episodes.csv"))) == 4 and (inputs / "pbt" / "pbt.json").exists()
    # Every 10th game of each task is kept.
    assert len((inputs / "fixed" / "member_0" / "episodes.csv").read_text().splitlines()) == 1 + 2 * len(
        games
    )

    text = pbt_minatar.report(inputs, "leaderboards/inputs/minatar/normaliser.csv", tmp_path / "out")
    pbt_row = next(line for line in text.splitlines() if line.startswith("| PBT |"))
    fixed_row = next(line for line in text.splitlines() if line.startswith("| fixed |"))
    assert float(pbt_row.split("|")[2]) > float(fixed_row.split("|")[2])  # best member: 11 vs 6 raw
    assert "1 exploits" in text  # member b's weights came from a
    assert "PBT's own pick, by final fitness (`pbt.json`; the leaderboard's `impala_tf_pbt` row): a," in text
    for name in ("pbt.md", "pbt_curves.png", "pbt_hyperparameters.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_the_minatar_demonstration_binary_starts_and_reports_missing_inputs_in_one_line(tmp_path):
    # Its flags must not clash with the training flags (impala_tf.config) of anything it imports.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.pbt_minatar",
            "report",
            f"--inputs={tmp_path}",
            f"--out={tmp_path}/out",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path}: no evaluated runs")
    assert not (tmp_path / "out").exists()


def test_the_minatar_demonstrations_fixed_arm_trains_each_member_with_its_initial_values_two_at_a_time(
    tmp_path, monkeypatch
):
    import threading

    from experiments import pbt_minatar, transfer_matrix

    workdir = tmp_path / "work"
    (workdir / "pbt" / "members").mkdir(parents=True)
    (workdir / "pbt" / "pbt.json").write_text("{}")  # the PBT arm is done
    population = [{"learning_rate": 1e-3 * (k + 1), "entropy_cost": 0.01} for k in range(4)]
    (workdir / "pbt" / "initial_population.json").write_text(json.dumps(population))
    commands, running, most = [], [0], [0]
    lock = threading.Lock()

    def runner(command, log_path):
        with lock:
            commands.append(command)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.2)
        with lock:
            running[0] -= 1

    monkeypatch.setattr(transfer_matrix, "subprocess_runner", runner)
    monkeypatch.setattr(transfer_matrix, "is_evaluated", lambda run_dir, frames: False)
    pbt_minatar.run(workdir, 1000, 100, 100, 5, "unused.csv", parallel=2)

    trains = [c for c in commands if "suites.minatar" in c]
    assert len(trains) == 4 and len(commands) == 8  # each member trained, then evaluated
    for k in range(4):
        (train,) = [c for c in trains if f"--logdir={workdir / 'fixed' / f'member_{k}'}" in c]
        assert f"--learning_rate={population[k]['learning_rate']!r}" in train and f"--seed={k + 1}" in train
    assert most[0] == 2


def test_committed_pbt_report_is_what_its_committed_inputs_give(tmp_path, makefile_command):
    repo = Path(__file__).resolve().parents[1]
    args = makefile_command("experiments.pbt_minatar", "report", out=tmp_path)
    command = [sys.executable, "-m", "experiments.pbt_minatar", *args]
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    committed = (repo / "leaderboards" / "minatar" / "pbt.md").read_text()
    assert committed == (tmp_path / "pbt.md").read_text(), (
        "leaderboards/minatar/pbt.md is stale: make leaderboards"
    )
