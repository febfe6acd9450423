"""The learner's optimisation step: V-trace loss on a time-major batch of unrolls, RMSProp, counters.

One `Learner.step(batch)` is one update (Espeholt et al. 2018, Section 5 and Appendix D):

  1. run the network over the batch `[T+1, B, ...]` from the actors' initial LSTM state;
  2. build the T transitions t -> t+1 and the IMPALA loss (`impala_tf.losses.impala_loss`);
  3. clip the gradients to a global norm of 40;
  4. RMSProp with the learning rate annealed linearly from 6e-4 to 0 over the frame budget;
  5. with PopArt (a network with one value head per task), move each task's value statistics towards the
     V-trace targets and rescale the value head so that its unnormalised outputs are preserved (Hessel et al.
     2019);
  6. count the update and the frames it consumed.

A step whose loss or gradient norm is not finite changes no weight, optimiser slot or PopArt statistic; it is
counted in `num_nonfinite` and reported as `nonfinite = 1` in the logs.

The optimiser is written out on tf.Variables (`rmsprop_update`) to match TF1's `tf.train.RMSPropOptimizer`,
which the paper's released code used: the mean square starts at 1 and ε sits INSIDE the square root,

    ms  <- decay · ms + (1 − decay) · g²
    mom <- momentum · mom + lr · g / sqrt(ms + ε)
    w   <- w − mom

so ε = 0.01 caps a step at 10 · lr · |g| (Keras' RMSprop adds ε outside the root and starts ms at 0). With the
summed loss the per-weight gradients are ~0.01, so ε = 0.01 makes the step ≈ 10 · lr · g — SGD — and the policy
barely moves in 10M frames; the training flags therefore default to ε = 1e-5 and ms from 0
(leaderboards/inputs/atari_tuning6/diagnosis/README.md). From 0, though, the mean square after t updates is
only (1 − decay^t) of the gradients' scale, so the first steps are 1/sqrt(1 − decay^t) times lr per weight:
10 · lr at the first update, 3 · lr at the tenth, 1.3 · lr at the hundredth (decay 0.99). `debias` divides the
mean square by (1 − decay^t) inside the root, as Adam and the MinAtar paper's AC(λ) do, so that every step is
about lr per weight.
`--preset=paper` and this class's defaults keep TF1's values.

Several devices (the paper's 8-learner setup, `mirrored_strategy`): every variable is mirrored on N devices,
each replica runs steps 1-2 on its B/N unrolls, and the replicas all-reduce their gradients with a SUM. The
loss is a sum over time and batch, so the summed gradient is exactly the single-device gradient of the whole
batch; each device then applies steps 3-6 to its own copy with identical inputs, which updates the PopArt
statistics and the counters once per step and keeps the copies equal.
"""

from __future__ import annotations

import contextlib
import dataclasses

import tensorflow as tf

from impala_tf import popart
from impala_tf.compiled import CompiledFunction
from impala_tf.losses import LossConfig, impala_loss
from impala_tf.networks import ImpalaNetwork
from impala_tf.unroll import Unroll

_LAST = 2  # dm_env.StepType.LAST
# Loss logs that are sums over the batch (the rest of the scalar logs are means over its real transitions).
_SUMMED_LOGS = ("pg_loss", "baseline_loss", "entropy_loss")
# The trainer stops a run after this many consecutive skipped (non-finite) updates.
MAX_NONFINITE_STREAK = 20


@dataclasses.dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    learning_rate: float = 6e-4  # at frame 0; annealed linearly to 0 at the Learner's `total_frames`
    decay: float = 0.99
    momentum: float = 0.0
    epsilon: float = 0.01  # inside the square root, as in TF1
    initial_mean_square: float = 1.0  # TF1 starts the mean square at 1 (the flags' default is 0, see config)
    debias: bool = False  # divide ms by (1 − decay^t) in the step (needs initial_mean_square = 0)
    max_grad_norm: float = 40.0  # global norm over all gradients

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        if not 0 <= self.decay < 1:
            raise ValueError(f"decay must be in [0, 1), got {self.decay}.")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}.")
        if not self.epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}.")
        if not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}.")
        if self.debias and self.initial_mean_square != 0:
            raise ValueError(
                f"debias corrects a mean square that starts at 0, got initial_mean_square={self.initial_mean_square}"
            )


