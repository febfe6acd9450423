"""MinAtar and Catch behind the BatchedEnv face, and the single-environment dm_env faces."""

from __future__ import annotations

import time

import dm_env
import numpy as np
import pytest

from impala_tf import envs
from impala_tf import suites as registry
from impala_tf.envs import catch, minatar

FIRST, MID, LAST = (int(t) for t in (dm_env.StepType.FIRST, dm_env.StepType.MID, dm_env.StepType.LAST))


def play(env: envs.BatchedEnv, steps: int, seed: int = 0):
    """Random legal actions; yields each BatchedTimeStep (the reset first)."""
    rng = np.random.default_rng(seed)
    legal = env.legal_action_mask()[env.task_ids]
    yield env.reset()
    for _ in range(steps):
        yield env.step((rng.random(legal.shape) * legal).argmax(axis=1).astype(np.int32))


def check_dm_env_semantics(timesteps, num_envs: int) -> None:
    """FIRST (reward 0, discount 0) exactly after each LAST; MID steps have discount 1."""
    previous = None
    for timestep in timesteps:
        if previous is None:
            assert np.all(timestep.step_type == FIRST)
        else:
            after_last = previous.step_type == LAST
            assert np.all(timestep.step_type[after_last] == FIRST)
            assert np.all(timestep.step_type[~after_last] != FIRST)
        first = timestep.step_type == FIRST
        assert np.all(timestep.reward[first] == 0) and np.all(timestep.discount[first] == 0)
        assert np.all(timestep.discount[timestep.step_type == MID] == 1)
        assert timestep.observation.dtype == np.uint8 and len(timestep.observation) == num_envs
        previous = timestep


# --- MinAtar ---------------------------------------------------------------------------------------


def test_minatar_suite_steps_resets_and_pads_channels():
    suite = registry.get_suite("minatar")
    task_ids = [i % 5 for i in range(10)]
    env = envs.make_batched_env(suite, task_ids, seed=0)
    assert env.observation_spec().shape == (10, 10, 10)  # seaquest has the most channels
    assert env.action_spec().num_values == 6
    mask = env.legal_action_mask()
    for task, game in enumerate(suite.games):
        assert tuple(np.flatnonzero(mask[task])) == minatar.minimal_action_set(game)
    timesteps = list(play(env, 400))
    check_dm_env_semantics(timesteps, 10)
    observations = np.stack([t.observation for t in timesteps])
    assert set(np.unique(observations)) <= {0, 255}
    breakout = [i for i, t in enumerate(task_ids) if suite.games[t] == "breakout"]
    assert np.all(observations[:, breakout, :, :, minatar.CHANNELS["breakout"] :] == 0)  # padding
    assert np.any(np.stack([t.step_type for t in timesteps]) == LAST)


def test_minatar_episode_stats_sum_the_episode_rewards():
    env = minatar.MinAtarBatchedEnv(("breakout", "asterix"), [0, 1, 0, 1], seed=1)
    returns = np.zeros(4)
    finished = 0
    for timestep in play(env, 600):
        returns += timestep.reward
        for episode in env.pop_finished_episodes():
            assert episode.episode_return == pytest.approx(returns[episode.env_index])
            assert episode.task_id == env.task_ids[episode.env_index]
            returns[episode.env_index] = 0
            finished += 1
    assert finished > 4


def test_minatar_same_seed_same_steps():
    def run(seed):
        env = minatar.MinAtarBatchedEnv(("space_invaders",), [0, 0], seed=seed)
        return np.stack([t.observation for t in play(env, 50)])

    np.testing.assert_array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))


def test_minatar_minimal_action_set_and_step_cap():
    env = minatar.MinAtarBatchedEnv(("freeway",), [0], seed=0, action_set="minimal", max_episode_steps=25)
    assert env.action_spec().num_values == 3 and env.legal_action_mask().all()
    timesteps = list(play(env, 26))
    assert timesteps[25].step_type[0] == LAST and timesteps[25].discount[0] == 1.0  # truncated: bootstrap
    assert timesteps[26].step_type[0] == FIRST


