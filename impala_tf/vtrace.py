"""V-trace off-policy actor-critic targets (Espeholt et al. 2018, "IMPALA", section 4).

All tensors are time-major: `[T, B]` for per-step quantities, `[B]` for the bootstrap value at step T. Step t
describes the transition x_t -> x_{t+1}: `rewards[t]` is r_t and `discounts[t]` is γ_t, the discount of that
transition *including* the agent's γ (e.g. 0.99 · environment discount, so 0 where an episode ended).

With ρ_t = min(ρ̄, π(a_t|x_t) / μ(a_t|x_t)) and c_i = min(c̄, π(a_i|x_i) / μ(a_i|x_i)), the n-step V-trace
target (paper equation 1) is

    v_s = V(x_s) + Σ_{t=s}^{T-1} (Π_{i=s}^{t-1} γ_i c_i) δ_t V,   δ_t V = ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t))

with V(x_T) = bootstrap_value. With λ < 1 the traces become c_i = λ · min(c̄, π/μ) (paper section 4.1, the
remark on mixing V-trace with TD(λ)): λ = 1 is the paper's V-trace, λ = 0 one-step TD targets. It obeys the
backward recursion (paper remark 1)

    v_s − V(x_s) = δ_s V + γ_s c_s (v_{s+1} − V(x_{s+1})),      v_T − V(x_T) = 0,

which is what is computed here. The policy-gradient advantage (paper section 4.2) is

    A_s = ρ^pg_s (r_s + γ_s v_{s+1} − V(x_s)),      ρ^pg_s = min(ρ̄_pg, π/μ),  v_T = V(x_T).

Targets are constants for the learner: gradients are stopped on every output.
"""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class VTraceReturns(NamedTuple):
    vs: tf.Tensor  # float32 [T, B]   V-trace value targets v_s
    pg_advantages: tf.Tensor  # float32 [T, B]   ρ^pg_s (r_s + γ_s v_{s+1} − V(x_s))


class VTraceFromLogitsReturns(NamedTuple):
    vs: tf.Tensor  # float32 [T, B]
    pg_advantages: tf.Tensor  # float32 [T, B]
    log_rhos: tf.Tensor  # float32 [T, B]   log π(a_t|x_t) − log μ(a_t|x_t)
    behaviour_action_log_probs: tf.Tensor  # float32 [T, B]   log μ(a_t|x_t)
    target_action_log_probs: tf.Tensor  # float32 [T, B]   log π(a_t|x_t), gradients NOT stopped


def action_log_probs(policy_logits: tf.Tensor, actions: tf.Tensor) -> tf.Tensor:
    """log π(a_t|x_t) of a softmax policy.

    Args:
      policy_logits: float32 [T, B, A] unnormalised log-probabilities.
      actions: int32 [T, B] indices into the last axis of `policy_logits`.

    Returns:
      float32 [T, B] log-probabilities of `actions` (differentiable w.r.t. the logits).
    """
    return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=policy_logits)


def _check_threshold(name: str, value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"{name} must be a positive number or None (no clipping), got {value!r}")


def _clip(ratios: tf.Tensor, threshold: float | None) -> tf.Tensor:
    return ratios if threshold is None else tf.minimum(tf.cast(threshold, ratios.dtype), ratios)


def _backward_recurrence(deltas: tf.Tensor, decays: tf.Tensor) -> tf.Tensor:
    """Solves a_s = deltas_s + decays_s · a_{s+1} backwards from a_T = 0. Shapes `[T, B]`.

    A reverse `tf.scan` rather than a Python loop unrolled over a static T: under XLA (CPU, T=20, B=32) the
    two tie on one call (~140 us, dispatch-bound) and the scan is faster once dispatch is amortised (7.5 vs
    9.3 us per V-trace); the scan also handles a dynamic T.
    """
    return tf.scan(
        lambda acc, step: step[0] + step[1] * acc,
        elems=(deltas, decays),
        initializer=tf.zeros_like(deltas[0]),
        reverse=True,
    )