def linear_learning_rate(initial: float, num_frames: tf.Tensor, total_frames: int) -> tf.Tensor:
    """initial · max(0, 1 − num_frames / total_frames): float32 []."""
    progress = tf.cast(num_frames, tf.float32) / float(total_frames)
    return initial * tf.maximum(0.0, 1.0 - progress)


def rmsprop_update(
    gradient: tf.Tensor,
    mean_square: tf.Tensor,
    momentum_buffer: tf.Tensor | None,
    learning_rate: tf.Tensor,
    decay: float,
    momentum: float,
    epsilon: float,
    bias_correction: tf.Tensor | float = 1.0,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
    """One TF1-style RMSProp step for one variable (ε inside the square root):
    step = lr · g / sqrt(ms / bias_correction + ε).

    Args:
      gradient: g, any shape.
      mean_square: ms before the step, g's shape.
      momentum_buffer: mom before the step, g's shape; None when momentum == 0 (then mom is not kept).
      learning_rate: float32 [].
      bias_correction: 1 (TF1), or 1 − decay^t at the t-th update (t from 1) to debias a mean square from 0.

    Returns:
      (delta to ADD to the variable, new mean_square, new momentum_buffer or None).
    """
    new_mean_square = decay * mean_square + (1.0 - decay) * tf.square(gradient)
    step = learning_rate * gradient * tf.math.rsqrt(new_mean_square / bias_correction + epsilon)
    if momentum_buffer is None:
        return -step, new_mean_square, None
    new_momentum_buffer = momentum * momentum_buffer + step
    return -new_momentum_buffer, new_mean_square, new_momentum_buffer


def layer_name(variable: tf.Variable) -> str | None:
    """A short name for a kernel ("conv2d_1", "dense"), None for biases and LSTM recurrences."""
    path = getattr(variable, "path", None) or variable.name
    parts = path.replace(":0", "").split("/")
    if parts[-1] != "kernel":
        return None
    return "/".join(parts[-3:-1]) if len(parts) >= 3 else parts[-2]


def mirrored_strategy(num_devices: int) -> tf.distribute.MirroredStrategy | None:
    """The learner's devices for `--learner_devices`: None for one device (the plain, fastest path).

    Args:
      num_devices: replicas; 0 means every visible GPU. They are the first `num_devices` GPUs, or, on a machine
        without GPUs, the first logical CPU devices (`tf.config.set_logical_device_configuration`, for tests).
    """
    if num_devices < 0:
        raise ValueError(f"learner devices must be >= 0 (0: every visible GPU), got {num_devices}.")
    gpus = tf.config.list_logical_devices("GPU")
    if num_devices == 0:
        if not gpus:
            raise ValueError("learner devices = 0 means every visible GPU, and TensorFlow sees none.")
        num_devices = len(gpus)
    if num_devices == 1:
        return None
    devices = gpus or tf.config.list_logical_devices("CPU")
    if len(devices) < num_devices:
        cpus = len(tf.config.list_logical_devices("CPU"))
        raise ValueError(
            f"{num_devices} learner devices asked for, but TensorFlow sees {len(gpus)} GPUs and {cpus} CPU "
            "devices: ask for at most that many, or 0 for every GPU."
        )
    return tf.distribute.MirroredStrategy([device.name for device in devices[:num_devices]])


def strategy_scope(strategy: tf.distribute.Strategy | None) -> contextlib.AbstractContextManager:
    """Where to build the network that a Learner with `strategy` trains: its variables must be mirrored."""
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def split_batch(batch: Unroll, num_splits: int) -> list[Unroll]:
    """Splits a time-major batch along its batch axis into `num_splits` equal batches.

    Args:
      batch: fields `[T+1, B, ...]`, task_id and policy_version `[B]`, agent_state `[2, B, H]`.

    Returns:
      num_splits batches of B / num_splits unrolls, in order.
    """
    batch_size = batch.task_id.shape[0]
    if batch_size % num_splits:
        raise ValueError(f"batch size {batch_size} must be divisible by the {num_splits} learner devices.")
    size = batch_size // num_splits
    per_unroll = ("task_id", "policy_version")
    return [
        Unroll(
            **{
                name: value[i * size : (i + 1) * size]
                if name in per_unroll
                else value[:, i * size : (i + 1) * size]
                for name, value in batch._asdict().items()
            }
        )
        for i in range(num_splits)
    ]


class Learner(tf.Module):
    """Owns the network, the RMSProp slots, the PopArt statistics and the counters.

    Checkpoint it whole with tf.train.Checkpoint. Counters are tf.Variables, so a checkpoint restores them and
    the learning-rate schedule resumes where it stopped:
      num_updates        int64  applied updates (the parameters' version, actors' policy_version)
      num_frames         int64  frames consumed: T · B · frames_per_step per step, applied or not
      num_nonfinite      int64  steps skipped because the loss or the gradient norm was not finite
      nonfinite_streak   int64  consecutive skipped steps up to now (0 after an applied update)

    PopArt is on exactly when the network has more than one value head (one per task): `popart_mu` and
    `popart_nu` are then float32 [num_tasks] variables, and None otherwise.

    With a `strategy` (see `mirrored_strategy`) every variable is mirrored on its devices; a checkpoint holds
    one copy, so a single-device Learner restores it as well.
    """

    def __init__(
        self,
        network: ImpalaNetwork,
        loss_config: LossConfig,
        optimizer_config: OptimizerConfig,
        total_frames: int,
        frames_per_step: int = 1,
        xla: bool = True,
        popart_step_size: float = popart.STEP_SIZE,
        strategy: tf.distribute.Strategy | None = None,
        name: str = "learner",
    ):
        """
        Args:
          network: built by `networks.make_network` (its variables exist); with a strategy, built inside
            `strategy_scope(strategy)`.
          loss_config: the IMPALA loss.
          optimizer_config: RMSProp, learning rate and gradient clipping.
          total_frames: frame budget over which the learning rate anneals linearly to 0.
          frames_per_step: frames per agent step counted by `num_frames` (4 on Atari: the action repeat).
          xla: compile the step with `tf.function(jit_compile=True)` (with a strategy: each replica's loss and
            gradients; the all-reduce and the update stay outside XLA).
          strategy: None (one device) or a MirroredStrategy: the batch is split across its replicas.
        """
        super().__init__(name=name)
        if total_frames < 1:
            raise ValueError(f"total_frames must be >= 1, got {total_frames}.")
        if frames_per_step < 1:
            raise ValueError(f"frames_per_step must be >= 1, got {frames_per_step}.")
        if not network.trainable_variables:
            raise ValueError("The network has no variables yet: build it with networks.make_network.")
        # A Keras variable wraps the tf.Variable that the strategy created (or not).
        tf_variables = [v if isinstance(v, tf.Variable) else v.value for v in network.trainable_variables]
        if strategy is not None and not all(
            strategy.extended.variable_created_in_scope(v) for v in tf_variables
        ):
            raise ValueError("With a strategy, build the network inside learner.strategy_scope(strategy).")
        self.network = network
        self.loss_config = loss_config
        self.optimizer_config = optimizer_config
        self.total_frames = total_frames
        self.frames_per_step = frames_per_step
        self.popart_step_size = popart_step_size
        self._strategy = strategy
        self._trainable = list(network.trainable_variables)

        with strategy_scope(strategy):
            self.num_updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_updates")
            self.num_frames = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_frames")
            self.num_nonfinite = tf.Variable(0, dtype=tf.int64, trainable=False, name="num_nonfinite")
            self.nonfinite_streak = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_streak")
            self.mean_square = [
                tf.Variable(
                    tf.fill(v.shape, tf.constant(optimizer_config.initial_mean_square, v.dtype)),
                    trainable=False,
                    name="mean_square",
                )
                for v in self._trainable
            ]
            if optimizer_config.momentum > 0:
                self.momentum_buffer = [
                    tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name="momentum")
                    for v in self._trainable
                ]
            else:
                self.momentum_buffer = [None] * len(self._trainable)
            self.popart_mu = self.popart_nu = None
            if network.config.num_value_heads > 1:
                mu, nu = popart.initial_statistics(network.config.num_value_heads)
                self.popart_mu = tf.Variable(mu, trainable=False, name="popart_mu")
                self.popart_nu = tf.Variable(nu, trainable=False, name="popart_nu")

        if strategy is None:
            self._compiled_step = CompiledFunction(self._step, jit_compile=xla)
        else:
            self._replica_gradients = tf.function(self._gradients, jit_compile=xla)
            self._compiled_step = tf.function(self._mirrored_step)

    @property
    def uses_popart(self) -> bool:
        return self.popart_mu is not None

    @property
    def strategy(self) -> tf.distribute.Strategy | None:
        return self._strategy

    @property
    def num_replicas(self) -> int:
        return 1 if self._strategy is None else self._strategy.num_replicas_in_sync

    def learning_rate(self) -> tf.Tensor:
        """The learning rate the next update will use: float32 []."""
        return linear_learning_rate(self.optimizer_config.learning_rate, self.num_frames, self.total_frames)

    def step(self, batch: Unroll, num_replayed: int | tf.Tensor = 0) -> dict[str, tf.Tensor]:
        """One update on a time-major batch; returns scalar logs (loss terms, grad_norm, learning_rate, ...) and
        the counters `num_updates` and `num_frames` after it.

        `batch` fields are `[T+1, B, ...]` (task_id, policy_version `[B]`; agent_state `[2, B, H]`), with the
        dtypes of `impala_tf.unroll.unroll_dtypes` (observation uint8 all the way into the network). With a
        strategy, B must be divisible by the number of replicas. `num_replayed` of its unrolls came from replay:
        `num_frames` (the budget and the learning-rate schedule) counts only the fresh ones' frames, which the
        environments produced for this update.
        """
        num_replayed = tf.convert_to_tensor(num_replayed, tf.int32)
        if self._strategy is None:
            return self._compiled_step(batch, num_replayed)
        return self._compiled_step(self._distribute(batch), num_replayed)

    def _distribute(self, batch: Unroll):
        """The host batch as per-replica slices, each copied to its replica's device."""
        slices = split_batch(batch, self.num_replicas)
        devices = self._strategy.extended.worker_devices

        def on_replica(context: tf.distribute.experimental.ValueContext) -> Unroll:
            i = context.replica_id_in_sync_group
            with tf.device(devices[i]):
                return tf.nest.map_structure(tf.identity, slices[i])

        return self._strategy.experimental_distribute_values_from_function(on_replica)

    def loss(self, batch: Unroll) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """(total loss, logs: pg_loss, baseline_loss, entropy_loss, ...) of a batch [T+1, B] at the current
        parameters, without an update: for diagnostics that differentiate one term (experiments/loss_gradients)."""
        total_loss, logs, _ = self._loss(batch)
        return total_loss, logs

    def _loss(self, batch: Unroll) -> tuple[tf.Tensor, dict[str, tf.Tensor], tf.Tensor]:
        """Steps 1-2: (total loss, loss logs, mask [T, B]) of a batch [T+1, B]."""
        outputs, _ = self.network.unroll(
            batch.observation,
            batch.prev_action,
            batch.reward,
            batch.step_type,
            batch.task_id,
            batch.agent_state,
        )
        # The one time shift. Transition t is x_t -> x_{t+1}: it takes step t's logits, value, behaviour logits
        # and action, and the reward and discount of ARRIVING at step t+1; step T only bootstraps. A transition
        # whose step t is LAST does not exist (step t+1 is the next episode's FIRST): the mask drops it.
        mask = tf.cast(tf.not_equal(batch.step_type[:-1], _LAST), tf.float32)
        popart_mu = popart_sigma = None
        if self.uses_popart:
            popart_mu = tf.gather(self.popart_mu, batch.task_id)
            popart_sigma = tf.gather(popart.sigma_from_moments(self.popart_mu, self.popart_nu), batch.task_id)
        total_loss, logs = impala_loss(
            target_logits=outputs.policy_logits[:-1],
            baseline=outputs.baseline[:-1],
            bootstrap_value=outputs.baseline[-1],
            behaviour_logits=batch.behaviour_logits[:-1],
            actions=batch.action[:-1],
            rewards=batch.reward[1:],
            env_discounts=batch.discount[1:],
            mask=mask,
            config=self.loss_config,
            popart_mu=popart_mu,
            popart_sigma=popart_sigma,
        )
        return total_loss, logs, mask

    def _gradients(self, batch: Unroll) -> tuple[tf.Tensor, dict[str, tf.Tensor], list[tf.Tensor], tf.Tensor]:
        """Steps 1-2 and their gradients: (total loss, loss logs, gradients, mask [T, B]) of a batch [T+1, B]."""
        with tf.GradientTape() as tape:
            total_loss, loss_logs, mask = self._loss(batch)
        gradients = tape.gradient(total_loss, self._trainable)
        return total_loss, loss_logs, gradients, mask

    def _apply_gradients(self, gradients: list[tf.Tensor], learning_rate: tf.Tensor) -> list[tf.Tensor]:
        """Applies one RMSProp step; returns each variable's update (what was added to it)."""
        config = self.optimizer_config
        bias_correction = 1.0
        if config.debias:  # this is update t = num_updates + 1
            bias_correction = 1.0 - tf.pow(config.decay, tf.cast(self.num_updates + 1, tf.float32))
        deltas = []
        for i, (variable, gradient) in enumerate(zip(self._trainable, gradients, strict=True)):
            delta, mean_square, momentum_buffer = rmsprop_update(
                gradient,
                self.mean_square[i],
                self.momentum_buffer[i],
                learning_rate,
                config.decay,
                config.momentum,
                config.epsilon,
                bias_correction,
            )
            self.mean_square[i].assign(mean_square)
            if momentum_buffer is not None:
                self.momentum_buffer[i].assign(momentum_buffer)
            variable.assign_add(delta)
            deltas.append(delta)
        return deltas

    def _optimizer_diagnostics(self, deltas: list[tf.Tensor]) -> dict[str, tf.Tensor]:
        """What tells whether the optimiser moves the weights: per layer, the update's norm relative to the
        weights' (`update_ratio/<layer>`), and over all weights the mean RMSProp denominator sqrt(ms + ε) and
        the global update norm."""
        logs = {}
        for variable, delta in zip(self._trainable, deltas, strict=True):
            name = layer_name(variable)
            if name is not None:
                logs[f"update_ratio/{name}"] = tf.norm(delta) / tf.maximum(tf.norm(variable), 1e-12)
        denominators = [tf.sqrt(ms + self.optimizer_config.epsilon) for ms in self.mean_square]
        num_weights = sum(int(d.shape.num_elements()) for d in denominators)
        logs["rmsprop_denominator"] = tf.add_n([tf.reduce_sum(d) for d in denominators]) / num_weights
        logs["update_norm"] = tf.linalg.global_norm(deltas)
        return logs

    def _update_popart(self, vs: tf.Tensor, task_id: tf.Tensor, mask: tf.Tensor) -> None:
        """Moves the statistics towards this batch's targets vs [T, B], then preserves the value outputs."""
        mu_old, nu_old = self.popart_mu.read_value(), self.popart_nu.read_value()
        mu_new, nu_new = popart.update_statistics(
            mu_old, nu_old, vs, task_id, mask, step_size=self.popart_step_size
        )
        kernel, bias = popart.preserve_outputs(
            self.network.value_kernel,
            self.network.value_bias,
            mu_old,
            popart.sigma_from_moments(mu_old, nu_old),
            mu_new,
            popart.sigma_from_moments(mu_new, nu_new),
        )
        self.network.value_kernel.assign(kernel)
        self.network.value_bias.assign(bias)
        self.popart_mu.assign(mu_new)
        self.popart_nu.assign(nu_new)

    def _update(
        self,
        gradients: list[tf.Tensor],
        total_loss: tf.Tensor,
        loss_logs: dict[str, tf.Tensor],
        task_id: tf.Tensor,
        mask: tf.Tensor,
        num_replayed: tf.Tensor,
    ) -> dict[str, tf.Tensor]:
        """Steps 3-6 from the whole batch's gradients, loss logs (vs [T, B]), task_id [B], mask [T, B] and the
        number of replayed unrolls in it (int32 [])."""
        clipped_gradients, grad_norm = tf.clip_by_global_norm(gradients, self.optimizer_config.max_grad_norm)
        finite = tf.logical_and(tf.math.is_finite(total_loss), tf.math.is_finite(grad_norm))
        learning_rate = self.learning_rate()

        def apply() -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            deltas = self._apply_gradients(clipped_gradients, learning_rate)
            if self.uses_popart:
                self._update_popart(loss_logs["vs"], task_id, mask)
            self.num_updates.assign_add(1)
            self.nonfinite_streak.assign(0)
            return tf.constant(0.0), self._optimizer_diagnostics(deltas)

        def skip() -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
            self.num_nonfinite.assign_add(1)
            self.nonfinite_streak.assign_add(1)
            zero_deltas = [tf.zeros_like(v) for v in self._trainable]
            return tf.constant(1.0), self._optimizer_diagnostics(zero_deltas)

        nonfinite, diagnostics = tf.cond(finite, apply, skip)
        fresh_steps = tf.shape(mask)[0] * (tf.shape(mask)[1] - num_replayed)
        self.num_frames.assign_add(tf.cast(fresh_steps * self.frames_per_step, tf.int64))

        logs = {name: value for name, value in loss_logs.items() if value.shape.rank == 0}
        logs.update(diagnostics)
        logs.update(
            total_loss=total_loss,
            grad_norm=grad_norm,
            clipped_grad_norm=tf.minimum(grad_norm, self.optimizer_config.max_grad_norm),
            learning_rate=learning_rate,
            nonfinite=nonfinite,
            nonfinite_streak=tf.cast(self.nonfinite_streak.read_value(), tf.float32),
            # The counters after this step, so that the learner's loop needs no variable reads of its own.
            num_updates=self.num_updates.read_value(),
            num_frames=self.num_frames.read_value(),
        )
        if self.uses_popart:
            logs["popart_mean_sigma"] = tf.reduce_mean(
                popart.sigma_from_moments(self.popart_mu, self.popart_nu)
            )
        return logs

    def _step(self, batch: Unroll, num_replayed: tf.Tensor) -> dict[str, tf.Tensor]:
        total_loss, loss_logs, gradients, mask = self._gradients(batch)
        return self._update(gradients, total_loss, loss_logs, batch.task_id, mask, num_replayed)

    def _mirrored_step(self, batch, num_replayed: tf.Tensor) -> dict[str, tf.Tensor]:
        """One update from a per-replica batch: all-reduced gradients, then the same update on every copy."""
        whole_batch = self._strategy.run(self._all_reduce_gradients, args=(batch,))
        devices = self._strategy.extended.non_slot_devices(self._trainable)
        # Runs `_update` once per device on that device's copies (variables resolve to the local copy).
        per_device_logs = self._strategy.extended.update_non_slot(
            devices, self._update, args=(*whole_batch, num_replayed), group=False
        )
        return {name: copies[0] for name, copies in per_device_logs.items()}  # equal on every device

    def _all_reduce_gradients(self, batch: Unroll):
        """In a replica: its B/N unrolls' loss and gradients, summed over the replicas into the whole batch's.

        Returns `_update`'s inputs for the whole batch: (gradients, total_loss, loss_logs with vs [T, B],
        task_id [B], mask [T, B]).
        """
        total_loss, loss_logs, gradients, mask = self._replica_gradients(batch)
        context = tf.distribute.get_replica_context()
        num_real = tf.reduce_sum(mask)
        summed = {name: loss_logs[name] for name in _SUMMED_LOGS}
        # A mean over this replica's real transitions, weighted by their number, sums to the whole batch's mean.
        weighted = {
            name: value * num_real
            for name, value in loss_logs.items()
            if value.shape.rank == 0 and name not in _SUMMED_LOGS
        }
        gradients, total_loss, summed, weighted, num_real = context.all_reduce(
            tf.distribute.ReduceOp.SUM, (gradients, total_loss, summed, weighted, num_real)
        )
        whole_logs = {
            **summed,
            **{name: value / tf.maximum(num_real, 1.0) for name, value in weighted.items()},
            "vs": context.all_gather(loss_logs["vs"], axis=1),
        }
        task_id = context.all_gather(batch.task_id, axis=0)
        return gradients, total_loss, whole_logs, task_id, context.all_gather(mask, axis=1)