def test_minatar_steps_fast_enough():
    env = minatar.MinAtarBatchedEnv(minatar.GAMES, [i % 5 for i in range(16)], seed=0)
    env.reset()
    actions = np.zeros(16, np.int32)
    start = time.perf_counter()
    for _ in range(100):
        env.step(actions)
    steps_per_second = 1600 / (time.perf_counter() - start)
    assert steps_per_second > 5_000  # ~40k on an idle core; far above what inference consumes


# --- Catch ---------------------------------------------------------------------------------------


def test_catch_episodes_last_rows_minus_one_steps_and_pay_plus_or_minus_one():
    env = catch.CatchBatchedEnv([0] * 6, seed=0, rows=10, columns=5)
    assert env.observation_spec().shape == (10, 5, 1) and env.action_spec().num_values == 3
    timesteps = list(play(env, 40))
    check_dm_env_semantics(timesteps, 6)
    step_types = np.stack([t.step_type for t in timesteps])  # [41, 6]
    rewards = np.stack([t.reward for t in timesteps])
    np.testing.assert_array_equal(np.flatnonzero(step_types[:, 0] == LAST), [9, 19, 29, 39])
    assert set(np.unique(rewards[step_types == LAST])) <= {-1.0, 1.0}
    assert np.all(rewards[step_types != LAST] == 0)
    assert np.all(np.stack([t.discount for t in timesteps])[step_types == LAST] == 0)
    # Ball and paddle are one pixel each; they share a pixel only on a catch.
    pixels = np.stack([(t.observation.reshape(6, -1) == 255).sum(axis=1) for t in timesteps])
    assert np.all(pixels[step_types != LAST] == 2)
    np.testing.assert_array_equal(pixels[step_types == LAST], np.where(rewards[step_types == LAST] > 0, 1, 2))


def test_catch_paddle_that_follows_the_ball_always_catches():
    env = catch.CatchBatchedEnv([0] * 8, seed=5)
    timestep = env.reset()
    for _ in range(49):  # five episodes: FIRST + 9 steps each
        board = timestep.observation[..., 0]
        ball = board[:, :-1].max(axis=1).argmax(axis=1)
        paddle = board[:, -1].argmax(axis=1)
        timestep = env.step((np.sign(ball - paddle) + 1).astype(np.int32))
    episodes = env.pop_finished_episodes()
    assert len(episodes) == 8 * 5
    assert all(e.episode_return == 1.0 and e.episode_frames == 9 for e in episodes)


def test_catch_same_seed_same_steps():
    def run(seed):
        return np.stack([t.observation for t in play(catch.CatchBatchedEnv([0] * 4, seed=seed), 30)])

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


