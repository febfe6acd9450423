"""impala-tf: IMPALA (Espeholt et al. 2018) in TensorFlow 2, as a multi-task Atari benchmark suite."""

__version__ = "0.1.0"
