"""The IMPALA loss (Espeholt et al. 2018, section 4.2), its off-policy corrections and reward clipping.

Time-major `[T, B]`: step t is the transition x_t -> x_{t+1} of an unroll. The learner slices an `Unroll` of
T+1 steps into: logits, baseline, actions at steps 0..T-1; rewards and environment discounts of arriving at
steps 1..T; the bootstrap value at step T; and `mask` = 0 where step t is LAST (the LAST -> FIRST reset
transition, which belongs to no episode).

The loss is a **sum** over time and batch, as in the reference implementation (scalable_agent), not a mean:
the paper's hyperparameters (learning rate 6e-4, baseline cost 0.5, entropy cost 0.01) apply unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from impala_tf import popart, vtrace

REWARD_CLIPPING_MODES = ("abs_one", "soft_asymmetric", "none")  # --reward_clipping's choices

# log ρ of masked transitions: ρ = c = exp(-1e9) = 0 exactly, so v_t = V(x_t) there and no trace crosses it.
_MASKED_LOG_RHO = -1e9
# Logits at or below this are illegal actions (networks.ILLEGAL_LOGIT = -1e9).
ILLEGAL_THRESHOLD = -1e8


def clip_rewards(rewards: tf.Tensor, mode: str) -> tf.Tensor:
    """Clips raw rewards, any shape.

    Modes:
      "abs_one": clip to [-1, 1] (the Atari setting).
      "soft_asymmetric": 5 · tanh(r / 5), scaled by 0.3 for negative r (the DMLab setting, as scalable_agent's
        experiment.py: squeezed = tanh(r / 5); where(r < 0, 0.3 · squeezed, squeezed) · 5): in (-1.5, 5).
      "none": unchanged.
    """
    if mode not in REWARD_CLIPPING_MODES:
        raise ValueError(f"unknown reward clipping {mode!r}; valid modes: {', '.join(REWARD_CLIPPING_MODES)}")
    rewards = tf.convert_to_tensor(rewards, tf.float32)
    if mode == "abs_one":
        return tf.clip_by_value(rewards, -1.0, 1.0)
    if mode == "soft_asymmetric":
        squeezed = tf.tanh(rewards / 5.0)
        return tf.where(rewards < 0, 0.3 * squeezed, squeezed) * 5.0
    return rewards


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Hyperparameters of `impala_loss`; defaults are the paper's Atari settings."""

    discount: float = 0.99
    baseline_cost: float = 0.5
    entropy_cost: float = 0.01
    reward_clipping: str = "abs_one"
    correction: str = "vtrace"
    clip_rho_threshold: float | None = 1.0
    clip_pg_rho_threshold: float | None = 1.0
    # λ scaling V-trace's traces, c_i = λ · min(1, π/μ) (1: the paper's V-trace); every correction uses it.
    vtrace_lambda: float = 1.0
    epsilon: float = 1e-6  # only for correction="epsilon"

    def __post_init__(self):
        if not 0.0 <= self.discount <= 1.0:
            raise ValueError(f"discount must be in [0, 1], got {self.discount}")
        if self.baseline_cost < 0:
            raise ValueError(f"baseline_cost must be >= 0, got {self.baseline_cost}")
        if self.entropy_cost < 0:
            raise ValueError(f"entropy_cost must be >= 0, got {self.entropy_cost}")
        if self.reward_clipping not in REWARD_CLIPPING_MODES:
            valid = ", ".join(REWARD_CLIPPING_MODES)
            raise ValueError(f"unknown reward_clipping {self.reward_clipping!r}; valid modes: {valid}")
        if self.correction not in CORRECTIONS:
            valid = ", ".join(CORRECTIONS)
            raise ValueError(f"unknown correction {self.correction!r}; valid corrections: {valid}")
        for name in ("clip_rho_threshold", "clip_pg_rho_threshold"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number or None (no clipping), got {value!r}")
        if not 0.0 <= self.vtrace_lambda <= 1.0:
            raise ValueError(f"vtrace_lambda must be in [0, 1], got {self.vtrace_lambda}")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")


def _masked_sum(x: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    # tf.where, not a product: a masked step's term may be inf or NaN (an illegal action's log-probability).
    return tf.reduce_sum(tf.where(real, x, tf.zeros_like(x)))


def _logit_std(logits: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """Mean over real steps of the std of the legal logits across actions: how far from uniform the policy is."""
    legal = logits > ILLEGAL_THRESHOLD
    count = tf.maximum(tf.reduce_sum(tf.cast(legal, tf.float32), -1), 1.0)
    mean = tf.reduce_sum(tf.where(legal, logits, 0.0), -1) / count
    var = tf.reduce_sum(tf.where(legal, tf.square(logits - mean[..., None]), 0.0), -1) / count
    return _masked_sum(tf.sqrt(var), real) / tf.maximum(tf.reduce_sum(tf.cast(real, tf.float32)), 1.0)


def negative_entropy(logits: tf.Tensor) -> tf.Tensor:
    """Σ_a π(a) log π(a) of a softmax policy: float32 [T, B, A] -> [T, B].

    Actions with probability 0 (illegal actions at a large negative or -inf logit) contribute 0, not 0 · -inf.
    """
    log_policy = tf.nn.log_softmax(logits)
    policy = tf.exp(log_policy)
    return tf.reduce_sum(policy * tf.where(policy > 0, log_policy, tf.zeros_like(log_policy)), axis=-1)


# --- The three loss terms (scalable_agent's experiment.py), summed over the real [T, B] steps --------------------


def policy_gradient_loss(log_probs: tf.Tensor, advantages: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """−Σ log π(a_t|x_t) · A_t over real steps; A_t is a constant. [T, B], [T, B], bool [T, B] -> []."""
    return -_masked_sum(log_probs * tf.stop_gradient(advantages), real)


def baseline_loss(targets: tf.Tensor, values: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """½ Σ (v_t − V(x_t))² over real steps; v_t is a constant. [T, B], [T, B], bool [T, B] -> []."""
    return 0.5 * _masked_sum(tf.square(tf.stop_gradient(targets) - values), real)


def entropy_loss(logits: tf.Tensor, real: tf.Tensor) -> tf.Tensor:
    """Σ Σ_a π log π (the negative entropy) over real steps. [T, B, A], bool [T, B] -> []."""
    return _masked_sum(negative_entropy(logits), real)


# --- Off-policy corrections: one signature, one registry ----------------------------------------------------------


class CorrectionInputs(NamedTuple):
    """What a correction sees, all float32 `[T, B]` (values unnormalised)."""

    target_log_probs: tf.Tensor  # log π(a_t|x_t), differentiable
    behaviour_log_probs: tf.Tensor  # log μ(a_t|x_t)
    discounts: tf.Tensor  # γ · environment discount of t -> t+1
    rewards: tf.Tensor  # clipped rewards of t -> t+1
    values: tf.Tensor  # V(x_t)
    bootstrap_value: tf.Tensor  # V(x_T): [B]
    real: tf.Tensor  # bool: False on LAST -> FIRST reset transitions


class Targets(NamedTuple):
    """A correction's output, float32 `[T, B]`: value targets v_t, the policy gradient's advantages A_t and the
    log-probabilities they multiply."""

    vs: tf.Tensor
    pg_advantages: tf.Tensor
    pg_log_probs: tf.Tensor


def _log_rhos(x: CorrectionInputs) -> tf.Tensor:
    return tf.stop_gradient(x.target_log_probs) - x.behaviour_log_probs


def _vtrace_targets(
    x: CorrectionInputs,
    log_rhos: tf.Tensor,
    clip_rho: float | None,
    clip_pg_rho: float | None,
    lambda_: float,
) -> Targets:
    # Reset transitions get ρ = c = exp(-1e9) = 0: v_t = V(x_t) there, and no trace crosses into earlier steps.
    returns = vtrace.from_importance_weights(
        log_rhos=tf.where(x.real, log_rhos, _MASKED_LOG_RHO),
        discounts=x.discounts,
        rewards=x.rewards,
        values=x.values,
        bootstrap_value=x.bootstrap_value,
        clip_rho_threshold=clip_rho,
        clip_pg_rho_threshold=clip_pg_rho,
        lambda_=lambda_,
    )
    return Targets(returns.vs, returns.pg_advantages, x.target_log_probs)


def vtrace_correction(x: CorrectionInputs, config: LossConfig) -> Targets:
    """V-trace targets and advantages with the config's ρ̄ and ρ̄_pg (paper equation 1 and section 4.2)."""
    return _vtrace_targets(
        x, _log_rhos(x), config.clip_rho_threshold, config.clip_pg_rho_threshold, config.vtrace_lambda
    )


def no_correction(x: CorrectionInputs, config: LossConfig) -> Targets:
    """As if the data were on-policy: V-trace with ρ = 1 whatever the thresholds (n-step, or λ-, returns)."""
    return _vtrace_targets(x, tf.zeros_like(x.target_log_probs), None, None, config.vtrace_lambda)


def epsilon_correction(x: CorrectionInputs, config: LossConfig) -> Targets:
    """No correction, with log(π(a) + ε) in the policy gradient so that a tiny π(a) cannot blow it up."""
    targets = no_correction(x, config)
    return targets._replace(pg_log_probs=tf.math.log(tf.exp(x.target_log_probs) + config.epsilon))


def one_step_importance_sampling(x: CorrectionInputs, config: LossConfig) -> Targets:
    """No-correction targets; A_t weighted by that step's unclipped importance weight π(a_t|x_t) / μ(a_t|x_t)."""
    targets = no_correction(x, config)
    return targets._replace(pg_advantages=tf.exp(_log_rhos(x)) * targets.pg_advantages)


# --correction's choices, paper section 5.2.2. A new correction is one function above and one entry here.
CORRECTIONS: dict[str, Callable[[CorrectionInputs, LossConfig], Targets]] = {
    "vtrace": vtrace_correction,
    "none": no_correction,
    "epsilon": epsilon_correction,
    "is1": one_step_importance_sampling,
}


def impala_loss(
    target_logits: tf.Tensor,
    baseline: tf.Tensor,
    bootstrap_value: tf.Tensor,
    behaviour_logits: tf.Tensor,
    actions: tf.Tensor,
    rewards: tf.Tensor,
    env_discounts: tf.Tensor,
    mask: tf.Tensor,
    config: LossConfig,
    popart_mu: tf.Tensor | None = None,
    popart_sigma: tf.Tensor | None = None,
) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """The IMPALA actor-critic loss with the off-policy correction `config.correction`.

    total = −Σ log π(a_t|x_t) A_t  +  baseline_cost · ½ Σ (v_t − V(x_t))²  +  entropy_cost · Σ Σ_a π log π,

    summed (not averaged) over the unmasked [T, B] steps, as in scalable_agent, so that the paper's learning
    rate 6e-4 applies unchanged. Targets v_t and advantages A_t are constants and come from `CORRECTIONS`:
      "vtrace":  V-trace with the config's ρ̄ and ρ̄_pg.
      "none":    as if the data were on-policy: V-trace with log ρ = 0.
      "epsilon": as "none", with log(π(a) + ε) in the policy-gradient term.
      "is1":     targets as "none"; A_t multiplied by that step's unclipped importance weight π/μ.
    Masked steps (mask 0) add nothing to any term and are treated as ρ = c = 0, so v_t = V(x_t) there and no
    trace leaks into earlier steps.

    With PopArt (Hessel et al. 2019), `baseline` and `bootstrap_value` are normalised outputs ñ of each
    unroll's task head: the correction runs on V = σ ñ + μ (`popart.denormalise`), the baseline loss compares
    (v_t − μ)/σ (`popart.normalise`) with ñ, and A_t is divided by σ. Without PopArt μ = 0 and σ = 1, which
    change nothing exactly.

    Args:
      target_logits: float32 [T, B, A] learner policy logits (illegal actions at a large negative value).
      baseline: float32 [T, B] V(x_t) as the network outputs it (normalised when PopArt is given).
      bootstrap_value: float32 [B] the network's value at step T (normalised when PopArt is given).
      behaviour_logits: float32 [T, B, A] logits of the policy that acted.
      actions: int32 [T, B] actions taken.
      rewards: float32 [T, B] raw rewards of transitions t -> t+1, clipped here per `config.reward_clipping`.
      env_discounts: float32 [T, B] 0/1 environment discount of transition t -> t+1.
      mask: float32 [T, B] 1 for real transitions, 0 for LAST -> FIRST reset transitions.
      config: LossConfig.
      popart_mu: float32 [B] or None: PopArt μ of each unroll's task.
      popart_sigma: float32 [B] or None: PopArt σ of each unroll's task.

    Returns:
      (total loss scalar, logs): pg_loss, baseline_loss, entropy_loss (the summed terms), and means over the
      real steps: entropy, mean_rho (π/μ), clipped_rho_fraction (ρ > ρ̄), mean_vs (unnormalised),
      mean_advantage (the advantage the policy gradient used); plus "vs" float32 [T, B], the unnormalised
      targets for PopArt statistics.
    """
    if (popart_mu is None) != (popart_sigma is None):
        raise ValueError("give both popart_mu and popart_sigma, or neither")
    target_logits = tf.convert_to_tensor(target_logits, tf.float32)
    baseline = tf.convert_to_tensor(baseline, tf.float32)
    actions = tf.convert_to_tensor(actions, tf.int32)
    real = tf.convert_to_tensor(mask, tf.float32) > 0
    mu = 0.0 if popart_mu is None else tf.convert_to_tensor(popart_mu, tf.float32)
    sigma = 1.0 if popart_sigma is None else tf.convert_to_tensor(popart_sigma, tf.float32)

    inputs = CorrectionInputs(
        target_log_probs=vtrace.action_log_probs(target_logits, actions),
        behaviour_log_probs=vtrace.action_log_probs(
            tf.convert_to_tensor(behaviour_logits, tf.float32), actions
        ),
        discounts=config.discount * tf.convert_to_tensor(env_discounts, tf.float32),
        rewards=clip_rewards(rewards, config.reward_clipping),
        values=popart.denormalise(baseline, mu, sigma),
        bootstrap_value=popart.denormalise(tf.convert_to_tensor(bootstrap_value, tf.float32), mu, sigma),
        real=real,
    )
    targets = CORRECTIONS[config.correction](inputs, config)
    # Zeroed, not only masked in the sum: a masked step's ρ may be NaN, and it is a factor of the gradient.
    pg_advantages = tf.where(real, targets.pg_advantages, tf.zeros_like(targets.pg_advantages)) / sigma

    pg_loss = policy_gradient_loss(targets.pg_log_probs, pg_advantages, real)
    value_loss = config.baseline_cost * baseline_loss(popart.normalise(targets.vs, mu, sigma), baseline, real)
    neg_entropy_loss = config.entropy_cost * entropy_loss(target_logits, real)
    total_loss = pg_loss + value_loss + neg_entropy_loss

    num_real = tf.maximum(tf.reduce_sum(tf.cast(real, tf.float32)), 1.0)
    rhos = tf.exp(_log_rhos(inputs))
    if config.clip_rho_threshold is None:
        clipped_rhos = tf.zeros_like(rhos)
    else:
        clipped_rhos = tf.cast(rhos > config.clip_rho_threshold, tf.float32)
    logs = {
        "pg_loss": pg_loss,
        "baseline_loss": value_loss,
        "entropy_loss": neg_entropy_loss,
        "entropy": -entropy_loss(target_logits, real) / num_real,
        "mean_rho": tf.stop_gradient(_masked_sum(rhos, real)) / num_real,
        "clipped_rho_fraction": _masked_sum(clipped_rhos, real) / num_real,
        "mean_vs": _masked_sum(targets.vs, real) / num_real,
        "mean_advantage": _masked_sum(pg_advantages, real) / num_real,
        "advantage_std": tf.sqrt(_masked_sum(tf.square(pg_advantages), real) / num_real),
        "logit_std": _logit_std(target_logits, real),
        "vs": targets.vs,
    }
    return total_loss, logs
