"""Which term of the loss moves which layer: the policy-gradient, baseline and entropy terms' gradients per kernel.

  python -m experiments.loss_gradients --logdir=RUN_DIR [--checkpoint=PATH] [--batches=4] [--seed=3]

Acts with the run's network (the newest checkpoint, `--checkpoint`, or `--checkpoint=init` for the run's own
initialisation) in 8 environments of the run's games for `--batches` batches of 8 unrolls, and differentiates
each summed term of the run's loss (`Learner.loss`, the learner's own time shift and correction) with respect to
every kernel. Per kernel and term:

- `norm`: the gradient's norm (the terms share one clip at --max_grad_norm, so a term's share of the norm is its
  share of the step);
- `coherence`: per output unit or channel, |2 · (share of its incoming weights with a positive gradient) − 1|,
  averaged over units — 1 when all of a unit's weights move the same way. A layer's inputs are ≥ 0 (pixels or
  ReLU outputs), so under RMSProp's sign-like steps a coherent unit's pre-activation moves on every input at once;
- `steady`: the share of units whose summed incoming gradient has the same sign in every batch — a drift rather
  than noise.

On Pong the baseline term dominates the first layer at initialisation with coherent, steady pushes (the value
targets sit near −2 while V ≈ 0): leaderboards/inputs/atari_tuning6/diagnosis/README.md reads the numbers.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

# impala_tf.config defines the training flags: --logdir and --seed are theirs.
from impala_tf import agent, checkpoints, config, rundir
from impala_tf import learner as learner_lib
from impala_tf.actor import snapshot_of
from impala_tf.unroll import stack_time_major

FLAGS = flags.FLAGS
TERMS = ("pg_loss", "baseline_loss", "entropy_loss")
NUM_ENVS = 8


def define_flags() -> None:
    # Defined only when run as a binary: importing this module (tests) must not clash with other flags.
    flags.DEFINE_string("checkpoint", None, "A checkpoint path, or `init` (default: the newest).")
    flags.DEFINE_integer("batches", 4, "Batches of 8 unrolls to differentiate the loss on.")


@dataclasses.dataclass(frozen=True)
class TermProfile:
    kernel: str
    term: str
    norm: float  # mean over batches of the gradient's norm
    coherence: float  # mean over units of |2 · P(g > 0) − 1| among a unit's incoming weights
    steady: float  # share of units whose summed incoming gradient keeps one sign in every batch


def profile(kernel: str, term: str, gradients: list[np.ndarray]) -> TermProfile:
    """Pure: one kernel's gradients under one term, one array per batch, output units on the last axis.
    A term that does not reach the kernel (all zeros) has no coherence (NaN) and no steady units."""
    flat = [g.reshape(-1, g.shape[-1]) for g in gradients]  # [fan_in, units]
    norm = np.mean([np.linalg.norm(g) for g in flat])
    if norm == 0:
        return TermProfile(kernel, term, 0.0, float("nan"), 0.0)
    coherence = np.mean([np.abs(2 * (g > 0).mean(axis=0) - 1).mean() for g in flat])
    signs = np.stack([np.sign(g.sum(axis=0)) for g in flat])  # [batches, units]
    steady = np.mean((np.abs(signs.sum(axis=0)) == len(flat)) & (signs[0] != 0))
    return TermProfile(kernel, term, float(norm), float(coherence), float(steady))


def _kernels(network) -> list:
    """The network's kernels (4-D conv and 2-D dense weights; biases have one axis), in their order."""
    return [v for v in network.trainable_variables if len(v.shape) >= 2]


def term_gradients(learner, batch) -> dict[str, list[tf.Tensor]]:
    """Each loss term's gradients with respect to the learner's kernels, in `_kernels`' order."""
    kernels = _kernels(learner.network)
    with tf.GradientTape(persistent=True) as tape:
        _, logs = learner.loss(batch)
    gradients = {}
    for term in TERMS:
        # A term that does not reach a kernel (the policy terms and the value head) gives None: zeros.
        grads = tape.gradient(logs[term], kernels)
        gradients[term] = [tf.zeros(v.shape) if g is None else g for g, v in zip(grads, kernels, strict=True)]
    del tape
    return gradients


def _kernel_names(network) -> list[str]:
    return [learner_lib.layer_name(v) or v.name for v in _kernels(network)]


def _main(run: Path, checkpoint: str | None, batches: int, seed: int) -> int:
    if not (run / "config.json").is_file():
        print(f"error: {run} has no config.json (not a run directory)", file=sys.stderr)
        return 1
    run_config = rundir.load_config(run)
    spec = dataclasses.replace(
        rundir.evaluation_spec(run_config, run / "config.json"), envs_per_actor=NUM_ENVS, inference_xla=False
    )
    if spec.use_lstm:
        print(
            "error: runs with an LSTM core are not supported (unrolls would need the core's state)",
            file=sys.stderr,
        )
        return 1
    keras.utils.set_random_seed(spec.seed)  # as the trainer seeds it: `init` is the run's own initialisation
    probe = agent.make_env(spec, [0], seed)
    network = agent.make_network(spec, probe)
    probe.close()
    label = "initialisation"
    try:
        if checkpoint != "init":
            path, frames = checkpoints.restore_network(run / "checkpoints", network, checkpoint)
            label = f"{path} ({frames:,} frames)"
    except checkpoints.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    learner = learner_lib.Learner(
        network,
        config.loss_config_from_flags(run_config["flags"]),
        learner_lib.OptimizerConfig(),
        total_frames=1,
        xla=False,
    )
    actor = agent.make_actor(
        dataclasses.replace(spec, seed=seed), 0, get_params=lambda: snapshot_of(network, 0), on_episode=None
    )
    unrolls = actor.unrolls()
    per_term: dict[str, list[list[np.ndarray]]] = {term: [] for term in TERMS}
    try:
        for _ in range(batches):
            gradients = term_gradients(learner, stack_time_major(next(unrolls)))
            for term in TERMS:
                per_term[term].append([g.numpy() for g in gradients[term]])
    finally:
        actor.env.close()
    games = ", ".join(sorted({spec.suite.games[task] for task in spec.task_ids(0)}))
    print(f"{run}: {label}, {batches} batches of {NUM_ENVS} unrolls of {games}")
    print("| kernel | term | gradient norm | coherence | steady units |")
    print("|---|---|---:|---:|---:|")
    for k, kernel in enumerate(_kernel_names(network)):
        for term in TERMS:
            row = profile(kernel, term, [batch[k] for batch in per_term[term]])
            coherence = "—" if np.isnan(row.coherence) else f"{row.coherence:.2f}"
            print(f"| {kernel} | {term} | {row.norm:.3g} | {coherence} | {row.steady:.0%} |")
    return 0


def main(argv: list[str]) -> int:
    del argv
    if not FLAGS.logdir:
        print("error: --logdir=RUN_DIR is required", file=sys.stderr)
        return 1
    if FLAGS.batches < 1:
        print(f"error: --batches must be >= 1, got {FLAGS.batches}", file=sys.stderr)
        return 1
    return _main(Path(FLAGS.logdir), FLAGS.checkpoint, FLAGS.batches, FLAGS.seed)


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
