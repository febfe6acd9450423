"""Dead ReLU units of a run's torso: which units never fire on frames of the run's own games.

  python -m experiments.dead_units --logdir=RUN_DIR [--frames=800] [--seed=3] [--all_checkpoints]

Plays `--frames` observations of uniformly random play in the run's first game (one environment per 100 frames,
every third step kept) and runs the torso of the run's newest checkpoint, and of the run's initialisation (the same
configuration and seed; runs trained before the trainer seeded Keras started from other weights), over them. Per
ReLU layer: the fraction of channels (conv) or units (dense) active on at least one frame and position, the mean
fraction of activations above zero, and the frame spread (the mean over units and positions of the activation's
standard deviation over frames: 0 when the layer's output is the same on every frame). For the last layer also the share of its live units whose value-head weight is negative: when a
game's returns are negative, V falls first by switching off the units that add to it.
`--all_checkpoints` prints one row per kept checkpoint instead (train with `--keep_checkpoints` high and a short
`--checkpoint_every_secs` to see when units die). A unit off on every frame gets no gradient and stays off while
the layers below it do not change; leaderboards/inputs/atari_tuning6/diagnosis/README.md reads Pong's numbers.
Shallow and MinAtar torsos (a chain of layers); the deep ResNet torso is not a chain and is refused.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np
from absl import app, flags

# rundir imports impala_tf.config, the training flags: --logdir and --seed are theirs.
from impala_tf import agent, checkpoints, rundir

FLAGS = flags.FLAGS
_CHAINS = {"shallow": ("conv1", "conv2", "flatten", "fc"), "minatar": ("conv", "flatten", "fc")}


def define_flags() -> None:
    # Defined only when run as a binary: importing this module (tests) must not clash with other flags.
    flags.DEFINE_integer("frames", 800, "Observations to run the torso over.")
    flags.DEFINE_bool("all_checkpoints", False, "One row per kept checkpoint, oldest first.")


@dataclasses.dataclass(frozen=True)
class LayerActivity:
    layer: str
    ever_active: float  # fraction of channels / units > 0 on at least one frame and position
    mean_active: float  # fraction of all activations > 0
    frame_spread: float  # mean over units and positions of the activation's std over frames


def _activations(torso, torso_name: str, observations: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(layer, float32 [N, positions, channels]) for each ReLU layer, observations uint8 [N, H, W, C]."""
    x = observations.astype(np.float32) / 255.0  # as the network scales them
    out = []
    for name in _CHAINS[torso_name]:
        x = getattr(torso, name)(x)
        if name != "flatten":
            out.append((name, x.numpy().reshape(len(observations), -1, x.shape[-1])))
    return out


def layer_activity(torso, torso_name: str, observations: np.ndarray) -> list[LayerActivity]:
    """observations: uint8 [N, H, W, C]. Returns one row per ReLU layer."""
    rows = []
    for name, h in _activations(torso, torso_name, observations):
        positive = h > 0
        rows.append(
            LayerActivity(
                name,
                float(positive.any(axis=(0, 1)).mean()),
                float(positive.mean()),
                float(h.std(axis=0).mean()),
            )
        )
    return rows


def negative_value_share(network, torso_name: str, observations: np.ndarray) -> float:
    """Of the last torso layer's units that fire on some frame, the share whose weight into the first value head
    is negative (NaN when none fires). Needs a network without LSTM core: the heads read the torso directly."""
    _, h = _activations(network.torso, torso_name, observations)[-1]
    live = (h > 0).any(axis=(0, 1))
    weights = network.value_kernel.numpy()[: len(live), 0]
    return float(np.mean(weights[live] < 0)) if live.any() else float("nan")


