"""Train a suite with a deliberately stale behaviour policy: the V-trace vs no-correction ablation.

  python -m experiments.policy_lag --suite=catch --logdir=DIR --param_refresh_unrolls=40 --correction=none

Every flag of the suite binaries applies (impala_tf/config.py). `--param_refresh_unrolls=K` makes each actor
fetch the learner's parameters only after every K-th batch of unrolls. A fetch gets the learner's newest
parameters, and the learner makes about num_actors·envs_per_actor/batch_size updates while an actor makes one
batch, so the unrolls the learner sees come from a policy about K·num_actors·envs_per_actor/batch_size/2
updates old (plus what the queue buffers); the trainer logs the mean lag (`lag` in the progress lines,
`perf/policy_lag` in TensorBoard). Catch (2 actors x 8 envs, batch 16) at K=40: about 18.

The suite binaries take the flag directly once the trainer passes it to the actors (RunSpec ->
agent.make_actor -> Actor(param_refresh_unrolls=...)); until then this driver applies it to each actor the
runtime builds (local runtime only).
"""

from __future__ import annotations

import sys

from absl import flags

from impala_tf import agent, trainer

FLAGS = flags.FLAGS


def _stale_actors(make_actor):
    def make(spec, actor_id, get_params, on_episode, incarnation=0):
        actor = make_actor(spec, actor_id, get_params, on_episode, incarnation)
        if not hasattr(spec, "param_refresh_unrolls"):  # not wired by the trainer: apply the flag here
            actor.param_refresh_unrolls = FLAGS.param_refresh_unrolls
        return actor

    return make


def suite_from_argv(argv: list[str]) -> str:
    for arg in argv:
        if arg.startswith("--suite="):
            return arg.split("=", 1)[1]
    raise SystemExit("error: --suite=NAME is required (a built-in suite: its binary's defaults apply)")


if __name__ == "__main__":
    agent.make_actor = _stale_actors(agent.make_actor)
    trainer.main_for_suite(suite_from_argv(sys.argv))
