"""Learning regressions (`make regression`; slow): real training runs through the binaries, with thresholds set
from measured runs (numbers in the comments: seed, frames, measured score).

- Multi-task MinAtar: one agent on the five games reaches per-game thresholds at 5M frames, with the paper's
  optimiser and at the suite's tuned settings.
- Single-game experts with the default optimiser: Breakout (Atari, 10M frames) and MinAtar asterix (5M).
- Off-policy correction: at a deliberately high policy lag (`--param_refresh_unrolls`), V-trace learns Catch
  where the uncorrected loss (`--correction=none`) does not, and beats it on MinAtar in the ablation's high-lag
  cells (experiments/ablation.py).

Every test is `@pytest.mark.slow` but the unit test of the staleness knob itself.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from impala_tf import scoring
from impala_tf.actor import Actor, ParamSnapshot
from impala_tf.envs.catch import CatchBatchedEnv

REPO = Path(__file__).resolve().parents[1]


def run_binary(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result


def evaluate(logdir: Path, episodes: int) -> dict[str, float]:
    run_binary(["impala_tf.evaluate", f"--logdir={logdir}", f"--episodes={episodes}"], timeout=600)
    return json.loads((logdir / "eval_summary.json").read_text())["mean_score"]


def mean_logged_lag(stdout: str) -> float:
    """Mean of the policy lag (updates) the trainer prints in its progress lines."""
    lags = [float(x) for x in re.findall(r"\| lag ([0-9.]+) \|", stdout)]
    assert lags, "no progress line with a lag in the trainer's output"
    return sum(lags) / len(lags)


# --- Multi-task MinAtar ---------------------------------------------------------------------------

MINATAR_FRAMES = 5_000_000  # all five games together: 1M per game
# The leaderboard's runs (leaderboards/minatar), made with the optimiser of --preset=paper.
MINATAR_FLAGS = ["--preset=paper", "--learning_rate=0.002"]
# Measured (20 evaluation games per game, 5M frames, --learning_rate=0.002; leaderboards/inputs/minatar/multitask):
#   seed 1: asterix 0.75, breakout 4.85, freeway 16.65, seaquest 1.35, space_invaders 58.4
#   seed 2: asterix 1.2, breakout 5.45, freeway 19.6, seaquest 0.8, space_invaders 69.6
# Random policy (experiments/minatar_random_scores.py, 1000 games, seed 0): asterix 0.50, breakout 0.38,
#   freeway 0.34, seaquest 0.08, space_invaders 4.11.
# Thresholds sit well above random and below every measured seed; asterix and seaquest are not learned at this
# budget (within about a point of random), so they carry no threshold. Freeway's threshold is the lowest
# relative to the measurements because its learning is a late jump (seed 1: training return 5.6 at 3.6M frames).
MINATAR_THRESHOLDS = {"breakout": 3.0, "freeway": 5.0, "space_invaders": 35.0}


def assert_multitask_minatar_reaches(
    logdir: Path, train_flags: list[str], thresholds: dict[str, float]
) -> None:
    """Trains one MinAtar agent on the five games for MINATAR_FRAMES (seed 1) and checks its evaluation scores."""
    args = ["suites.minatar", f"--logdir={logdir}", f"--total_frames={MINATAR_FRAMES}", "--seed=1"]
    run_binary([*args, *train_flags], timeout=3000)
    scores = evaluate(logdir, episodes=20)
    below = {g: scores[g] for g, threshold in thresholds.items() if scores[g] < threshold}
    assert not below, f"below thresholds {thresholds}: {below} (all scores: {scores})"


@pytest.mark.slow
def test_multitask_minatar_reaches_thresholds_at_5m_frames(tmp_path):
    assert_multitask_minatar_reaches(tmp_path / "minatar_seed1", MINATAR_FLAGS, MINATAR_THRESHOLDS)


# The multi-task agent at the suite's tuned settings, pinned as `make reproduce EXPERIMENT=minatar_multitask_batch8`
# runs them (λ = 0.5, batches of 8, no replay), at a fifth of their budget: 5M frames, 1M per game. Training returns
# of those 25M-frame runs at 5M frames (mean of the last 20 thinned rows per game, ~200 games; their learning rate
# had annealed only 20 % there, where this run's reaches 0):
#   seed 1: asterix 10.0, breakout 9.2, freeway 27.7, seaquest 1.6, space_invaders 49.0
#   seed 2: asterix 7.8, breakout 13.0, freeway 11.2, seaquest 1.0, space_invaders 74.1
# This test's own run (seed 1, 5M frames, 20 evaluation games per game; 10 min alone): asterix 13.55, breakout 4.9,
# freeway 25.7, seaquest 0.75, space_invaders 66.4.
# Thresholds sit about halfway between random (above) and the lowest of these, breakout's lower (its evaluation
# here was half the training returns above); seaquest is not learned at this budget.
MINATAR_TUNED_FLAGS = ["--vtrace_lambda=0.5", "--batch_size=8", "--replay_capacity=0"]
MINATAR_TUNED_THRESHOLDS = {"asterix": 4.0, "breakout": 2.5, "freeway": 5.0, "space_invaders": 25.0}


@pytest.mark.slow
def test_multitask_minatar_at_the_tuned_settings_reaches_thresholds_at_5m_frames(tmp_path):
    assert_multitask_minatar_reaches(
        tmp_path / "minatar_tuned_seed1", MINATAR_TUNED_FLAGS, MINATAR_TUNED_THRESHOLDS
    )


# --- Single-game experts with the default optimiser ---------------------------------------------

# Breakout expert (atari_tuning6, minimal actions, shallow, 10M frames, seed 1; leaderboards/inputs/atari_tuning6):
# evaluation 21.1 [17.0, 24.9] over 10 games, training 24.0 over the last 100 games; random 1.7; with
# --preset=paper the same run ended at 3.0. The threshold is half the measured evaluation mean.
BREAKOUT_FRAMES = 10_000_000
BREAKOUT_THRESHOLD = 10.0
# MinAtar asterix expert (5M frames, seed 1, 100 evaluation games): 21.66 with V-trace lambda 1
# (`make reproduce EXPERIMENT=minatar_experts`), 30.4 with lambda 0.5 and batches of 32, 29.3 with lambda 0.5 and
# batches of 8, 31.1 with the suite's default since, three quarters of each batch of 8 replayed (`EXPERIMENT=
# minatar_sweep`; ~40 min alone); the published AC(lambda) 19.5. The threshold is half the lambda 1 run's.
ASTERIX_FRAMES = 5_000_000
ASTERIX_THRESHOLD = 10.0


@pytest.mark.slow
def test_breakout_expert_learns_within_10m_frames(tmp_path):
    logdir = tmp_path / "breakout"
    args = ["suites.atari_tuning6", "--games=breakout", "--action_set=minimal", "--seed=1"]
    run_binary([*args, f"--logdir={logdir}", f"--total_frames={BREAKOUT_FRAMES}"], timeout=3300)
    score = evaluate(logdir, episodes=10)["breakout"]
    assert score >= BREAKOUT_THRESHOLD, (
        f"breakout {score} < {BREAKOUT_THRESHOLD} at {BREAKOUT_FRAMES:,} frames"
    )


@pytest.mark.slow
def test_minatar_asterix_expert_learns_within_5m_frames(tmp_path):
    logdir = tmp_path / "asterix"
    args = ["suites.minatar", "--games=asterix", "--seed=1", f"--total_frames={ASTERIX_FRAMES}"]
    run_binary([*args, f"--logdir={logdir}"], timeout=3300)
    score = evaluate(logdir, episodes=50)["asterix"]
    assert score >= ASTERIX_THRESHOLD, f"asterix {score} < {ASTERIX_THRESHOLD} at {ASTERIX_FRAMES:,} frames"


# --- V-trace vs no correction at high policy lag --------------------------------------------------

# Measured with the optimiser of --preset=paper (epsilon 0.01 inside the root, mean square from 1).
CATCH_FLAGS = ["--total_frames=60000", "--preset=paper", "--learning_rate=0.01", "--progress_every_secs=2"]
REFRESH_UNROLLS = 40  # actors refresh their parameters every 40th batch of unrolls
# Measured (Catch, 60K frames, --learning_rate=0.01, 100 evaluation games; lag = the trainer's progress lines).
# A fetch gets the learner's newest parameters, so between fetches an actor's parameters age from 0 to about
# K x num_actors x envs_per_actor / batch_size = K updates here (2 actors x 8 envs, batch 16): a mean near K/2.
#   refresh every unroll (K=1):  lag 1.0-2.9;    vtrace seed 1: 1.0;  none seed 1: 1.0
#   K=40:                        lag 17.5-18.2;  vtrace seed 1: 1.0, seed 2: 0.6;  none seed 1: -0.54, seed 2: -0.58
# (a random policy scores about -0.6): without a correction the stale data stops learning; V-trace still learns.
# (Until actors got the newest parameters, a fetch returned the snapshot taken after the previous one: K=40
# then meant a lag of 37-60, with V-trace 0.7 / 0.9 and no correction -0.5 / -0.6.)
LAG_FLOOR = 12.0
VTRACE_THRESHOLD = 0.5
MARGIN = 0.5


class CountingPolicy:
    """Stands in for ActingPolicy: uniform actions; counts the parameter snapshots it is given."""

    def __init__(self, num_actions: int):
        self.num_actions = num_actions
        self.version = -1
        self.refreshes = 0

    def initial_state(self, batch_size: int) -> np.ndarray:
        return np.zeros((2, batch_size, 0), np.float32)

    def set_weights(self, snapshot) -> None:
        self.refreshes += 1
        self.version = snapshot.version

    def step(self, timestep, prev_action, task_id, state):
        n = len(timestep.step_type)
        return np.zeros(n, np.int32), np.zeros((n, self.num_actions), np.float32), state


@pytest.mark.parametrize("refresh", [1, 3])
def test_actor_fetches_parameters_after_every_kth_batch_of_unrolls(refresh):
    env = CatchBatchedEnv([0, 0], seed=0)
    policy = CountingPolicy(env.action_spec().num_values)
    versions = iter(range(1000))
    actor = Actor(
        env,
        policy,
        unroll_length=5,
        get_params=lambda: ParamSnapshot(next(versions), ()),
        param_refresh_unrolls=refresh,
    )
    batches = actor.unrolls()
    seen = [int(next(batches)[0].policy_version) for _ in range(7)]
    # One fetch before the first unroll, then one after every `refresh`-th batch.
    assert policy.refreshes == 1 + 6 // refresh
    assert seen == [k // refresh for k in range(7)]
    with pytest.raises(ValueError, match="param_refresh_unrolls must be >= 1"):
        Actor(env, policy, unroll_length=5, param_refresh_unrolls=0)


def train_catch(logdir: Path, correction: str, refresh: int, seed: int) -> tuple[float, float]:
    """(mean logged policy lag, mean evaluation score) of one Catch run."""
    args = ["suites.catch", f"--logdir={logdir}", f"--seed={seed}"]
    args += [f"--correction={correction}", f"--param_refresh_unrolls={refresh}", *CATCH_FLAGS]
    lag = mean_logged_lag(run_binary(args, timeout=900).stdout)
    return lag, evaluate(logdir, episodes=100)["catch"]


@pytest.mark.slow
def test_stale_actors_raise_the_policy_lag_the_trainer_logs(tmp_path):
    fresh_lag, _ = train_catch(tmp_path / "fresh", "vtrace", refresh=1, seed=1)
    stale_lag, _ = train_catch(tmp_path / "stale", "vtrace", refresh=REFRESH_UNROLLS, seed=1)
    assert fresh_lag < 4.0
    assert stale_lag > 5 * fresh_lag, (fresh_lag, stale_lag)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_vtrace_beats_no_correction_at_high_policy_lag(tmp_path, seed):
    vtrace_lag, vtrace = train_catch(tmp_path / "vtrace", "vtrace", REFRESH_UNROLLS, seed)
    none_lag, uncorrected = train_catch(tmp_path / "none", "none", REFRESH_UNROLLS, seed)
    assert min(vtrace_lag, none_lag) > LAG_FLOOR, (vtrace_lag, none_lag)
    assert vtrace >= VTRACE_THRESHOLD, f"V-trace scored {vtrace} at lag {vtrace_lag:.1f}"
    assert vtrace > uncorrected + MARGIN, (
        f"V-trace {vtrace} vs no correction {uncorrected} (lag {none_lag:.1f})"
    )


# --- The ablation's ordering on MinAtar (experiments/ablation.py) ---------------------------------

# The ablation grid's high-lag pair, as its cells define them (multi-task MinAtar, batches of 8, lambda 1,
# --param_refresh_unrolls=20: a mean lag of ~75 updates), 2M frames, seed 1, 20 evaluation games per game.
# Measured (leaderboards/inputs/ablation/, mean over games of the score normalised random -> AC(lambda)):
#   V-trace 19.9 % (breakout 5.4, freeway 22.4, space_invaders 31.6), no correction 10.7 % (1.7, 18.5, 3.0).
# The V-trace threshold sits below the measured V-trace runs. The ordering is asserted where the correction acts:
# without it, breakout and space_invaders collapse at this lag in every committed seed (breakout 0.7-1.7,
# space_invaders 3.0, against V-trace's 4.9-5.4 and 31.6-39.9), while freeway is learned by every method and only
# its discovery time varies: in session 24 one V-trace run found freeway late (9.65 at 2M frames) against an
# uncorrected run's 26.9, which tied the five-game means (15.1 % / 15.3 %) although V-trace led on breakout
# (5.65 / 2.4) and space_invaders (31.25 / 7.05). The margins sit well inside the smallest measured gaps.
ABLATION_VTRACE_THRESHOLD = 14.0
ABLATION_MARGINS = {"breakout": 1.5, "space_invaders": 10.0}


def _ablation_scores(logdir: Path, correction: str) -> tuple[float, dict[str, float]]:
    """(mean normalised score over the five games in %, raw evaluation score per game) of one high-lag cell."""
    from experiments import ablation
    from impala_tf.report.inputs import resolve_suite

    cell = ablation.Cell(correction, replay=False, high_lag=True)
    args = ["suites.minatar", f"--logdir={logdir}", "--seed=1", f"--total_frames={ablation.FRAMES}"]
    run_binary([*args, *cell.flags], timeout=2400)
    scores = evaluate(logdir, episodes=ablation.EVAL_EPISODES)
    suite = resolve_suite("minatar", str(REPO / "leaderboards/inputs/minatar/normaliser.csv"))
    normalised = [scoring.normalised_score(scores[g], *suite.normalisers[g]) for g in suite.games]
    return float(np.mean(normalised)), scores


@pytest.mark.slow
def test_vtrace_beats_no_correction_on_minatar_at_the_ablations_high_lag(tmp_path):
    vtrace, vtrace_scores = _ablation_scores(tmp_path / "vtrace", "vtrace")
    _, uncorrected_scores = _ablation_scores(tmp_path / "none", "none")
    assert vtrace >= ABLATION_VTRACE_THRESHOLD, f"V-trace {vtrace:.1f} % < {ABLATION_VTRACE_THRESHOLD} %"
    for game, margin in ABLATION_MARGINS.items():
        assert vtrace_scores[game] > uncorrected_scores[game] + margin, (
            f"{game}: V-trace {vtrace_scores[game]:.2f} vs no correction {uncorrected_scores[game]:.2f}"
        )
