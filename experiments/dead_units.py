"""Dead ReLU units of a run's torso: which units never fire on frames of the run's own games.

  python -m experiments.dead_units --logdir=RUN_DIR [--frames=800] [--seed=3]

Plays `--frames` observations of uniformly random play in the run's first game (one environment per 100 frames,
every third step kept) and runs the torso of the run's newest checkpoint, and of a freshly initialised network of
the same configuration, over them. Per ReLU layer: the fraction of channels (conv) or units (dense) active on at
least one frame and position, and the mean fraction of activations above zero. A unit off on every frame gets no
gradient and stays off; leaderboards/inputs/atari_tuning6/diagnosis/README.md reads Pong's numbers.
Shallow and MinAtar torsos (a chain of layers); the deep ResNet torso is not a chain and is refused.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

# impala_tf.evaluate imports the training flags: --logdir and --seed are theirs.
from impala_tf import agent, checkpoints, rundir
from impala_tf.evaluate import evaluation_spec

FLAGS = flags.FLAGS
_CHAINS = {"shallow": ("conv1", "conv2", "flatten", "fc"), "minatar": ("conv", "flatten", "fc")}


def define_flags() -> None:
    # Defined only when run as a binary: importing this module (tests) must not clash with other flags.
    flags.DEFINE_integer("frames", 800, "Observations to run the torso over.")


@dataclasses.dataclass(frozen=True)
class LayerActivity:
    layer: str
    ever_active: float  # fraction of channels / units > 0 on at least one frame and position
    mean_active: float  # fraction of all activations > 0


def layer_activity(torso, torso_name: str, observations: np.ndarray) -> list[LayerActivity]:
    """observations: uint8 [N, H, W, C], scaled as the network scales them. Returns one row per ReLU layer."""
    x = observations.astype(np.float32) / 255.0
    rows = []
    for name in _CHAINS[torso_name]:
        layer = getattr(torso, name)
        x = layer(x)
        if name == "flatten":
            continue
        h = x.numpy().reshape(len(observations), -1, x.shape[-1])  # [N, positions, channels]
        positive = h > 0
        rows.append(LayerActivity(name, float(positive.any(axis=(0, 1)).mean()), float(positive.mean())))
    return rows


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


def _main(run: Path, frames: int, seed: int) -> int:
    if not (run / "config.json").is_file():
        print(f"error: {run} has no config.json (not a run directory)", file=sys.stderr)
        return 1
    spec = evaluation_spec(rundir.load_config(run), run / "config.json")
    torso_name = spec.network_config(1).torso
    if torso_name not in _CHAINS:
        print(
            f"error: the {torso_name} torso is not a chain of layers; valid: {', '.join(_CHAINS)}",
            file=sys.stderr,
        )
        return 1
    observations = random_observations(spec, frames, seed)
    probe = agent.make_env(spec, [0], seed)
    trained, fresh = agent.make_network(spec, probe), agent.make_network(spec, probe)
    probe.close()
    try:
        _, trained_frames = checkpoints.restore_network(run / "checkpoints", trained)
    except checkpoints.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{run}: {len(observations)} frames of random play in {spec.suite.games[0]}")
    print("| network | layer | channels/units ever active | mean active fraction |")
    print("|---|---|---:|---:|")
    for label, network in (("initialisation", fresh), (f"{trained_frames / 1e6:.1f}M frames", trained)):
        for row in layer_activity(network.torso, torso_name, observations):
            print(f"| {label} | {row.layer} | {row.ever_active:.2f} | {row.mean_active:.3f} |")
    return 0


def main(argv: list[str]) -> int:
    del argv
    if not FLAGS.logdir:
        print("error: --logdir=RUN_DIR is required", file=sys.stderr)
        return 1
    if FLAGS.frames < 1:
        print(f"error: --frames must be >= 1, got {FLAGS.frames}", file=sys.stderr)
        return 1
    return _main(Path(FLAGS.logdir), FLAGS.frames, FLAGS.seed)


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
