"""impala-tf: IMPALA (Espeholt et al. 2018) in TensorFlow 2, as a multi-task Atari benchmark suite."""

import os

# TensorFlow's BFC allocator on the CPU (read at TensorFlow's first op, so set here, before any). Measured when the
# learner's batches still went through tf.data, which lowers glibc's trim threshold: the default allocator returned
# freed buffers to the kernel and the replaying MinAtar loop spent a third of its CPU faulting pages back in (~125K
# minor faults/s, 18K/s with BFC, the loop ~40 % faster; bench/NOTES.md). Not re-measured since the batches moved to
# a thread. An explicit TF_CPU_ALLOCATOR_USE_BFC=false in the environment still wins.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

__version__ = "0.1.0"
