"""Scores of the uniformly random policy on MinAtar: the `low` column of the MinAtar normaliser.

  python -m experiments.minatar_random_scores --episodes=1000 --seed=0 [--out=FILE.csv]

Each game plays `--episodes` whole games, each action drawn uniformly from the game's minimal action set (as
MinAtar's own examples/random_play.py does), under the suite's environment settings (sticky actions 0.1,
difficulty ramping). Prints and optionally writes `game, mean, stderr, episodes` (atomically).
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

from impala_tf import writers
from impala_tf.envs.minatar import GAMES, MinAtarBatchedEnv

FLAGS = flags.FLAGS


def define_flags() -> None:
    # Defined only when run as a binary: importing this module (tests) must not clash with other flags.
    flags.DEFINE_integer("episodes", 1000, "Games per MinAtar game.")
    flags.DEFINE_integer("seed", 0, "Seed of the environments and of the random actions.")
    flags.DEFINE_integer("batch", 50, "Environments stepped together.")
    flags.DEFINE_string("out", None, "CSV to write (game, mean, stderr, episodes).")


def random_policy_returns(game: str, episodes: int, seed: int, batch: int = 50) -> np.ndarray:
    """Returns [episodes] of the uniform random policy over `game`'s legal actions.

    Every environment plays the same number of games, counted from its start: keeping the first `episodes` to
    finish anywhere would favour short (low-scoring) games."""
    batch = min(batch, episodes)
    if episodes % batch:
        raise ValueError(f"episodes ({episodes}) must be a multiple of batch ({batch})")
    per_env = episodes // batch
    rng = np.random.default_rng(seed)
    env = MinAtarBatchedEnv([game], [0] * batch, seed)
    legal = np.flatnonzero(env.legal_action_mask()[0])
    returns: list[list[float]] = [[] for _ in range(batch)]
    env.reset()
    while min(len(r) for r in returns) < per_env:
        env.step(rng.choice(legal, size=batch).astype(np.int32))
        for episode in env.pop_finished_episodes():
            if len(returns[episode.env_index]) < per_env:
                returns[episode.env_index].append(episode.episode_return)
    return np.array(returns).ravel()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.episodes < 2 or FLAGS.batch < 1:
        raise app.UsageError("--episodes must be >= 2 and --batch >= 1")
    rows = []
    for i, game in enumerate(GAMES):
        returns = random_policy_returns(game, FLAGS.episodes, FLAGS.seed + i, FLAGS.batch)
        stderr = returns.std(ddof=1) / np.sqrt(len(returns))
        rows.append([game, f"{returns.mean():.4f}", f"{stderr:.4f}", len(returns)])
        print(f"{game:<15} {returns.mean():8.3f} ± {stderr:.3f}  ({len(returns)} games)", flush=True)
    if FLAGS.out:
        writers.atomic_write_text(FLAGS.out, writers.csv_text(rows, ["game", "mean", "stderr", "episodes"]))


if __name__ == "__main__":
    define_flags()
    app.run(main)
