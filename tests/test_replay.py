"""Experience replay: FIFO eviction, uniform sampling, bit-exact round trips of frame stacks, batch composition."""

import collections

import numpy as np
import pytest

from impala_tf import replay
from impala_tf.unroll import Unroll, stack_time_major

T1, K = 21, 4  # Atari: T + 1 steps of 84x84 stacks of 4 frames (small frames here)


def _unroll(k: int, observation: np.ndarray | None = None) -> Unroll:
    """Unroll number k: every field encodes k (policy_version = k)."""
    rng = np.random.default_rng(k)
    if observation is None:
        observation = rng.integers(0, 255, (T1, 6, 6, 3), np.uint8)  # channels, not a frame stack
    return Unroll(
        observation=observation,
        step_type=np.full(T1, 1, np.uint8),
        reward=rng.normal(size=T1).astype(np.float32),
        discount=np.ones(T1, np.float32),
        prev_action=rng.integers(0, 6, T1).astype(np.int32),
        action=rng.integers(0, 6, T1).astype(np.int32),
        behaviour_logits=rng.normal(size=(T1, 6)).astype(np.float32),
        task_id=np.int32(k % 3),
        agent_state=rng.normal(size=(2, 8)).astype(np.float32),
        policy_version=np.int64(k),
    )


def _frame_stacks(seed: int, first_steps: tuple[int, ...] = ()) -> np.ndarray:
    """[T1, 8, 8, K] as an Atari actor sees them: each step's stack is the previous one shifted by a new frame,
    except at `first_steps`, where an episode starts with its first frame repeated K times."""
    rng = np.random.default_rng(seed)
    stack = rng.integers(0, 255, (8, 8, K), np.uint8)
    out = np.empty((T1, 8, 8, K), np.uint8)
    out[0] = stack
    for t in range(1, T1):
        frame = rng.integers(0, 255, (8, 8), np.uint8)
        if t in first_steps:
            stack = np.repeat(frame[..., None], K, axis=-1)
        else:
            stack = np.concatenate([stack[..., 1:], frame[..., None]], axis=-1)
        out[t] = stack
    return out


def _assert_same_unroll(a: Unroll, b: Unroll) -> None:
    for name in Unroll._fields:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("first_steps", [(), (7,), (1, 2, 20)])
def test_a_replayed_atari_unroll_round_trips_bit_for_bit_with_each_frame_stored_once(first_steps):
    unroll = _unroll(1, _frame_stacks(0, first_steps))
    buffer = replay.ReplayBuffer(capacity=4, seed=0)
    buffer.add(unroll)
    (back,) = buffer.sample(1)
    _assert_same_unroll(back, unroll)
    # Stored: the first stack, one new frame per later step, a whole stack per episode start.
    frames = K + (T1 - 1) + K * len(first_steps)
    observation_bytes = buffer.nbytes - (replay.unroll_nbytes(unroll) - unroll.observation.nbytes)
    assert observation_bytes == frames * 8 * 8
    if not first_steps:
        assert observation_bytes == 24 / 84 * unroll.observation.nbytes  # Atari's 24 frames instead of 84


def test_observations_without_a_frame_stack_are_stored_whole_and_round_trip():
    unroll = _unroll(2)
    assert replay.pack_frames(unroll.observation) is unroll.observation
    buffer = replay.ReplayBuffer(capacity=4, seed=0)
    buffer.add(unroll)
    assert buffer.nbytes == replay.unroll_nbytes(unroll)
    _assert_same_unroll(buffer.sample(1)[0], unroll)


def test_the_buffer_keeps_copies_not_views_of_the_actors_arrays():
    unroll = _unroll(3)
    buffer = replay.ReplayBuffer(capacity=2, seed=0)
    buffer.add(unroll)
    unroll.reward[:] = 99.0  # the actor reuses or frees its arrays
    assert not np.any(buffer.sample(1)[0].reward == 99.0)


def test_a_full_buffer_evicts_the_oldest_unroll_first():
    buffer = replay.ReplayBuffer(capacity=3, seed=0)
    for k in range(5):
        buffer.add(_unroll(k))
    assert len(buffer) == 3
    assert sorted(int(u.policy_version) for u in buffer.sample(3)) == [2, 3, 4]
    assert buffer.nbytes == sum(replay.unroll_nbytes(_unroll(k)) for k in (2, 3, 4))


def test_sampling_is_uniform_over_the_buffer_and_distinct_within_a_draw():
    buffer = replay.ReplayBuffer(capacity=10, seed=1)
    for k in range(10):
        buffer.add(_unroll(k))
    counts = collections.Counter()
    for _ in range(2000):
        draw = [int(u.policy_version) for u in buffer.sample(3)]
        assert len(set(draw)) == 3
        counts.update(draw)
    # 600 expected per unroll; a binomial's sd is ~20, so 5 sd either side.
    assert set(counts) == set(range(10))
    assert all(500 < c < 700 for c in counts.values()), counts
    with pytest.raises(ValueError, match="cannot sample 11"):
        buffer.sample(11)


def test_batches_are_all_fresh_until_the_buffer_holds_a_batch_then_fresh_first_then_replayed():
    buffer = replay.ReplayBuffer(capacity=100, seed=0)
    fresh = iter([_unroll(k) for k in range(20)])
    batches = list(replay.learner_batches(fresh, batch_size=4, buffer=buffer, fraction=0.5))
    versions = [list(batch.policy_version) for batch, _ in batches]
    replayed = [n for _, n in batches]
    assert replayed[:1] == [0] and set(replayed[1:]) == {2}
    assert versions[0] == [0, 1, 2, 3]
    seen = 4
    for batch_versions in versions[1:]:
        assert batch_versions[:2] == [seen, seen + 1]  # fresh unrolls in arrival order
        assert all(v < seen for v in batch_versions[2:])  # replayed: acted earlier
        seen += 2
    assert len(batches) == 1 + (20 - 4) // 2
    assert len(buffer) == 20  # every fresh unroll was added once


def test_without_replay_batches_are_consecutive_groups_exactly_as_before():
    unrolls = [_unroll(k) for k in range(9)]
    batches = list(replay.learner_batches(iter(unrolls), batch_size=4))
    assert [n for _, n in batches] == [0, 0]  # the ninth unroll does not fill a batch
    for b, (batch, _) in enumerate(batches):
        _assert_same_unroll(batch, stack_time_major(unrolls[4 * b : 4 * b + 4]))


@pytest.mark.parametrize("fraction, expected", [(0.5, 16), (0.01, 0), (0.99, 31), (0.25, 8)])
def test_the_replayed_share_rounds_and_always_leaves_fresh_data(fraction, expected):
    assert replay.num_replayed(32, fraction) == expected
