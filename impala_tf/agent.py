"""Building the agent's pieces from one picklable description of a run (used by the trainer, evaluation, export
and Ray actors alike, so that every process builds exactly the same environments and network)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from impala_tf import envs, networks
from impala_tf.actor import ActingPolicy, Actor, ParamSnapshot
from impala_tf.envs.base import BatchedEnv, EpisodeStats
from impala_tf.envs.wrappers import ScaledRewards


@dataclasses.dataclass(frozen=True)
class RunSpec:
    suite: Any  # suites.Suite (restricted to the run's games)
    protocol: str | None
    action_set: str | None
    seed: int
    network: str
    use_lstm: bool
    popart: bool
    reward_clipping: str
    unroll_length: int
    num_actors: int
    envs_per_actor: int
    env_threads: int = 0
    inference_xla: bool = True  # the actors' (and evaluation's) inference; the learner: config.use_xla
    reward_scale: tuple[tuple[str, float], ...] = ()  # (game, factor) pairs; see --reward_scale
    param_refresh_unrolls: int = 1  # actors fetch parameters every K-th unroll (deliberate staleness)
    synchronous: bool = False  # on-policy (batched A2C): each unroll waits for the learner's next parameters
    initializer: str = "glorot"  # networks.INITIALIZERS

    @property
    def num_tasks(self) -> int:
        return len(self.suite.games)

    def task_ids(self, actor_id: int) -> list[int]:
        """Tasks of this actor's environments: global environment k plays task k mod num_tasks, so every task is
        trained whenever num_actors * envs_per_actor >= num_tasks, in proportions `task_proportions` shows."""
        first = actor_id * self.envs_per_actor
        return [(first + i) % self.num_tasks for i in range(self.envs_per_actor)]

    def task_proportions(self) -> dict[str, float]:
        counts = np.zeros(self.num_tasks)
        for actor_id in range(self.num_actors):
            for task in self.task_ids(actor_id):
                counts[task] += 1
        return {game: counts[i] / counts.sum() for i, game in enumerate(self.suite.games)}

    def env_seed(self, actor_id: int, incarnation: int = 0) -> int:
        return (self.seed * 1_000_003 + actor_id * 7919 + incarnation * 104_729) % (2**31 - 1)

    def network_config(self, num_actions: int) -> networks.NetworkConfig:
        return networks.NetworkConfig(
            torso=self.network,
            use_lstm=self.use_lstm,
            num_actions=num_actions,
            num_value_heads=self.num_tasks if self.popart else 1,
            initializer=self.initializer,
        )


def make_env(
    spec: RunSpec, task_ids: list[int], seed: int, max_episode_frames: int | None = None
) -> BatchedEnv:
    env = envs.make_batched_env(
        spec.suite,
        task_ids,
        seed,
        protocol=spec.protocol,
        action_set=spec.action_set,
        num_threads=spec.env_threads,
        max_episode_frames=max_episode_frames,
    )
    if spec.reward_scale:
        scales = dict(spec.reward_scale)
        unknown = sorted(set(scales) - set(spec.suite.games))
        if unknown:
            raise ValueError(f"--reward_scale names games outside the suite: {', '.join(unknown)}")
        env = ScaledRewards(env, np.array([scales.get(g, 1.0) for g in spec.suite.games]))
    return env


def make_network(spec: RunSpec, env: BatchedEnv) -> networks.ImpalaNetwork:
    config = spec.network_config(env.action_spec().num_values)
    network = networks.make_network(
        config, tuple(env.observation_spec().shape), legal_action_mask=env.legal_action_mask()
    )
    # Build the variables so that snapshots can be assigned before the first step.
    network.initial_state(1)
    n = 1
    obs = np.zeros((n, *env.observation_spec().shape), np.uint8)
    zeros = np.zeros(n, np.int32)
    network.step(obs, zeros, np.zeros(n, np.float32), np.zeros(n, np.uint8), zeros, network.initial_state(n))
    return network


def make_actor(
    spec: RunSpec,
    actor_id: int,
    get_params: Callable[[], ParamSnapshot] | None,
    on_episode: Callable[[EpisodeStats], None] | None,
    incarnation: int = 0,
) -> Actor:
    seed = spec.env_seed(actor_id, incarnation)
    env = make_env(spec, spec.task_ids(actor_id), seed)
    policy = ActingPolicy(make_network(spec, env), seed=seed, xla=spec.inference_xla)
    return Actor(
        env,
        policy,
        spec.unroll_length,
        get_params=get_params,
        on_episode=on_episode,
        param_refresh_unrolls=spec.param_refresh_unrolls,
        synchronous=spec.synchronous,
    )
