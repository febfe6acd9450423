"""Export a trained policy as a TensorFlow SavedModel: `python -m impala_tf.export --logdir=RUN --out=DIR`.

The SavedModel needs TensorFlow only (not this package) to load and run:

    policy = tf.saved_model.load(DIR)
    state = policy.initial_state(batch_size)["state"]                      # float32 [2, B, H]
    out = policy.step(observation, prev_action, prev_reward, step_type, task_id, state, seed)

Signatures (also under `policy.signatures[...]`, called with keyword arguments):

  initial_state(batch_size: int32 [])  ->  {"state": float32 [2, B, H]}   (zeros; H = 0 without an LSTM)

  step(observation: uint8 [B, *obs_shape],
       prev_action:  int32 [B]     action taken at the previous step (0 at FIRST),
       prev_reward:  float32 [B]   RAW reward received on arriving at this observation (0 at FIRST); the
                                   network clips it to [-1, 1] inside, as in training,
       step_type:    int32 [B]     dm_env.StepType (FIRST=0, MID=1, LAST=2); the LSTM state resets at FIRST,
       task_id:      int32 [B]     index of the game in `metadata()["games"]`: it selects the task's legal
                                   actions (illegal logits are -1e9) and, under PopArt, the task's value head,
       state:        float32 [2, B, H],
       seed:         int32 [2]     stateless sampling seed; equal seeds and inputs give equal samples)
    -> {"policy_logits": float32 [B, A], "action": int32 [B] (sampled), "greedy_action": int32 [B],
        "baseline": float32 [B] (the network's value output; PopArt-normalised when the run used PopArt),
        "value": float32 [B] (unnormalised value: sigma * baseline + mu of the task under PopArt, else baseline),
        "state": float32 [2, B, H]}

  metadata()  ->  {"suite", "protocol", "action_set": string [], "games": string [K],
                   "legal_action_mask": bool [K, A], "observation_shape": int32 [3], "state_size": int32 []}

The asset `assets/impala_policy.json` holds the same and more (network, reward clipping, frames trained, the
checkpoint and the run's whole config.json), so that `impala_tf.evaluate --saved_model=DIR` can rebuild the
run's environments. One exported step takes any batch size B.

Sampling matches the training code: `ActingPolicy.step` with sampling seed (s, n) and this `step` with
`seed=[s, n]` draw the same actions from the same logits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from impala_tf import agent, checkpoints, config, popart, rundir  # noqa: F401 - config defines --logdir
from impala_tf.envs.base import BatchedTimeStep

FLAGS = flags.FLAGS

METADATA_ASSET = "impala_policy.json"
FORMAT = "impala_tf.policy/1"
_POPART_MU_KEY = "learner/popart_mu/.ATTRIBUTES/VARIABLE_VALUE"
_POPART_NU_KEY = "learner/popart_nu/.ATTRIBUTES/VARIABLE_VALUE"


class ExportError(Exception):
    """A problem with what the user asked for; reported as one line."""


class PolicyModule(tf.Module):
    """What the SavedModel holds: the network, PopArt statistics and metadata."""

    def __init__(
        self,
        network: tf.Module,
        metadata: dict[str, Any],
        metadata_path: str,
        popart_mu: np.ndarray | None = None,
        popart_sigma: np.ndarray | None = None,
    ):
        super().__init__(name="impala_policy")
        self.network = network
        self.metadata_file = tf.saved_model.Asset(metadata_path)
        num_tasks = len(metadata["games"])
        self._mu = tf.constant(np.zeros(num_tasks) if popart_mu is None else popart_mu, tf.float32)
        self._sigma = tf.constant(np.ones(num_tasks) if popart_sigma is None else popart_sigma, tf.float32)
        self._metadata = {
            "suite": tf.constant(metadata["suite"]),
            "protocol": tf.constant(metadata["protocol"]),
            "action_set": tf.constant(metadata["action_set"]),
            "games": tf.constant(metadata["games"]),
            "legal_action_mask": tf.constant(np.array(metadata["legal_action_mask"], bool)),
            "observation_shape": tf.constant(metadata["observation_shape"], tf.int32),
            "state_size": tf.constant(metadata["state_size"], tf.int32),
        }
        obs_shape, state_size = metadata["observation_shape"], metadata["state_size"]
        self.initial_state = tf.function(
            self._initial_state, input_signature=[tf.TensorSpec([], tf.int32, name="batch_size")]
        )
        self.step = tf.function(
            self._step,
            input_signature=[
                tf.TensorSpec([None, *obs_shape], tf.uint8, name="observation"),
                tf.TensorSpec([None], tf.int32, name="prev_action"),
                tf.TensorSpec([None], tf.float32, name="prev_reward"),
                tf.TensorSpec([None], tf.int32, name="step_type"),
                tf.TensorSpec([None], tf.int32, name="task_id"),
                tf.TensorSpec([2, None, state_size], tf.float32, name="state"),
                tf.TensorSpec([2], tf.int32, name="seed"),
            ],
        )
        self.metadata = tf.function(self._metadata_fn, input_signature=[])

    def _initial_state(self, batch_size: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"state": self.network.initial_state(batch_size)}

    def _metadata_fn(self) -> dict[str, tf.Tensor]:
        return dict(self._metadata)

    def _step(self, observation, prev_action, prev_reward, step_type, task_id, state, seed):
        """The `step` signature; shapes in the module docstring."""
        output, new_state = self.network.step(
            observation, prev_action, prev_reward, tf.cast(step_type, tf.uint8), task_id, state
        )
        logits, baseline = output.policy_logits, output.baseline
        # The same op and seed layout as ActingPolicy, so that equal seeds draw equal actions.
        action = tf.random.stateless_categorical(logits, 1, seed=seed, dtype=tf.int32)[:, 0]
        value = tf.gather(self._sigma, task_id) * baseline + tf.gather(self._mu, task_id)
        return {
            "policy_logits": logits,
            "action": action,
            "greedy_action": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "baseline": baseline,
            "value": value,
            "state": new_state,
        }


def _popart_statistics(checkpoint_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) float32 [num_tasks] that the learner saved beside the network."""
    reader = tf.train.load_checkpoint(checkpoint_path)
    if not (reader.has_tensor(_POPART_MU_KEY) and reader.has_tensor(_POPART_NU_KEY)):
        raise ExportError(f"checkpoint {checkpoint_path} of a PopArt run holds no PopArt statistics")
    mu, nu = reader.get_tensor(_POPART_MU_KEY), reader.get_tensor(_POPART_NU_KEY)
    return mu, popart.sigma_from_moments(tf.constant(mu), tf.constant(nu)).numpy()


