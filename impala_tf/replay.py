"""Experience replay for the learner (Espeholt et al. 2018, Section 5.2.2): a FIFO buffer of whole unrolls and
the batches that mix replayed unrolls with fresh ones.

A learner batch of B unrolls with replay fraction f holds B − round(f·B) fresh unrolls first, then round(f·B)
unrolls drawn uniformly (without replacement within the batch) from the buffer; every fresh unroll is added to the
buffer after it is drawn into its batch, evicting the oldest when the buffer is full. Until the buffer holds B
unrolls, batches are all fresh (so that the first replayed unrolls are not a few early ones over and over).

A replayed unroll is the unroll the actor sent, bit for bit: its behaviour logits, LSTM start state and
`policy_version`, so the off-policy correction sees its real lag.

Memory: Atari observations are stacks of the last K frames, `[T+1, H, W, K]`, so consecutive steps share K−1
frames. The buffer keeps each step's newest frame and the first step's whole stack, and a whole stack only where
a step's stack is not the previous one shifted by a frame (an episode's first step); sampling rebuilds the
stacks. For an Atari unroll (T = 20, 84×84×4) that is 24 frames instead of 84. Observations without such a
frame axis (MinAtar's channels, Catch) are kept whole: the check finds no shift and costs one comparison a step.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator

import numpy as np

from impala_tf.unroll import Unroll, stack_time_major


@dataclasses.dataclass(frozen=True)
class PackedFrames:
    """A `[T+1, H, W, K]` frame-stack observation with each frame stored once.

    first: [H, W, K], the stack at step 0.
    newest: [T, H, W], the newest frame (`[..., -1]`) of steps 1..T.
    whole: {t: [H, W, K]}, steps whose stack is not step t−1's shifted by one frame.
    """

    first: np.ndarray
    newest: np.ndarray
    whole: dict[int, np.ndarray]

    @property
    def nbytes(self) -> int:
        return self.first.nbytes + self.newest.nbytes + sum(s.nbytes for s in self.whole.values())


def pack_frames(observation: np.ndarray) -> PackedFrames | np.ndarray:
    """Packs a `[T+1, H, W, K]` frame-stack observation (K ≥ 2); returns anything else unchanged."""
    if observation.ndim != 4 or observation.shape[-1] < 2:
        return observation
    shifted = np.all(observation[1:, ..., :-1] == observation[:-1, ..., 1:], axis=(1, 2, 3))  # [T]
    if not shifted.any():  # no step shares frames: not a frame stack
        return observation
    whole = {t + 1: observation[t + 1].copy() for t in np.flatnonzero(~shifted)}
    return PackedFrames(observation[0].copy(), observation[1:, ..., -1].copy(), whole)


def unpack_frames(packed: PackedFrames | np.ndarray) -> np.ndarray:
    """The observation `pack_frames` packed, bit for bit: `[T+1, H, W, K]`."""
    if not isinstance(packed, PackedFrames):
        return packed
    steps = len(packed.newest) + 1
    observation = np.empty((steps, *packed.first.shape), packed.first.dtype)
    observation[0] = packed.first
    for t in range(1, steps):
        if t in packed.whole:
            observation[t] = packed.whole[t]
        else:
            observation[t, ..., :-1] = observation[t - 1, ..., 1:]
            observation[t, ..., -1] = packed.newest[t - 1]
    return observation


def unroll_nbytes(unroll: Unroll) -> int:
    """Bytes of an unroll's arrays (a PackedFrames observation counted packed)."""
    return sum(
        value.nbytes if isinstance(value, PackedFrames) else np.asarray(value).nbytes for value in unroll
    )


class ReplayBuffer:
    """FIFO buffer of at most `capacity` unrolls, sampled uniformly. Not thread-safe: one thread adds and samples
    (the learner's input pipeline); others may read `len()` and `nbytes`."""

    def __init__(self, capacity: int, seed: int):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._items: list[Unroll] = []
        self._next = 0  # where the next unroll goes once the buffer is full (the oldest one)
        self._rng = np.random.default_rng(seed)
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, unroll: Unroll) -> None:
        # Copies: an actor's unrolls are views of one array over its environments (or read-only Ray buffers).
        packed = Unroll(*(np.array(value) for value in unroll))
        packed = packed._replace(observation=pack_frames(packed.observation))
        size = unroll_nbytes(packed)
        if len(self._items) < self.capacity:
            self._items.append(packed)
        else:
            self.nbytes -= unroll_nbytes(self._items[self._next])
            self._items[self._next] = packed
            self._next = (self._next + 1) % self.capacity
        self.nbytes += size

    def sample(self, n: int) -> list[Unroll]:
        """`n` distinct unrolls drawn uniformly (n ≤ len(self))."""
        if n > len(self._items):
            raise ValueError(f"cannot sample {n} unrolls from a buffer of {len(self._items)}")
        indices = self._rng.choice(len(self._items), size=n, replace=False)
        return [
            self._items[i]._replace(observation=unpack_frames(self._items[i].observation)) for i in indices
        ]


def num_replayed(batch_size: int, fraction: float) -> int:
    """Replayed unrolls in a full batch: round(f·B), at most B − 1 so that every batch brings fresh data."""
    return min(batch_size - 1, round(fraction * batch_size))


def learner_batches(
    unrolls: Iterable[Unroll], batch_size: int, buffer: ReplayBuffer | None = None, fraction: float = 0.0
) -> Iterator[tuple[Unroll, int]]:
    """(time-major batch of B, how many of its unrolls were replayed). Without a buffer: B fresh unrolls in
    arrival order. With one: B − round(f·B) fresh unrolls first, then round(f·B) replayed (all fresh until the
    buffer holds B). A last group short of its fresh unrolls is dropped."""
    source = iter(unrolls)
    replayed = num_replayed(batch_size, fraction) if buffer is not None else 0
    while True:
        n_replay = replayed if replayed and len(buffer) >= batch_size else 0
        fresh = list(itertools.islice(source, batch_size - n_replay))
        if len(fresh) < batch_size - n_replay:
            return
        old = buffer.sample(n_replay) if n_replay else []
        if buffer is not None:
            for unroll in fresh:
                buffer.add(unroll)
        yield stack_time_major(fresh + old), n_replay
