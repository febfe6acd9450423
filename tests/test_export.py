"""The exported SavedModel policy: loadable by TensorFlow alone, equal to the training code, usable by evaluate."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from impala_tf import agent, checkpoints, evaluate, export, popart, rundir
from impala_tf.actor import ActingPolicy
from impala_tf.envs.base import StepType

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
POPART_MU, POPART_NU = [1.5, -2.0], [6.0, 9.0]


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory, untrained_run):
    """Two exported runs: Catch through the binary, and a two-game MinAtar LSTM + PopArt run through the
    library (multi-task masks, value heads and recurrent state)."""
    root = tmp_path_factory.mktemp("export")
    catch = untrained_run(root, "catch", ["catch"], use_lstm=False, eval_episodes=2)
    result = run_cli("impala_tf.export", f"--logdir={catch}", f"--out={root / 'catch_policy'}")
    assert result.returncode == 0, result.stderr
    assert "exported" in result.stdout
    minatar = untrained_run(
        root, "minatar", ["breakout", "asterix"], use_lstm=True, popart_stats=(POPART_MU, POPART_NU)
    )
    export.export_policy(minatar, root / "minatar_policy")
    return {"catch": (catch, root / "catch_policy"), "minatar": (minatar, root / "minatar_policy")}


def reference_rollout(run: Path, num_envs: int, num_steps: int, seed: int) -> tuple[dict, dict]:
    """Steps real environments with the training code's ActingPolicy; returns (inputs, expected outputs)."""
    _, spec = rundir.load_run_spec(run)
    env = agent.make_env(spec, [i % spec.num_tasks for i in range(num_envs)], seed)
    network = agent.make_network(spec, env)
    checkpoints.restore_network(run / "checkpoints", network)
    policy = ActingPolicy(network, seed=seed, xla=False)
    task_id = env.task_ids.astype(np.int32)
    mu = sigma = None
    if spec.popart:
        mu = np.array(POPART_MU, np.float32)
        sigma = popart.sigma_from_moments(tf.constant(POPART_MU), tf.constant(POPART_NU)).numpy()
    inputs = {k: [] for k in ("observation", "prev_action", "prev_reward", "step_type", "seed")}
    expected = {k: [] for k in ("policy_logits", "action", "baseline", "value", "state")}
    timestep, prev_action, state = env.reset(), np.zeros(num_envs, np.int32), policy.initial_state(num_envs)
    for t in range(num_steps):
        clipped = np.clip(timestep.reward, -1, 1)
        output, _ = network.step(
            timestep.observation, prev_action, clipped, timestep.step_type, task_id, tf.constant(state)
        )
        action, logits, new_state = policy.step(timestep, prev_action, task_id, state)
        baseline = output.baseline.numpy()
        for name, value in [
            ("observation", timestep.observation),
            ("prev_action", prev_action),
            ("prev_reward", timestep.reward),
            ("step_type", timestep.step_type.astype(np.int32)),
            ("seed", np.array([seed, t + 1], np.int32)),  # ActingPolicy's n-th call samples with (seed, n)
        ]:
            inputs[name].append(value)
        expected["policy_logits"].append(logits)
        expected["action"].append(action)
        expected["baseline"].append(baseline)
        expected["value"].append(baseline if mu is None else sigma[task_id] * baseline + mu[task_id])
        expected["state"].append(new_state)
        timestep, state = env.step(action), new_state
        prev_action = np.where(timestep.step_type == StepType.FIRST, 0, action).astype(np.int32)
    env.close()
    stacked = {k: np.stack(v) for k, v in inputs.items()}
    stacked["task_id"] = task_id
    return stacked, {k: np.stack(v) for k, v in expected.items()}