def build_policy_module(logdir: str | Path, metadata_path: str) -> tuple[PolicyModule, dict[str, Any]]:
    """Restores the run's newest valid checkpoint into a PolicyModule; writes its metadata JSON to
    `metadata_path` (the asset the SavedModel copies). Returns (module, metadata)."""
    logdir = Path(logdir)
    try:
        run_config, spec = rundir.load_run_spec(logdir)
    except rundir.UserError as error:
        raise ExportError(str(error)) from None
    probe = agent.make_env(spec, [0], spec.seed)
    try:
        network = agent.make_network(spec, probe)
        legal_action_mask = probe.legal_action_mask()
        observation_shape = [int(d) for d in probe.observation_spec().shape]
    finally:
        probe.close()
    checkpoint_path, trained_frames = checkpoints.restore_network(logdir / "checkpoints", network)
    mu = sigma = None
    if network.config.num_value_heads > 1:
        mu, sigma = _popart_statistics(checkpoint_path)
    metadata = {
        "format": FORMAT,
        "suite": spec.suite.name,
        "backend": spec.suite.backend,
        "protocol": spec.protocol or spec.suite.protocol,
        "action_set": spec.action_set or spec.suite.action_set,
        "games": list(spec.suite.games),
        "legal_action_mask": legal_action_mask.astype(bool).tolist(),
        "observation_shape": observation_shape,
        "num_actions": network.config.num_actions,
        "state_size": network.state_size,
        "network": spec.network,
        "use_lstm": spec.use_lstm,
        "popart": mu is not None,
        "reward_clipping": spec.reward_clipping,
        "trained_frames": trained_frames,
        "checkpoint": checkpoint_path,
        "run_config": run_config,
    }
    Path(metadata_path).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    module = PolicyModule(network, metadata, metadata_path, mu, sigma)
    return module, metadata