def from_importance_weights(
    log_rhos: tf.Tensor,
    discounts: tf.Tensor,
    rewards: tf.Tensor,
    values: tf.Tensor,
    bootstrap_value: tf.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceReturns:
    """V-trace targets and policy-gradient advantages from log importance weights (paper equation 1).

    Args:
      log_rhos: float32 [T, B] log π(a_t|x_t) − log μ(a_t|x_t). A large negative value (ρ = c = 0) makes
        v_t = V(x_t) and cuts the trace there.
      discounts: float32 [T, B] γ_t of transition t -> t+1, the agent's discount already included.
      rewards: float32 [T, B] r_t.
      values: float32 [T, B] V(x_t).
      bootstrap_value: float32 [B] V(x_T).
      clip_rho_threshold: ρ̄ in ρ_t = min(ρ̄, π/μ); None disables clipping.
      clip_pg_rho_threshold: ρ̄_pg of the policy-gradient weight; None disables clipping.
      clip_c_threshold: c̄ in c_i = min(c̄, π/μ) (the paper uses 1); None disables clipping.
      lambda_: λ in c_i = λ · min(c̄, π/μ) (the paper's section 4.1 remark); 1 is V-trace as in equation 1.

    Returns:
      VTraceReturns(vs [T, B], pg_advantages [T, B]), both with gradients stopped.
    """
    _check_threshold("clip_rho_threshold", clip_rho_threshold)
    _check_threshold("clip_pg_rho_threshold", clip_pg_rho_threshold)
    _check_threshold("clip_c_threshold", clip_c_threshold)
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ must be in [0, 1], got {lambda_!r}")
    # Stopping gradients at the inputs makes every output a constant and keeps the backward graph small.
    log_rhos, discounts, rewards, values, bootstrap_value = (
        tf.stop_gradient(tf.convert_to_tensor(x, dtype=tf.float32))
        for x in (log_rhos, discounts, rewards, values, bootstrap_value)
    )
    log_rhos.shape.assert_has_rank(2)
    bootstrap_value.shape.assert_has_rank(1)
    for name, x in (("discounts", discounts), ("rewards", rewards), ("values", values)):
        if not x.shape.is_compatible_with(log_rhos.shape):
            raise ValueError(f"{name} has shape {x.shape}, expected [T, B] = {log_rhos.shape}")

    rhos = tf.exp(log_rhos)
    clipped_rhos = _clip(rhos, clip_rho_threshold)
    cs = lambda_ * _clip(rhos, clip_c_threshold)

    values_t_plus_1 = tf.concat([values[1:], bootstrap_value[tf.newaxis]], axis=0)
    deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)
    vs = values + _backward_recurrence(deltas, discounts * cs)

    vs_t_plus_1 = tf.concat([vs[1:], bootstrap_value[tf.newaxis]], axis=0)
    pg_advantages = _clip(rhos, clip_pg_rho_threshold) * (rewards + discounts * vs_t_plus_1 - values)
    return VTraceReturns(vs=tf.stop_gradient(vs), pg_advantages=tf.stop_gradient(pg_advantages))


def from_logits(
    behaviour_policy_logits: tf.Tensor,
    target_policy_logits: tf.Tensor,
    actions: tf.Tensor,
    discounts: tf.Tensor,
    rewards: tf.Tensor,
    values: tf.Tensor,
    bootstrap_value: tf.Tensor,
    clip_rho_threshold: float | None = 1.0,
    clip_pg_rho_threshold: float | None = 1.0,
    clip_c_threshold: float | None = 1.0,
    lambda_: float = 1.0,
) -> VTraceFromLogitsReturns:
    """V-trace for softmax policies: log ρ_t = log π(a_t|x_t) − log μ(a_t|x_t) from the two policies' logits.

    Args:
      behaviour_policy_logits: float32 [T, B, A] logits of μ, the policy that acted.
      target_policy_logits: float32 [T, B, A] logits of π, the learner's policy.
      actions: int32 [T, B] actions a_t taken by μ.
      discounts, rewards, values, bootstrap_value, clip_*, lambda_: as in `from_importance_weights`.

    Returns:
      VTraceFromLogitsReturns; `target_action_log_probs` keeps its gradient (for the policy-gradient loss).
    """
    behaviour_policy_logits = tf.convert_to_tensor(behaviour_policy_logits, dtype=tf.float32)
    target_policy_logits = tf.convert_to_tensor(target_policy_logits, dtype=tf.float32)
    actions = tf.convert_to_tensor(actions, dtype=tf.int32)
    behaviour_policy_logits.shape.assert_has_rank(3)
    target_policy_logits.shape.assert_has_rank(3)
    actions.shape.assert_has_rank(2)

    target_action_log_probs = action_log_probs(target_policy_logits, actions)
    behaviour_action_log_probs = action_log_probs(behaviour_policy_logits, actions)
    log_rhos = tf.stop_gradient(target_action_log_probs - behaviour_action_log_probs)
    returns = from_importance_weights(
        log_rhos=log_rhos,
        discounts=discounts,
        rewards=rewards,
        values=values,
        bootstrap_value=bootstrap_value,
        clip_rho_threshold=clip_rho_threshold,
        clip_pg_rho_threshold=clip_pg_rho_threshold,
        clip_c_threshold=clip_c_threshold,
        lambda_=lambda_,
    )
    return VTraceFromLogitsReturns(
        vs=returns.vs,
        pg_advantages=returns.pg_advantages,
        log_rhos=log_rhos,
        behaviour_action_log_probs=behaviour_action_log_probs,
        target_action_log_probs=target_action_log_probs,
    )
