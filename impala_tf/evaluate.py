"""Evaluate a trained agent: `python -m impala_tf.evaluate --logdir=RUN [--episodes=N]`.

An exported policy (`python -m impala_tf.export`) is evaluated the same way: `--saved_model=DIR`, or a --logdir
that holds a SavedModel. Its environments come from the run configuration the export carries; the results are
written into --logdir when given, else beside the SavedModel in DIR.

Loads the run's newest valid checkpoint and plays N whole games per task under the suite's protocol (Atari/impala:
1–30 random no-op starts, scores over all lives, 108,000-frame cap; MinAtar: no cap in training, 100,000 steps
here, as a game can last forever). Each of the N environments of a task plays exactly one game, so that short
games are not over-represented. Writes, atomically, into the run directory:
  eval_scores.csv    task, episode, score, frames   (one row per game; frames = that game's emulator frames)
  eval_summary.json  agent, suite, protocol, seed, trained_frames, per-task mean score
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import app, flags

from impala_tf import (
    agent,
    checkpoints,
    config,  # noqa: F401 - defines --logdir and the other training flags
    envs,
    export,
    rundir,
    writers,
)
from impala_tf.actor import ActingPolicy
from impala_tf.envs.base import BatchedTimeStep, StepType
from impala_tf.rundir import UserError

FLAGS = flags.FLAGS

# --logdir is the training flag of impala_tf.config (one definition of each flag).
flags.DEFINE_integer("episodes", None, "Games per task (default: the run's --eval_episodes, else 10).")
flags.DEFINE_integer("eval_seed", 12345, "Seed of the evaluation environments and action sampling.")
flags.DEFINE_string("agent", None, "Agent name in eval_summary.json (default: the run directory's name).")
flags.DEFINE_string(
    "saved_model", None, "Evaluate this exported policy (impala_tf.export) instead of a run's checkpoint."
)


def _policy_rows(n: int) -> int:
    """How many rows the policy steps while `n` games are unfinished: the next power of two, so that a compiled
    policy step sees at most log2(N) batch sizes."""
    return 1 << max(n - 1, 0).bit_length()


def _padded(rows: np.ndarray) -> np.ndarray:
    """`rows`, then repeats of them up to the next power of two."""
    return np.concatenate([rows, np.resize(rows, _policy_rows(len(rows)) - len(rows))])


def play_games(spec: agent.RunSpec, policy_step, initial_state, episodes: int, seed: int) -> list[dict]:
    """Plays `episodes` whole games of every task; `policy_step(timestep, prev_action, task_id, state)` returns
    (action, logits, state) like ActingPolicy.step (state None, or an array [2, N, H]). Returns one dict per game.

    A finished game's environment is held (`BatchedEnv.hold`) and the policy steps only the unfinished ones
    (padded to a power of two), so one long game, as a seaquest submarine that never dives plays to the cap,
    costs one environment's steps, not every environment's.
    """
    num_tasks = spec.num_tasks
    task_ids = [task for task in range(num_tasks) for _ in range(episodes)]
    env = agent.make_env(spec, task_ids, seed, envs.evaluation_max_episode_frames(spec.suite))
    try:
        n = env.num_envs
        task_id = env.task_ids.astype(np.int32)
        done = np.zeros(n, bool)
        results: list[dict] = []
        timestep = env.reset()
        prev_action = np.zeros(n, np.int32)
        state = initial_state(n)
        state = None if state is None else np.array(state)
        # The environments the policy steps: rows[:live] (a superset of the unfinished ones), then padding.
        rows, live = np.arange(n), n
        while not done.all():
            sub_action, _, sub_state = policy_step(
                BatchedTimeStep(*(field[rows] for field in timestep)),
                prev_action[rows],
                task_id[rows],
                None if state is None else state[:, rows],
            )
            action = np.zeros(n, np.int32)
            action[rows[:live]] = sub_action[:live]
            if state is not None:
                state[:, rows[:live]] = sub_state[:, :live]
            timestep = env.step(action)
            prev_action = np.where(timestep.step_type == StepType.FIRST, 0, action).astype(np.int32)
            finished = []
            for episode in env.pop_finished_episodes():
                if not done[episode.env_index]:
                    done[episode.env_index] = True
                    finished.append(episode.env_index)
                    results.append(
                        {
                            "task": spec.suite.games[episode.task_id],
                            "score": float(episode.episode_return),
                            "frames": int(episode.episode_frames),
                        }
                    )
            if finished:
                env.hold(np.asarray(finished))
                unfinished = np.flatnonzero(~done)
                if len(unfinished) and _policy_rows(len(unfinished)) < len(rows):
                    rows, live = _padded(unfinished), len(unfinished)
    finally:
        env.close()
    return results


def evaluate_run(logdir: Path, episodes: int | None, seed: int, agent_name: str | None) -> dict:
    run_config = rundir.load_config(logdir)
    spec = rundir.evaluation_spec(run_config, logdir / "config.json")
    episodes = episodes or run_config["flags"].get("eval_episodes", 10)
    probe = agent.make_env(spec, [0], seed)
    network = agent.make_network(spec, probe)
    probe.close()
    path, trained_frames = checkpoints.restore_network(logdir / "checkpoints", network)
    policy = ActingPolicy(network, seed=seed, xla=spec.inference_xla)
    start = time.time()
    results = play_games(spec, policy.step, policy.initial_state, episodes, seed)
    summary = {
        "agent": agent_name or logdir.resolve().name,
        "protocol": run_config.get("protocol"),
        "trained_frames": trained_frames,
        "checkpoint": path,
    }
    return write_results(logdir, spec, results, episodes, summary, time.time() - start)


def evaluate_saved_model(
    model_dir: Path, out_dir: Path, episodes: int | None, seed: int, agent_name: str | None
) -> dict:
    """Evaluates an exported policy under the protocol of the run it came from; writes into `out_dir`."""
    policy = export.ExportedPolicy(model_dir, seed=seed)
    run_config = policy.metadata["run_config"]
    spec = rundir.evaluation_spec(run_config, model_dir / "assets" / export.METADATA_ASSET)
    episodes = episodes or run_config["flags"].get("eval_episodes", 10)
    start = time.time()
    results = play_games(spec, policy.step, policy.initial_state, episodes, seed)
    summary = {
        "agent": agent_name or model_dir.resolve().name,
        "protocol": policy.metadata["protocol"],
        "trained_frames": policy.metadata["trained_frames"],
        "checkpoint": policy.metadata["checkpoint"],
        "saved_model": str(model_dir),
    }
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot write to {out_dir}: {error.strerror}") from None
    return write_results(out_dir, spec, results, episodes, summary, time.time() - start)


def write_results(
    out_dir: Path, spec: agent.RunSpec, results: list[dict], episodes: int, summary: dict, seconds: float
) -> dict:
    """Writes eval_scores.csv and eval_summary.json (`summary` plus suite, seed and per-task means)."""
    rows, counters = [], {}
    for result in sorted(results, key=lambda r: spec.suite.games.index(r["task"])):
        counters[result["task"]] = counters.get(result["task"], 0) + 1
        rows.append([result["task"], counters[result["task"]], f"{result['score']:g}", result["frames"]])
    means = {
        game: float(np.mean([r["score"] for r in results if r["task"] == game])) for game in spec.suite.games
    }
    summary = {
        **summary,
        "suite": spec.suite.name,
        "seed": spec.seed,
        "episodes_per_task": episodes,
        "mean_score": means,
        "eval_seconds": round(seconds, 1),
    }
    writers.atomic_write_text(
        out_dir / "eval_scores.csv", writers.csv_text(rows, ["task", "episode", "score", "frames"])
    )
    writers.atomic_write_json(out_dir / "eval_summary.json", summary)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.logdir and not FLAGS.saved_model:
        raise app.UsageError("--logdir is required (or --saved_model for an exported policy)")
    if FLAGS.episodes is not None and FLAGS.episodes < 1:
        raise app.UsageError(f"--episodes must be >= 1, got {FLAGS.episodes}")
    model_dir = FLAGS.saved_model
    if model_dir is None and tf.saved_model.contains_saved_model(FLAGS.logdir):
        model_dir = FLAGS.logdir
    out_dir = Path(FLAGS.logdir or model_dir)
    try:
        if model_dir is not None:
            summary = evaluate_saved_model(
                Path(model_dir), out_dir, FLAGS.episodes, FLAGS.eval_seed, FLAGS.agent
            )
        else:
            summary = evaluate_run(out_dir, FLAGS.episodes, FLAGS.eval_seed, FLAGS.agent)
    except (export.ExportError, checkpoints.CheckpointError, UserError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    width = max(len(g) for g in summary["mean_score"])
    print(
        f"evaluated {summary['agent']} at {summary['trained_frames']:,} frames "
        f"({summary['episodes_per_task']} games per task, {summary['eval_seconds']} s):"
    )
    for game, score in summary["mean_score"].items():
        print(f"  {game:<{width}}  {score:10.1f}")
    print(f"wrote {out_dir / 'eval_scores.csv'} and eval_summary.json")
    return 0


if __name__ == "__main__":
    app.run(main)