def test_catch_rejects_bad_input():
    with pytest.raises(ValueError, match="one task"):
        catch.CatchBatchedEnv([1], seed=0)
    env = catch.CatchBatchedEnv([0], seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        env.step(np.array([3]))
    with pytest.raises(ValueError, match="fixed length"):
        envs.make_batched_env(registry.get_suite("catch"), [0], seed=0, max_episode_frames=5)
    with pytest.raises(ValueError, match="valid: catch"):
        envs.make_batched_env(registry.get_suite("catch"), [0], seed=0, protocol="impala")


# --- single-environment faces --------------------------------------------------------------------


def test_single_environment_faces_follow_dm_env():
    faces = (
        envs.SingleEnvironment(catch.CatchBatchedEnv([0], seed=0)),
        envs.SingleEnvironment(minatar.MinAtarBatchedEnv(("breakout",), [0], seed=0)),
    )
    for env in faces:
        assert isinstance(env, dm_env.Environment)
        timestep = env.reset()
        assert timestep.first() and timestep.reward is None and timestep.discount is None
        assert timestep.observation.shape == env.observation_spec().shape
        for _ in range(500):
            timestep = env.step(0)
            if timestep.last():
                break
        assert timestep.last() and timestep.discount == 0.0
        assert env.step(0).first()  # auto-reset
        assert len(env.pop_finished_episodes()) == 1
        assert env.legal_actions().dtype == bool


def test_evaluation_cuts_a_minatar_game_that_cannot_end_at_its_step_cap(monkeypatch, run_spec):
    from impala_tf import evaluate

    # A seaquest submarine that never dives stays at the surface, where nothing ends the game.
    monkeypatch.setattr(minatar, "EVALUATION_MAX_EPISODE_STEPS", 300)
    spec = run_spec(registry.get_suite("minatar").restrict(["seaquest"]))
    assert envs.evaluation_max_episode_frames(spec.suite) == 300
    assert envs.evaluation_max_episode_frames(registry.get_suite("catch")) is None

    def never_dive(timestep, prev_action, task_id, state):
        n = len(timestep.step_type)
        return np.zeros(n, np.int32), np.zeros((n, 6), np.float32), state  # action 0: no-op

    results = evaluate.play_games(spec, never_dive, lambda n: None, episodes=2, seed=0)
    assert [r["frames"] for r in results] == [300, 300] and all(r["score"] == 0 for r in results)


def test_a_held_minatar_environment_is_not_stepped_until_the_next_reset():
    env = minatar.MinAtarBatchedEnv(["breakout"], [0, 0, 0], seed=0)
    timesteps = list(play(env, 5))
    held_state = env._envs[1].state().copy()
    env.hold(np.array([1]))
    rng = np.random.default_rng(1)
    for _ in range(50):
        timestep = env.step(rng.integers(0, 6, 3, dtype=np.int32))
        assert timestep.step_type[1] == MID and timestep.reward[1] == 0
    assert np.array_equal(env._envs[1].state(), held_state)
    assert all(episode.env_index != 1 for episode in env.pop_finished_episodes())
    assert not np.array_equal(timesteps[-1].observation[0], timestep.observation[0])  # the others went on
    env.reset()
    env.step(np.ones(3, np.int32))
    assert not np.array_equal(env._envs[1].state(), held_state)  # released


def test_evaluation_steps_the_policy_only_on_unfinished_games_and_keeps_each_games_state(
    monkeypatch, run_spec
):
    from impala_tf import evaluate

    monkeypatch.setattr(minatar, "EVALUATION_MAX_EPISODE_STEPS", 300)
    spec = run_spec(registry.get_suite("minatar").restrict(["breakout", "seaquest"]))
    batch_sizes, steps_seen = [], {}

    def initial_state(n):  # [2, N, 1]: (which environment, how many steps it has been played)
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)])[..., None]

    def no_op(
        timestep, prev_action, task_id, state
    ):  # breakout's ball falls; seaquest's submarine never dives
        n = len(timestep.step_type)
        batch_sizes.append(n)
        state = state.copy()
        state[1] += 1
        for env_index, steps in zip(state[0, :, 0], state[1, :, 0], strict=True):
            steps_seen[int(env_index)] = max(steps_seen.get(int(env_index), 0), int(steps))
        return np.zeros(n, np.int32), np.zeros((n, 6), np.float32), state

    results = evaluate.play_games(spec, no_op, initial_state, episodes=3, seed=0)
    by_task = {task: [r["frames"] for r in results if r["task"] == task] for task in ("breakout", "seaquest")}
    assert len(by_task["breakout"]) == 3 and max(by_task["breakout"]) < 300
    assert by_task["seaquest"] == [300, 300, 300]
    assert batch_sizes[0] == 6 and batch_sizes[-1] == 4  # the three seaquest games, padded to a power of two
    assert batch_sizes == sorted(batch_sizes, reverse=True)
    # Every environment's state came back to it: the seaquest games' (envs 3-5) counted all 300 of their steps.
    assert [steps_seen[i] for i in (3, 4, 5)] == [300, 300, 300]