def export_policy(logdir: str | Path, out: str | Path) -> dict[str, Any]:
    """Writes the SavedModel of the run's policy to `out` (which must not exist); returns its metadata.

    The model is written into a temporary directory beside `out` and renamed into place once complete.
    """
    out = Path(out)
    if out.exists():
        raise ExportError(f"--out={out} already exists; choose a new directory")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    except OSError as error:
        raise ExportError(f"cannot write --out={out}: {error.strerror or error}") from None
    try:
        with tempfile.TemporaryDirectory() as scratch:
            module, metadata = build_policy_module(logdir, os.path.join(scratch, METADATA_ASSET))
            tf.saved_model.save(
                module,
                str(staging / "model"),
                signatures={
                    "step": module.step,
                    "initial_state": module.initial_state,
                    "metadata": module.metadata,
                },
            )
        os.rename(staging / "model", out)
    except OSError as error:
        raise ExportError(f"cannot write --out={out}: {error.strerror or error}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The metadata asset of an exported policy (no TensorFlow graph is loaded)."""
    path = Path(directory) / "assets" / METADATA_ASSET
    if not tf.saved_model.contains_saved_model(str(directory)) or not path.exists():
        raise ExportError(
            f"{directory} holds no exported policy (export one with python -m impala_tf.export)"
        )
    metadata = json.loads(path.read_text())
    if metadata.get("format") != FORMAT:
        raise ExportError(f"{directory}: unknown policy format {metadata.get('format')!r}; want {FORMAT}")
    return metadata


def policy_suite(directory: str | Path):
    """The `suites.Suite` an exported policy plays: its games in training order (so task ids agree), its
    protocol and action set. Build environments for the policy from this, not from the suite's name."""
    from impala_tf import suites

    metadata = read_metadata(directory)
    suite = suites.get_suite(metadata["run_config"]["flags"]["suite"]).restrict(
        metadata["games"], action_set=metadata["action_set"]
    )
    return dataclasses.replace(suite, protocol=metadata["protocol"])


class ExportedPolicy:
    """An exported SavedModel with the acting interface of `ActingPolicy` (numpy in, numpy out).

    `step(timestep, prev_action, task_id, state)` returns (action [N], policy_logits [N, A], new_state); the
    n-th call samples with seed (seed, n), as ActingPolicy does. With `greedy=True` it returns the argmax.
    """

    def __init__(self, directory: str | Path, seed: int = 0, greedy: bool = False):
        self.metadata = read_metadata(directory)
        self.model = tf.saved_model.load(str(directory))
        self.greedy = greedy
        self._seed = np.array([seed % 2**31, 0], np.int32)
        self._calls = 0

    def initial_state(self, batch_size: int) -> np.ndarray:
        return self.model.initial_state(tf.constant(batch_size, tf.int32))["state"].numpy()

    def step(self, timestep: BatchedTimeStep, prev_action, task_id, state):
        self._calls += 1
        self._seed[1] = self._calls % 2**31
        out = self.model.step(
            tf.constant(timestep.observation, tf.uint8),
            tf.constant(prev_action, tf.int32),
            tf.constant(timestep.reward, tf.float32),
            tf.constant(timestep.step_type, tf.int32),
            tf.constant(task_id, tf.int32),
            tf.constant(state, tf.float32),
            tf.constant(self._seed),
        )
        action = out["greedy_action"] if self.greedy else out["action"]
        return action.numpy(), out["policy_logits"].numpy(), out["state"].numpy()


def define_flags() -> None:
    """This binary's own flag; --logdir is the training flag of impala_tf.config (one definition of each flag).
    Defined only when run as a binary, so that importing the library defines nothing."""
    flags.DEFINE_string("out", None, "Directory to create for the SavedModel (must not exist).")


def main(argv):
    logging.set_verbosity(logging.WARNING)  # TensorFlow's saver logs every file it writes
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.logdir:
        raise app.UsageError("--logdir is required (the run directory to export)")
    if not FLAGS.out:
        raise app.UsageError("--out is required (a new directory for the SavedModel)")
    try:
        metadata = export_policy(FLAGS.logdir, FLAGS.out)
    except (ExportError, checkpoints.CheckpointError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"exported {metadata['checkpoint']} ({metadata['trained_frames']:,} frames; suite {metadata['suite']}, "
        f"{len(metadata['games'])} games) to {FLAGS.out}"
    )
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