def random_observations(spec, frames: int, seed: int) -> np.ndarray:
    """uint8 [frames, H, W, C]: every third observation of uniformly random play in the spec's first game."""
    num_envs = max(1, frames // 100)
    env = agent.make_env(spec, [0] * num_envs, seed)
    rng = np.random.default_rng(seed)
    legal = np.flatnonzero(env.legal_action_mask()[0])
    kept = []
    try:
        env.reset()
        while sum(len(k) for k in kept) < frames:
            for _ in range(3):
                timestep = env.step(rng.choice(legal, num_envs).astype(np.int32))
            kept.append(np.asarray(timestep.observation))
    finally:
        env.close()
    return np.concatenate(kept)[:frames]


def _main(run: Path, frames: int, seed: int, all_checkpoints: bool = False) -> int:
    if not (run / "config.json").is_file():
        print(f"error: {run} has no config.json (not a run directory)", file=sys.stderr)
        return 1
    spec = rundir.evaluation_spec(rundir.load_config(run), run / "config.json")
    config = spec.network_config(1)
    if config.torso not in _CHAINS or config.use_lstm:
        print(
            f"error: only LSTM-free {', '.join(_CHAINS)} torsos (a chain of layers that the heads read); "
            f"this run has {config.torso}{' with an LSTM' if config.use_lstm else ''}",
            file=sys.stderr,
        )
        return 1
    paths = checkpoints.checkpoint_paths(run / "checkpoints")
    if not paths:
        print(f"error: no checkpoint in {run / 'checkpoints'}", file=sys.stderr)
        return 1
    observations = random_observations(spec, frames, seed)
    probe = agent.make_env(spec, [0], seed)
    keras.utils.set_random_seed(spec.seed)  # as the trainer seeds it: `fresh` is the run's own initialisation
    fresh, trained = agent.make_network(spec, probe), agent.make_network(spec, probe)
    probe.close()
    print(f"{run}: {len(observations)} frames of random play in {spec.suite.games[0]}")
    try:
        if all_checkpoints:
            _print_history(run, paths, trained, config.torso, observations)
        else:
            _, trained_frames = checkpoints.restore_network(run / "checkpoints", trained)
            _print_table(
                [("initialisation", fresh), (f"{trained_frames / 1e6:.1f}M frames", trained)],
                config.torso,
                observations,
            )
    except checkpoints.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


def _print_table(networks, torso_name: str, observations: np.ndarray) -> None:
    print("| network | layer | channels/units ever active | mean active fraction | frame spread |")
    print("|---|---|---:|---:|---:|")
    for label, network in networks:
        for row in layer_activity(network.torso, torso_name, observations):
            print(
                f"| {label} | {row.layer} | {row.ever_active:.2f} | {row.mean_active:.3f} | {row.frame_spread:.4f} |"
            )
    for label, network in networks:
        share = negative_value_share(network, torso_name, observations)
        print(
            f"{label}: {share:.0%} of the live {_CHAINS[torso_name][-1]} units have a negative value weight"
        )


def _print_history(run: Path, paths: list[str], network, torso_name: str, observations: np.ndarray) -> None:
    layers = [name for name in _CHAINS[torso_name] if name != "flatten"]
    last = layers[-1]
    print(
        "| frames | "
        + " | ".join(f"{name} alive" for name in layers)
        + f" | {last} frame spread | live {last} units with negative value weight |"
    )
    print("|---:|" + "---:|" * (len(layers) + 2))
    for path in paths:
        _, num_frames = checkpoints.restore_network(run / "checkpoints", network, path)
        rows = layer_activity(network.torso, torso_name, observations)
        share = negative_value_share(network, torso_name, observations)
        alive = " | ".join(f"{row.ever_active:.2f}" for row in rows)
        print(f"| {num_frames:,} | {alive} | {rows[-1].frame_spread:.4f} | {share:.0%} |")


def main(argv: list[str]) -> int:
    del argv
    if not FLAGS.logdir:
        print("error: --logdir=RUN_DIR is required", file=sys.stderr)
        return 1
    if FLAGS.frames < 1:
        print(f"error: --frames must be >= 1, got {FLAGS.frames}", file=sys.stderr)
        return 1
    return _main(Path(FLAGS.logdir), FLAGS.frames, FLAGS.seed, FLAGS.all_checkpoints)


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
