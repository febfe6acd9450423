"""impala-tf: IMPALA (Espeholt et al. 2018) in TensorFlow 2, as a multi-task Atari benchmark suite."""

import os

# TensorFlow's BFC allocator on the CPU (read at TensorFlow's first op, so set here, before any). The default
# allocator returns freed buffers to the kernel (tf.data lowers glibc's trim threshold), and the MinAtar learner
# then spends a third of its CPU faulting pages back in: ~125K minor faults/s, BFC 18K/s and the loop ~40 % faster
# (bench/NOTES.md). An explicit TF_CPU_ALLOCATOR_USE_BFC=false in the environment still wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

__version__ = "0.1.0"
