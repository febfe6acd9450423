"""The IMPALA agent networks (Espeholt et al. 2018, Section 5 and Figure 3).

Two torsos, an optional LSTM core and two heads:

  shallow torso   conv 8x8/4 x16 -> ReLU -> conv 4x4/2 x32 -> ReLU -> FC 256 -> ReLU
  minatar torso   conv 3x3/1 x16 -> ReLU -> FC 128 -> ReLU (Young & Tian 2019's network, for 10x10 frames where
                  the shallow torso's 8x8/4 first convolution leaves a 3x3 map)
  deep torso      3 sections (16, 32, 32 channels), each: conv 3x3/1 -> max-pool 3x3/2 -> 2 residual blocks
                  (ReLU, conv 3x3, ReLU, conv 3x3, + skip); then ReLU -> FC 256 -> ReLU
  LSTM core       input = torso output ++ one-hot(previous action) ++ previous reward clipped to [-1, 1]
                  (whatever the loss's reward clipping, as scalable_agent does); the state is
                  reset to zeros wherever step_type == FIRST, also in the middle of an unroll
  heads           policy logits [A] (illegal actions of the task masked to -1e9) and a baseline with
                  `num_value_heads` outputs (one per task under PopArt; the unroll's own task is gathered)

Every convolution uses "SAME" padding, as the paper's released code does; this also lets both torsos run on
small frames (MinAtar 10x10, Catch).

Initialisation (`initializer`): "glorot" is Keras' default (Glorot-uniform kernels, zero biases) for every layer;
"orthogonal" is the convention of OpenAI baselines' A2C/PPO and CleanRL (orthogonal kernels with gain sqrt(2)
before ReLUs, 0.01 for the policy head so that the first policy is near-uniform, 1 for the value head; zero
biases). For the shallow torso the orthogonal first layer is 2.25x Glorot's scale.

Two entry points share one forward pass, so they agree by construction:
  `step`    batch-major, one step of B environments (acting);
  `unroll`  time-major `[T+1, B, ...]` (learning): the torso sees all (T+1)*B frames as one batch and only the
            LSTM loops over time.

The recurrent state is ONE float32 tensor `[2, B, H]` holding (h, c), the layout of `Unroll.agent_state` once
batched; without an LSTM H = 0.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

# Large and finite: exp() underflows to exactly 0, so a masked action is never sampled and adds 0 * finite to
# the entropy, where -inf would give 0 * inf = NaN.
ILLEGAL_LOGIT = -1e9
_FIRST = 0  # dm_env.StepType.FIRST


@dataclasses.dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """What network to build. `num_value_heads` is 1, or the number of tasks for PopArt."""

    num_actions: int
    torso: str = "shallow"
    use_lstm: bool = False
    lstm_size: int = 256
    num_value_heads: int = 1
    hidden_size: int | None = None  # width of the torso's final FC layer; None: 128 for minatar, else 256
    initializer: str = "glorot"

    def __post_init__(self):
        if self.torso not in TORSOS:
            raise ValueError(f"Unknown torso {self.torso!r}; valid choices: {', '.join(TORSOS)}.")
        if self.initializer not in INITIALIZERS:
            raise ValueError(
                f"Unknown initializer {self.initializer!r}; valid choices: {', '.join(INITIALIZERS)}."
            )
        if self.num_actions < 1:
            raise ValueError(f"num_actions must be >= 1, got {self.num_actions}.")
        if self.num_value_heads < 1:
            raise ValueError(f"num_value_heads must be >= 1, got {self.num_value_heads}.")
        if self.hidden_size is None:
            object.__setattr__(self, "hidden_size", 128 if self.torso == "minatar" else 256)
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {self.hidden_size}.")
        if self.use_lstm and self.lstm_size < 1:
            raise ValueError(f"lstm_size must be >= 1 when use_lstm, got {self.lstm_size}.")


INITIALIZERS = ("glorot", "orthogonal")  # the --initializer choices
_RELU_GAIN = float(np.sqrt(2.0))


def _kernel(initializer: str, gain: float = _RELU_GAIN) -> keras.initializers.Initializer:
    """A fresh kernel initializer per layer (Keras warns when one instance initialises several)."""
    if initializer == "orthogonal":
        return keras.initializers.Orthogonal(gain=gain)
    return keras.initializers.GlorotUniform()


class AgentOutput(NamedTuple):
    policy_logits: tf.Tensor  # float32 [..., A]
    baseline: tf.Tensor  # float32 [...]


class ShallowTorso(keras.layers.Layer):
    """[N, H, W, C] float -> [N, hidden_size]."""

    def __init__(self, hidden_size: int = 256, initializer: str = "glorot", **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(
            16, 8, strides=4, padding="same", activation="relu", kernel_initializer=_kernel(initializer)
        )
        self.conv2 = keras.layers.Conv2D(
            32, 4, strides=2, padding="same", activation="relu", kernel_initializer=_kernel(initializer)
        )
        self.flatten = keras.layers.Flatten()
        self.fc = keras.layers.Dense(hidden_size, activation="relu", kernel_initializer=_kernel(initializer))

    def call(self, frames: tf.Tensor) -> tf.Tensor:
        return self.fc(self.flatten(self.conv2(self.conv1(frames))))


class MinAtarTorso(keras.layers.Layer):
    """The MinAtar paper's torso (Young & Tian 2019, section 4). [N, H, W, C] float -> [N, hidden_size]."""

    def __init__(self, hidden_size: int = 128, initializer: str = "glorot", **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(
            16, 3, strides=1, padding="valid", activation="relu", kernel_initializer=_kernel(initializer)
        )
        self.flatten = keras.layers.Flatten()
        self.fc = keras.layers.Dense(hidden_size, activation="relu", kernel_initializer=_kernel(initializer))

    def call(self, frames: tf.Tensor) -> tf.Tensor:
        return self.fc(self.flatten(self.conv(frames)))


class ResidualBlock(keras.layers.Layer):
    """x + conv(relu(conv(relu(x)))), channels preserved."""

    def __init__(self, channels: int, initializer: str = "glorot", **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=_kernel(initializer))
        self.conv2 = keras.layers.Conv2D(channels, 3, padding="same", kernel_initializer=_kernel(initializer))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        return x + self.conv2(tf.nn.relu(self.conv1(tf.nn.relu(x))))


class DeepTorso(keras.layers.Layer):
    """The 15-layer residual torso. [N, H, W, C] float -> [N, hidden_size]."""

    def __init__(
        self,
        hidden_size: int = 256,
        initializer: str = "glorot",
        channels: tuple[int, ...] = (16, 32, 32),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.sections = []
        for num_channels in channels:
            conv = keras.layers.Conv2D(
                num_channels, 3, padding="same", kernel_initializer=_kernel(initializer)
            )
            pool = keras.layers.MaxPooling2D(pool_size=3, strides=2, padding="same")
            blocks = [ResidualBlock(num_channels, initializer) for _ in range(2)]
            self.sections.append((conv, pool, *blocks))
        self.flatten = keras.layers.Flatten()
        self.fc = keras.layers.Dense(hidden_size, activation="relu", kernel_initializer=_kernel(initializer))

    def call(self, frames: tf.Tensor) -> tf.Tensor:
        x = frames
        for conv, pool, block1, block2 in self.sections:
            x = block2(block1(pool(conv(x))))
        return self.fc(self.flatten(tf.nn.relu(x)))


_TORSO_CLASSES = {"shallow": ShallowTorso, "deep": DeepTorso, "minatar": MinAtarTorso}
TORSOS = tuple(_TORSO_CLASSES)  # the --network choices


class ImpalaNetwork(keras.layers.Layer):
    """Torso, optional LSTM core, policy and baseline heads. Build it with `make_network`."""

    def __init__(self, config: NetworkConfig, legal_action_mask: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.torso = _TORSO_CLASSES[config.torso](config.hidden_size, config.initializer)
        self.core = keras.layers.LSTMCell(config.lstm_size) if config.use_lstm else None
        self.policy_head = keras.layers.Dense(
            config.num_actions, kernel_initializer=_kernel(config.initializer, gain=0.01)
        )
        self.value_head = keras.layers.Dense(
            config.num_value_heads, kernel_initializer=_kernel(config.initializer, gain=1.0)
        )
        if legal_action_mask is None:
            self._legal_action_mask = None
        else:
            mask = np.asarray(legal_action_mask, dtype=bool)
            if mask.ndim != 2 or mask.shape[1] != config.num_actions:
                raise ValueError(
                    f"legal_action_mask must be bool [num_tasks, {config.num_actions}], "
                    f"got shape {mask.shape}."
                )
            if not mask.any(axis=1).all():
                raise ValueError("legal_action_mask has a task with no legal action.")
            self._legal_action_mask = tf.constant(mask)

    @property
    def state_size(self) -> int:
        """H of the `[2, B, H]` state; 0 without an LSTM."""
        return self.config.lstm_size if self.config.use_lstm else 0

    @property
    def value_kernel(self) -> keras.Variable:
        """float32 [core_output_size, num_value_heads]: the value head's final kernel (PopArt rescales it)."""
        return self.value_head.kernel

    @property
    def value_bias(self) -> keras.Variable:
        """float32 [num_value_heads]: the baseline head's final bias (PopArt rescales it)."""
        return self.value_head.bias

    def initial_state(self, batch_size: int) -> tf.Tensor:
        """Zeros float32 [2, batch_size, H]: (h, c)."""
        return tf.zeros([2, batch_size, self.state_size], tf.float32)

    def step(
        self,
        observation: tf.Tensor,
        prev_action: tf.Tensor,
        prev_reward: tf.Tensor,
        step_type: tf.Tensor,
        task_id: tf.Tensor,
        state: tf.Tensor,
    ) -> tuple[AgentOutput, tf.Tensor]:
        """One acting step of B environments, batch-major.

        Args:
          observation: uint8 [B, *obs_shape].
          prev_action: int32 [B], the action taken at the previous step (0 at FIRST).
          prev_reward: float32 [B], the raw reward received on arriving here (clipped to [-1, 1] inside).
          step_type: uint8 [B]; the state is reset where it is FIRST.
          task_id: int32 [B].
          state: float32 [2, B, H].

        Returns:
          AgentOutput(policy_logits [B, A], baseline [B]) and the new state [2, B, H].
        """
        add_time = lambda x: tf.expand_dims(x, 0)
        output, new_state = self.unroll(
            add_time(observation),
            add_time(prev_action),
            add_time(prev_reward),
            add_time(step_type),
            task_id,
            state,
        )
        return AgentOutput(output.policy_logits[0], output.baseline[0]), new_state

    def unroll(
        self,
        observation: tf.Tensor,
        prev_action: tf.Tensor,
        prev_reward: tf.Tensor,
        step_type: tf.Tensor,
        task_id: tf.Tensor,
        state: tf.Tensor,
    ) -> tuple[AgentOutput, tf.Tensor]:
        """The network over a time-major batch of unrolls.

        Args:
          observation: uint8 [T+1, B, *obs_shape].
          prev_action: int32 [T+1, B].
          prev_reward: float32 [T+1, B], raw (clipped to [-1, 1] inside).
          step_type: uint8 [T+1, B]; the state is reset at every FIRST.
          task_id: int32 [B].
          state: float32 [2, B, H], the state before step 0.

        Returns:
          AgentOutput(policy_logits [T+1, B, A], baseline [T+1, B]) and the state after step T, [2, B, H].
        """
        # T must be static (the LSTM loop is unrolled); B may be dynamic (exported policies take any batch).
        num_steps = observation.shape[0]
        frames = tf.reshape(observation, [-1, *observation.shape[2:]])
        # The one uint8 -> float conversion; everything upstream moves bytes.
        frames = tf.cast(frames, tf.float32) / 255.0
        torso_output = tf.reshape(self.torso(frames), [num_steps, -1, self.config.hidden_size])

        if self.core is None:
            core_output, final_state = torso_output, state
        else:
            core_output, final_state = self._run_core(
                torso_output, prev_action, prev_reward, step_type, state
            )

        policy_logits = self.policy_head(core_output)  # [T+1, B, A]
        if self._legal_action_mask is not None:
            legal = tf.gather(self._legal_action_mask, task_id)  # [B, A]
            policy_logits = tf.where(legal[None], policy_logits, ILLEGAL_LOGIT)

        values = self.value_head(core_output)  # [T+1, B, num_value_heads]
        if self.config.num_value_heads == 1:
            baseline = values[..., 0]
        else:
            task_one_hot = tf.one_hot(task_id, self.config.num_value_heads, dtype=values.dtype)  # [B, K]
            baseline = tf.reduce_sum(values * task_one_hot[None], axis=-1)
        return AgentOutput(policy_logits, baseline), final_state

    def _run_core(
        self,
        torso_output: tf.Tensor,
        prev_action: tf.Tensor,
        prev_reward: tf.Tensor,
        step_type: tf.Tensor,
        state: tf.Tensor,
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """LSTM over time. torso_output [T+1, B, F] -> ([T+1, B, H], final state [2, B, H])."""
        core_input = tf.concat(
            [
                torso_output,
                tf.one_hot(prev_action, self.config.num_actions, dtype=tf.float32),
                tf.clip_by_value(tf.cast(prev_reward, tf.float32), -1.0, 1.0)[..., None],
            ],
            axis=-1,
        )
        not_first = tf.cast(tf.not_equal(step_type, _FIRST), tf.float32)[..., None]  # [T+1, B, 1]
        h, c = state[0], state[1]
        outputs = []
        # T is static in every batch the learner sees; a Python loop lets XLA fuse the whole unroll.
        for t in range(core_input.shape[0]):
            h, c = h * not_first[t], c * not_first[t]
            output, (h, c) = self.core(core_input[t], [h, c])
            outputs.append(output)
        return tf.stack(outputs), tf.stack([h, c])


def make_network(
    config: NetworkConfig,
    observation_shape: tuple[int, ...],
    legal_action_mask: np.ndarray | None = None,
) -> ImpalaNetwork:
    """Builds the network and creates its variables by running it once on a zero observation.

    Args:
      config: the network to build.
      observation_shape: one frame's shape, e.g. (84, 84, 4) or (10, 10, C).
      legal_action_mask: optional bool [num_tasks, num_actions]; illegal logits of a task are set to -1e9.
    """
    if len(observation_shape) != 3:
        raise ValueError(
            f"observation_shape must be (height, width, channels), got {tuple(observation_shape)}."
        )
    network = ImpalaNetwork(config, legal_action_mask)
    network.unroll(
        observation=tf.zeros([1, 1, *observation_shape], tf.uint8),
        prev_action=tf.zeros([1, 1], tf.int32),
        prev_reward=tf.zeros([1, 1], tf.float32),
        step_type=tf.zeros([1, 1], tf.uint8),
        task_id=tf.zeros([1], tf.int32),
        state=network.initial_state(1),
    )
    return network
