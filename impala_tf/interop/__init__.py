"""Interoperability: the suites' environments for other agents, our exported policies for other frameworks.

  faces       `make_dm_env` (dm_env.Environment), `make_gym_vector_env` (gymnasium.vector.VectorEnv),
              `collect_game_scores` and `write_scores_csv` (a score file for `impala_tf.leaderboard --scores`)
  tf_agents   adapters for tf-agents (the optional extra `impala-tf[tf-agents]`, in its own venv): a suite
              environment as a PyEnvironment, an exported SavedModel policy as a TFPolicy. Importable without
              tf-agents; using it without tf-agents raises ImportError.

The exported policy itself is `impala_tf.export` (a TensorFlow SavedModel that needs nothing of this package).
"""

from impala_tf.interop.faces import (
    ImpalaVectorEnv,
    collect_game_scores,
    make_dm_env,
    make_gym_vector_env,
    write_scores_csv,
)

__all__ = [
    "ImpalaVectorEnv",
    "collect_game_scores",
    "make_dm_env",
    "make_gym_vector_env",
    "write_scores_csv",
]