# Runs in a fresh interpreter that imports TensorFlow and NumPy only; argv: (model_dir, inputs, outputs)...
TF_ONLY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf

    args = sys.argv[1:]
    for model_dir, inputs_path, outputs_path in zip(args[::3], args[1::3], args[2::3]):
        policy = tf.saved_model.load(model_dir)
        inputs = dict(np.load(inputs_path))
        num_steps, num_envs = inputs["prev_action"].shape
        state = policy.initial_state(tf.constant(num_envs))["state"]
        outputs = {}
        for t in range(num_steps):
            out = policy.signatures["step"](
                observation=tf.constant(inputs["observation"][t]),
                prev_action=tf.constant(inputs["prev_action"][t]),
                prev_reward=tf.constant(inputs["prev_reward"][t]),
                step_type=tf.constant(inputs["step_type"][t]),
                task_id=tf.constant(inputs["task_id"]),
                state=state,
                seed=tf.constant(inputs["seed"][t]),
            )
            state = out["state"]
            for name, value in out.items():
                outputs.setdefault(name, []).append(value.numpy())
        # Strings come back as object arrays; fixed-width bytes load without pickle.
        for name, value in policy.signatures["metadata"]().items():
            outputs["meta_" + name] = np.asarray(value.numpy(), bytes if value.dtype == tf.string else None)
        np.savez(outputs_path, **{k: np.stack(v) if isinstance(v, list) else v for k, v in outputs.items()})
    assert not [m for m in sys.modules if m.split(".")[0] in ("impala_tf", "suites")], "imported this package"
    """
)


def test_a_tensorflow_only_process_gets_the_training_codes_logits_actions_and_values(runs, tmp_path):
    script = tmp_path / "load.py"
    script.write_text(TF_ONLY_SCRIPT)
    expected, args = {}, []
    for name in ("catch", "minatar"):  # 11 environments: more than one chunk of the export, not a multiple
        run, model_dir = runs[name]
        inputs, expected[name] = reference_rollout(run, num_envs=11, num_steps=5, seed=7)
        np.savez(tmp_path / f"{name}_in.npz", **inputs)
        args += [str(model_dir), str(tmp_path / f"{name}_in.npz"), str(tmp_path / f"{name}_out.npz")]
    result = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        env={**ENV, "PYTHONPATH": ""},
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("catch", "minatar"):
        want, got = expected[name], dict(np.load(tmp_path / f"{name}_out.npz"))
        np.testing.assert_allclose(got["policy_logits"], want["policy_logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["greedy_action"], want["policy_logits"].argmax(-1))
        np.testing.assert_array_equal(got["action"], want["action"])  # same seed, same samples
        np.testing.assert_allclose(got["baseline"], want["baseline"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["value"], want["value"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["state"], want["state"], rtol=1e-5, atol=1e-5)
        games = [g.decode() for g in got["meta_games"]]
        assert games == json.loads((runs[name][0] / "config.json").read_text())["games"]
        assert got["meta_legal_action_mask"].shape == (len(games), want["policy_logits"].shape[-1])
    # PopArt: the unnormalised value is sigma * baseline + mu of each environment's own task.
    assert not np.allclose(expected["minatar"]["value"], expected["minatar"]["baseline"])
    assert expected["minatar"]["state"].shape[-1] == 256 and np.abs(expected["minatar"]["state"]).max() > 0


def test_one_export_serves_any_batch_size_and_describes_its_suite(runs):
    run, model_dir = runs["minatar"]
    policy = export.ExportedPolicy(model_dir, seed=3)
    meta = policy.metadata
    assert (meta["suite"], meta["games"], meta["state_size"], meta["popart"]) == (
        "minatar",
        ["breakout", "asterix"],
        256,
        True,
    )
    assert meta["trained_frames"] == 4321 and meta["run_config"]["flags"]["use_lstm"] is True
    suite = export.policy_suite(model_dir)  # environments for the policy: its games, in its task order
    assert (suite.name, suite.games, suite.protocol) == ("minatar", ("breakout", "asterix"), "minatar")
    legal = np.array(meta["legal_action_mask"])
    for batch_size in (1, 8, 17):  # below, at and above the export's chunk size
        state = policy.initial_state(batch_size)
        assert state.shape == (2, batch_size, 256)
        task_id = np.arange(batch_size, dtype=np.int32) % 2
        out = policy.model.step(
            tf.zeros([batch_size, *meta["observation_shape"]], tf.uint8),
            tf.zeros([batch_size], tf.int32),
            tf.zeros([batch_size], tf.float32),
            tf.zeros([batch_size], tf.int32),
            tf.constant(task_id),
            tf.constant(state),
            tf.constant([1, 2]),
        )
        assert out["policy_logits"].shape == (batch_size, meta["num_actions"])
        assert legal[task_id, out["action"].numpy()].all()  # never an illegal action of the env's game
        assert legal[task_id, out["greedy_action"].numpy()].all()


def test_evaluate_scores_a_saved_model_exactly_as_its_checkpoint(runs, tmp_path):
    run, model_dir = runs["catch"]
    from_checkpoint = evaluate.evaluate_run(run, episodes=6, seed=5, agent_name="ckpt")
    from_saved_model = evaluate.evaluate_saved_model(model_dir, tmp_path / "eval", 6, 5, "sm")
    assert (run / "eval_scores.csv").read_text() == (tmp_path / "eval" / "eval_scores.csv").read_text()
    assert from_saved_model["mean_score"] == from_checkpoint["mean_score"]
    assert from_saved_model["trained_frames"] == 4321 and from_saved_model["saved_model"] == str(model_dir)


def test_evaluate_binary_detects_a_saved_model_in_logdir(runs, tmp_path):
    _, model_dir = runs["catch"]
    copy = tmp_path / "policy"
    subprocess.run(["cp", "-r", str(model_dir), str(copy)], check=True)
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(logdir=str(copy), episodes=2, saved_model=None):
        assert evaluate.main(["evaluate"]) == 0
    summary = json.loads((copy / "eval_summary.json").read_text())
    assert summary["agent"] == "policy" and summary["episodes_per_task"] == 2
    assert len((copy / "eval_scores.csv").read_text().splitlines()) == 1 + 2


def test_export_refuses_bad_input_with_one_line_and_writes_nothing(runs, tmp_path):
    run, model_dir = runs["catch"]
    before = sorted(os.listdir(model_dir.parent))
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_policy(run, model_dir)
    assert sorted(os.listdir(model_dir.parent)) == before

    (tmp_path / "a_file").write_text("")
    with pytest.raises(export.ExportError, match="cannot write --out"):
        export.export_policy(run, tmp_path / "a_file" / "policy")
    with pytest.raises(export.ExportError, match="not a run directory"):
        export.export_policy(tmp_path, tmp_path / "out1")

    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoint"):
        export.export_policy(no_checkpoint, tmp_path / "out2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "no_checkpoint"]  # no temporaries left


def test_export_binary_exits_non_zero_with_a_one_line_error(runs, tmp_path):
    run, _ = runs["catch"]
    (tmp_path / "taken").mkdir()
    result = run_cli("impala_tf.export", f"--logdir={run}", f"--out={tmp_path / 'taken'}")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --out={tmp_path / 'taken'} already exists; choose a new directory"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
