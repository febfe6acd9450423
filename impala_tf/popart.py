"""PopArt: per-task value normalisation (Hessel et al. 2019, "Multi-task Deep RL with PopArt").

Each task i keeps running moments of its value targets, μ_i (first) and ν_i (second), and a scale
σ_i = sqrt(ν_i − μ_i²) bounded to [σ_min, σ_max]. The value head has one output per task and predicts the
*normalised* value ñ_i(x); the unnormalised value is V_i(x) = σ_i ñ_i(x) + μ_i. After every update of the
statistics the head's last layer is rescaled (Preserving Outputs Precisely, paper equation 6) so that V_i(x)
is unchanged for every input x; the loss then works on normalised quantities (see `losses.impala_loss`).

Pure maths on tensors: `mu`, `nu`, `sigma` are float32 `[num_tasks]`.
"""

from __future__ import annotations

import tensorflow as tf

STEP_SIZE = 3e-4  # β of the paper's statistics update
SIGMA_MIN = 1e-4
SIGMA_MAX = 1e6


def normalise(values: tf.Tensor, mu: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """(v − μ) / σ: unnormalised values to the value head's scale. μ, σ broadcast against v (e.g. [B] vs [T, B])."""
    return (values - mu) / sigma


def denormalise(values: tf.Tensor, mu: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """σ ñ + μ: the value head's normalised outputs back to unnormalised values (the inverse of `normalise`)."""
    return sigma * values + mu


def initial_statistics(num_tasks: int) -> tuple[tf.Tensor, tf.Tensor]:
    """μ = 0, ν = 1 for every task, so that σ = 1 and normalised values equal unnormalised ones at start.

    Returns:
      (mu [num_tasks], nu [num_tasks]) float32.
    """
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks}")
    return tf.zeros([num_tasks], tf.float32), tf.ones([num_tasks], tf.float32)


def sigma_from_moments(
    mu: tf.Tensor, nu: tf.Tensor, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX
) -> tf.Tensor:
    """σ = sqrt(ν − μ²), bounded to [sigma_min, sigma_max]. Shapes `[num_tasks]`.

    The bound keeps σ positive when ν − μ² rounds to ≤ 0 and stops one task's outliers from crushing its head.
    """
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    variance = tf.clip_by_value(nu - tf.square(mu), sigma_min**2, sigma_max**2)
    return tf.sqrt(variance)


def update_statistics(
    mu: tf.Tensor,
    nu: tf.Tensor,
    targets: tf.Tensor,
    task_ids: tf.Tensor,
    mask: tf.Tensor,
    step_size: float = STEP_SIZE,
    num_tasks: int | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Moves each task's moments towards the mean of that task's targets in this batch.

    μ_i ← (1 − β) μ_i + β mean(v),   ν_i ← (1 − β) ν_i + β mean(v²),

    the means over the unmasked targets v of the unrolls with task_ids == i. Tasks absent from the batch (or
    with every step masked) keep their statistics.

    Args:
      mu, nu: float32 [num_tasks] current moments.
      targets: float32 [T, B] unnormalised value targets (the V-trace vs).
      task_ids: int32 [B] task of each unroll.
      mask: float32 [T, B] 1 for real transitions, 0 for steps to ignore.
      step_size: β in (0, 1].
      num_tasks: number of tasks; defaults to the static length of `mu`.

    Returns:
      (new mu, new nu), float32 [num_tasks].
    """
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    mu = tf.convert_to_tensor(mu, tf.float32)
    nu = tf.convert_to_tensor(nu, tf.float32)
    targets = tf.stop_gradient(tf.convert_to_tensor(targets, tf.float32))
    mask = tf.convert_to_tensor(mask, tf.float32)
    task_ids = tf.convert_to_tensor(task_ids, tf.int32)
    if num_tasks is None:
        num_tasks = mu.shape[0]
        if num_tasks is None:
            raise ValueError("num_tasks must be given when mu has no static length")

    # Per unroll sums over time, then per task sums over the unrolls of that task.
    count = tf.math.unsorted_segment_sum(tf.reduce_sum(mask, 0), task_ids, num_tasks)
    sum_v = tf.math.unsorted_segment_sum(tf.reduce_sum(mask * targets, 0), task_ids, num_tasks)
    sum_v2 = tf.math.unsorted_segment_sum(tf.reduce_sum(mask * tf.square(targets), 0), task_ids, num_tasks)
    present = count > 0
    safe_count = tf.maximum(count, 1.0)
    beta = tf.where(present, tf.cast(step_size, tf.float32), 0.0)
    new_mu = (1.0 - beta) * mu + beta * (sum_v / safe_count)
    new_nu = (1.0 - beta) * nu + beta * (sum_v2 / safe_count)
    return new_mu, new_nu


def preserve_outputs(
    kernel: tf.Tensor,
    bias: tf.Tensor,
    mu_old: tf.Tensor,
    sigma_old: tf.Tensor,
    mu_new: tf.Tensor,
    sigma_new: tf.Tensor,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Rescales the normalised value head so that σ ñ(x) + μ is unchanged by a statistics update (eq. 6).

    w_i ← σ_old,i / σ_new,i · w_i,    b_i ← (σ_old,i b_i + μ_old,i − μ_new,i) / σ_new,i.

    Args:
      kernel: float32 [F, K] last-layer weights; column i is task i's head (K = num_tasks).
      bias: float32 [K].
      mu_old, sigma_old, mu_new, sigma_new: float32 [K].

    Returns:
      (new kernel [F, K], new bias [K]).
    """
    kernel = tf.convert_to_tensor(kernel, tf.float32)
    bias = tf.convert_to_tensor(bias, tf.float32)
    kernel.shape.assert_has_rank(2)
    if not bias.shape.is_compatible_with(kernel.shape[1:]):
        raise ValueError(f"bias has shape {bias.shape}, expected [K] with K = {kernel.shape[1]}")
    new_kernel = kernel * (sigma_old / sigma_new)
    new_bias = (sigma_old * bias + mu_old - mu_new) / sigma_new
    return new_kernel, new_bias
