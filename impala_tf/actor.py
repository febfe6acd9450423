"""The acting loop: a batch of environments, a (possibly stale) copy of the policy, fixed-length unrolls.

An actor steps N environments with batched inference and emits one `Unroll` of T+1 steps per environment every T
steps (step 0 repeats the previous unroll's last step; step T is the bootstrap step). It knows nothing of queues,
threads or Ray: the runtime moves what it yields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from impala_tf.compiled import CompiledFunction
from impala_tf.envs.base import BatchedEnv, BatchedTimeStep, EpisodeStats, StepType
from impala_tf.unroll import Unroll


class ParamSnapshot(NamedTuple):
    """The learner's parameters after `version` updates, as host arrays (one per network variable)."""

    version: int
    weights: tuple[np.ndarray, ...]


class ActingPolicy:
    """A private copy of the network, refreshed from snapshots, with a compiled batched step that samples.

    `step` takes and returns numpy: observations stay uint8 until the network's first layer.
    """

    def __init__(self, network: tf.Module, seed: int, xla: bool = True):
        self.network = network
        self.version = -1
        self._seed = np.array([seed % 2**31, 0], np.int32)  # XLA's stateless sampling takes int32 seeds
        self._calls = 0
        self._step = CompiledFunction(self._step_impl, jit_compile=xla)

    def _step_impl(self, observation, prev_action, reward, step_type, task_id, state, seed):
        output, new_state = self.network.step(observation, prev_action, reward, step_type, task_id, state)
        action = tf.random.stateless_categorical(output.policy_logits, 1, seed=seed, dtype=tf.int32)[:, 0]
        return action, output.policy_logits, new_state

    def initial_state(self, batch_size: int) -> np.ndarray:
        return self.network.initial_state(batch_size).numpy()

    def set_weights(self, snapshot: ParamSnapshot) -> None:
        if snapshot.version == self.version:
            return
        for variable, value in zip(self.network.variables, snapshot.weights, strict=True):
            variable.assign(value)
        self.version = snapshot.version

    def step(self, timestep: BatchedTimeStep, prev_action, task_id, state):
        """Returns (action int32 [N], behaviour_logits float32 [N, A], new_state [2, N, H])."""
        self._calls += 1
        self._seed[1] = self._calls % 2**31
        action, logits, new_state = self._step(
            timestep.observation, prev_action, timestep.reward, timestep.step_type, task_id, state, self._seed
        )
        return action.numpy(), logits.numpy(), new_state.numpy()


def snapshot_of(network: tf.Module, version: int) -> ParamSnapshot:
    return ParamSnapshot(version, tuple(v.numpy() for v in network.variables))


class Actor:
    """Runs `env` with `policy`; `unrolls()` yields, every T steps, one Unroll per environment.

    `param_refresh_unrolls` = K > 1 fetches the learner's parameters only after every K-th batch of unrolls
    instead of after each: a deliberately stale behaviour policy, for off-policy-correction experiments.

    `synchronous`: after each refresh the action of the unroll's step 0 (chosen with the old parameters at the
    previous unroll's bootstrap step, where the loss does not use it) is chosen again with the new ones, so that
    every action of an unroll comes from the parameters its `policy_version` names: policy lag exactly 0 when
    `get_params` waits for the learner's next update (batched A2C).
    """

    def __init__(
        self,
        env: BatchedEnv,
        policy: ActingPolicy,
        unroll_length: int,
        get_params: Callable[[], ParamSnapshot] | None = None,
        on_episode: Callable[[EpisodeStats], None] | None = None,
        param_refresh_unrolls: int = 1,
        synchronous: bool = False,
    ):
        if param_refresh_unrolls < 1:
            raise ValueError(f"param_refresh_unrolls must be >= 1, got {param_refresh_unrolls}")
        self.env = env
        self.policy = policy
        self.unroll_length = unroll_length
        self._get_params = get_params
        self._on_episode = on_episode
        self.param_refresh_unrolls = param_refresh_unrolls
        self.synchronous = synchronous
        self.steps = 0  # agent steps over all environments

    def unrolls(self) -> Iterator[list[Unroll]]:
        env, policy, T = self.env, self.policy, self.unroll_length
        n = env.num_envs
        obs_spec, num_actions = env.observation_spec(), env.action_spec().num_values
        task_id = env.task_ids.astype(np.int32)
        self._refresh()

        timestep = env.reset()
        prev_action = np.zeros(n, np.int32)
        state = policy.initial_state(n)
        state_before = state
        action, logits, state = policy.step(timestep, prev_action, task_id, state)
        unrolls_done = 0
        while True:
            observation = np.empty((T + 1, n, *obs_spec.shape), np.uint8)
            step_type = np.empty((T + 1, n), np.uint8)
            reward = np.empty((T + 1, n), np.float32)
            discount = np.empty((T + 1, n), np.float32)
            prev_actions = np.empty((T + 1, n), np.int32)
            actions = np.empty((T + 1, n), np.int32)
            behaviour_logits = np.empty((T + 1, n, num_actions), np.float32)
            agent_state = state_before
            version = policy.version
            for t in range(T + 1):
                if t > 0:
                    timestep = env.step(action)
                    self.steps += n
                    prev_action = np.where(timestep.step_type == StepType.FIRST, 0, action).astype(np.int32)
                    state_before = state
                    action, logits, state = policy.step(timestep, prev_action, task_id, state)
                    if self._on_episode is not None:
                        for episode in env.pop_finished_episodes():
                            self._on_episode(episode)
                observation[t] = timestep.observation
                step_type[t] = timestep.step_type
                reward[t] = timestep.reward
                discount[t] = timestep.discount
                prev_actions[t] = prev_action
                actions[t] = action
                behaviour_logits[t] = logits
            yield [
                Unroll(
                    observation=observation[:, i],
                    step_type=step_type[:, i],
                    reward=reward[:, i],
                    discount=discount[:, i],
                    prev_action=prev_actions[:, i],
                    action=actions[:, i],
                    behaviour_logits=behaviour_logits[:, i],
                    task_id=task_id[i],
                    agent_state=agent_state[:, i],
                    policy_version=np.int64(version),
                )
                for i in range(n)
            ]
            # Step T is step 0 of the next unroll: its action was already chosen (with the old parameters, which
            # its behaviour logits record), so refreshing here is exact.
            unrolls_done += 1
            if unrolls_done % self.param_refresh_unrolls == 0:
                self._refresh()
                if self.synchronous:
                    action, logits, state = policy.step(timestep, prev_action, task_id, state_before)

    def _refresh(self) -> None:
        if self._get_params is not None:
            self.policy.set_weights(self._get_params())
