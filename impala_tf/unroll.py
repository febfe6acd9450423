"""The Unroll: the one contract between actors and the learner.

An actor emits one `Unroll` per environment every T steps. It holds T+1 steps: step 0 is the last step of the
previous unroll (so consecutive unrolls overlap by one step) and step T is the bootstrap step. Environment steps
follow dm-env semantics (FIRST, MID, LAST; after a LAST the next step is the FIRST of a new episode and the action
taken at the LAST step is ignored by the environment).

Per step t the fields mean:
  observation[t]       uint8 [*obs_shape]  what the agent saw at t
  step_type[t]         uint8               dm_env.StepType of t
  reward[t]            float32             raw (unclipped) reward received on arriving at t (0 at FIRST)
  discount[t]          float32             environment discount on arriving at t: 0 where t ended a learning
                                           episode by termination, 1 otherwise (FIRST steps carry 0)
  prev_action[t]       int32               action taken at t-1 (0 at FIRST): an input of the LSTM core
  action[t]            int32               action the behaviour policy took at t
  behaviour_logits[t]  float32 [A]         logits of the behaviour policy at t

and per unroll:
  task_id              int32 []            index of the task (game) in the suite
  agent_state          float32 [2, H]      (h, c) of the LSTM core before step 0; H = 0 without an LSTM
  policy_version       int64 []            learner update count of the parameters that acted (policy lag)

The learner stacks B unrolls along axis 1: every field becomes time-major `[T+1, B, ...]` (task_id,
policy_version `[B]`, agent_state `[2, B, H]`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Unroll(NamedTuple):
    observation: np.ndarray
    step_type: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    prev_action: np.ndarray
    action: np.ndarray
    behaviour_logits: np.ndarray
    task_id: np.ndarray
    agent_state: np.ndarray
    policy_version: np.ndarray


# Fields with a leading time axis; the others are per unroll.
TIME_FIELDS = ("observation", "step_type", "reward", "discount", "prev_action", "action", "behaviour_logits")


def unroll_dtypes() -> Unroll:
    return Unroll(
        observation=np.uint8,
        step_type=np.uint8,
        reward=np.float32,
        discount=np.float32,
        prev_action=np.int32,
        action=np.int32,
        behaviour_logits=np.float32,
        task_id=np.int32,
        agent_state=np.float32,
        policy_version=np.int64,
    )


def batch_axis(name: str) -> int:
    """Where a field's batch axis B sits in a learner batch: after time (and agent_state's h/c axis), else first."""
    return 1 if name in (*TIME_FIELDS, "agent_state") else 0


def stack_time_major(unrolls: list[Unroll]) -> Unroll:
    """Stacks B unrolls into one time-major batch: time fields `[T+1, B, ...]`, others `[B, ...]`.

    agent_state becomes `[2, B, H]` so that `state[0]` and `state[1]` are the batched h and c.
    """
    return Unroll(
        **{
            name: np.stack([getattr(u, name) for u in unrolls], axis=batch_axis(name))
            for name in Unroll._fields
        }
    )
