"""Atari behind the BatchedEnv face: protocols, life loss, frame cap, raw rewards, seeding, all 57 games."""

from __future__ import annotations

import csv
from pathlib import Path

import dm_env
import numpy as np
import pytest

import impala_tf.envs
from impala_tf import envs
from impala_tf import suites as registry
from impala_tf.envs import atari

FIRST, MID, LAST = (int(t) for t in (dm_env.StepType.FIRST, dm_env.StepType.MID, dm_env.StepType.LAST))


def atari57_action_counts() -> dict[str, tuple[int, int]]:
    text = (Path(impala_tf.envs.__file__).parents[1] / "data" / "atari57_envs.csv").read_text()
    return {
        r["ale_rom_id"]: (int(r["minimal_actions"]), int(r["full_actions"]))
        for r in csv.DictReader(text.splitlines())
    }


def random_legal_actions(rng: np.random.Generator, env: envs.BatchedEnv) -> np.ndarray:
    legal = env.legal_action_mask()[env.task_ids]  # [N, A]
    scores = rng.random(legal.shape) * legal
    return scores.argmax(axis=1).astype(np.int32)


@pytest.mark.parametrize("protocol", ["impala", "machado"])
def test_every_atari57_game_resets_and_steps(protocol):
    suite = registry.get_suite("atari57")
    env = envs.make_batched_env(suite, list(range(57)), seed=0, protocol=protocol, num_threads=2)
    try:
        counts = atari57_action_counts()
        assert env.legal_action_mask().shape == (57, 18)
        assert {g: int(n) for g, n in zip(suite.games, env.legal_action_mask().sum(1), strict=True)} == {
            g: counts[g][1] for g in suite.games
        }
        rng = np.random.default_rng(0)
        timestep = env.reset()
        assert timestep.observation.shape == (57, 84, 84, 4) and timestep.observation.dtype == np.uint8
        assert np.all(timestep.step_type == FIRST)
        for _ in range(3):
            timestep = env.step(random_legal_actions(rng, env))
            assert timestep.observation.shape == (57, 84, 84, 4)
            assert timestep.reward.dtype == np.float32 and timestep.discount.dtype == np.float32
            assert np.all(timestep.step_type == MID)
        # Every game shows a screen (its newest stacked frame is not blank).
        assert np.all(timestep.observation[..., 3].reshape(57, -1).max(axis=1) > 0)
    finally:
        env.close()


def test_specs_and_action_sets():
    pong_full = envs.SingleEnvironment(atari.AtariBatchedEnv(("pong",), [0], seed=0, num_threads=1))
    pong_minimal = envs.SingleEnvironment(
        atari.AtariBatchedEnv(("pong",), [0], seed=0, action_set="minimal", num_threads=1)
    )
    assert (
        pong_full.observation_spec().shape == (84, 84, 4) and pong_full.observation_spec().dtype == np.uint8
    )
    assert pong_full.action_spec().num_values == 18
    assert pong_minimal.action_spec().num_values == atari57_action_counts()["pong"][0] == 6
    assert atari.game_action_set("skiing", "full") == (0, 2, 3, 4, 5, 6, 7, 8, 9)
    assert len(atari.game_action_set("skiing", "minimal")) == atari57_action_counts()["skiing"][0]
    skiing = atari.AtariBatchedEnv(("pong", "skiing"), [1], seed=0)
    assert skiing.legal_action_mask()[1].sum() == 9 and not skiing.legal_action_mask()[1, 1]  # no FIRE
    assert tuple(np.flatnonzero(skiing.legal_action_mask()[1])) == atari.game_action_set("skiing", "full")
    for env in (pong_full, pong_minimal, skiing):
        env.close()


def test_illegal_full_set_action_runs_as_noop():
    noop = atari.AtariBatchedEnv(("skiing",), [0, 0], seed=3, protocol="machado")
    illegal = atari.AtariBatchedEnv(("skiing",), [0, 0], seed=3, protocol="machado")
    a, b = noop.reset(), illegal.reset()
    for _ in range(20):
        a, b = noop.step(np.zeros(2, np.int32)), illegal.step(np.full(2, 17, np.int32))  # DOWNLEFTFIRE
    np.testing.assert_array_equal(a.observation, b.observation)
    noop.close()
    illegal.close()


def redraw_noop_starts(env, obs: np.ndarray, info: dict) -> np.ndarray:
    """The impala protocol's no-op starts on a raw AtariVectorEnv (noop_max=31): a game that drew 0 no-op frames
    is reset again until it draws 1..30. Returns the observations after the redraws."""
    while not info["episode_frame_number"].all():
        obs, info = env.reset(options={"reset_mask": info["episode_frame_number"] == 0})
    return obs


def test_observations_match_ale_py_frame_stack_across_games_and_resets():
    """The channels-last stack built here equals ale-py's own [4, 84, 84] stack, env by env, through a
    truncation (new game) and with two games interleaved in the batch."""
    from ale_py.vector_env import AtariVectorEnv

    games, task_ids, seed, cap = ("boxing", "pong"), [1, 0, 1], 5, 160
    ours = atari.AtariBatchedEnv(games, task_ids, seed, max_episode_frames=cap)
    seeds = atari.env_seeds(seed, len(task_ids))
    raw = {}
    for task, game in enumerate(games):
        index = [i for i, t in enumerate(task_ids) if t == task]
        env = AtariVectorEnv(
            game,
            len(index),
            max_num_frames_per_episode=cap,
            full_action_space=True,
            noop_max=31,
            life_loss_info=True,
            reward_clipping=False,
            use_fire_reset=False,
        )
        redraw_noop_starts(env, *env.reset(seed=seeds[index]))
        raw[task] = (env, index)
    ours.reset()
    rng = np.random.default_rng(1)
    saw_new_game = False
    for _ in range(60):
        actions = rng.integers(0, 18, len(task_ids), dtype=np.int32)
        timestep = ours.step(actions)
        saw_new_game |= bool(np.any(timestep.step_type == FIRST))
        for env, index in raw.values():
            obs, reward, *_, info = env.step(actions[index])
            obs = redraw_noop_starts(env, obs, info)
            np.testing.assert_array_equal(timestep.observation[index], obs.transpose(0, 2, 3, 1))
    assert saw_new_game
    ours.close()
    for env, _ in raw.values():
        env.close()


def test_life_loss_ends_learning_episode_but_score_spans_the_game():
    env = atari.AtariBatchedEnv(("breakout",), [0, 0], seed=2, protocol="impala")
    rng = np.random.default_rng(0)
    timestep = env.reset()
    rewards_this_game = np.zeros(2)
    learning_episodes_this_game = np.zeros(2, int)
    finished, life_losses = [], 0
    lives_before = env.lives.copy()
    for _ in range(2500):
        was_last = timestep.step_type == LAST
        lives_at_last = env.lives.copy()
        timestep = env.step(rng.integers(0, 18, 2, dtype=np.int32))
        for episode in env.pop_finished_episodes():
            i = episode.env_index
            assert episode.episode_return == pytest.approx(rewards_this_game[i])
            finished.append((episode, learning_episodes_this_game[i]))
            rewards_this_game[i] = 0
            learning_episodes_this_game[i] = 0
        # A life-loss LAST (lives left) is followed by a FIRST of the SAME game: the lives carry on.
        continued = was_last & (lives_at_last > 0)
        assert np.all(timestep.step_type[was_last] == FIRST)
        assert np.all(env.lives[continued] == lives_at_last[continued])
        rewards_this_game += timestep.reward
        lost = (timestep.step_type == LAST) & (env.lives < lives_before) & (env.lives > 0)
        assert np.all(timestep.discount[lost] == 0.0)
        life_losses += int(lost.sum())
        learning_episodes_this_game += timestep.step_type == LAST
        lives_before = env.lives.copy()
        if len(finished) >= 2:
            break
    assert life_losses >= 4
    assert len(finished) >= 2
    for episode, learning_episodes in finished:
        assert learning_episodes == 5  # breakout: five lives, five learning episodes in one game
        assert episode.episode_frames > 0
    env.close()


def test_machado_protocol_has_one_episode_per_game_and_no_noop_starts():
    env = atari.AtariBatchedEnv(("breakout",), [0, 0], seed=2, protocol="machado")
    env.reset()
    assert np.all(env.game_frames == 0)  # no no-op starts
    rng = np.random.default_rng(0)
    lasts = 0
    for _ in range(1500):
        timestep = env.step(rng.integers(0, 18, 2, dtype=np.int32))
        lasts += int(np.sum(timestep.step_type == LAST))
        if env.pop_finished_episodes():
            break
    assert lasts == 1  # the game over, and no life-loss LASTs before it
    env.close()


def test_machado_sticky_actions_make_identical_action_sequences_diverge():
    # Without no-op starts the emulator is deterministic, so two envs fed the same actions differ only
    # through sticky actions (each env draws its own repeats).
    env = atari.AtariBatchedEnv(("breakout",), [0, 0], seed=0, protocol="machado")
    env.reset()
    rng = np.random.default_rng(0)
    diverged = False
    for _ in range(100):
        timestep = env.step(np.full(2, rng.choice([3, 4]), np.int32))  # RIGHT or LEFT, the same for both
        diverged |= not np.array_equal(timestep.observation[0], timestep.observation[1])
    assert diverged
    env.close()


def test_noop_starts_differ_between_games():
    env = atari.AtariBatchedEnv(("pong",), [0] * 4, seed=0, protocol="impala", max_episode_frames=40)
    env.reset()
    starts = [int(f) for f in env.game_frames]
    for _ in range(80):
        timestep = env.step(np.zeros(4, np.int32))
        starts += [int(f) for f in env.game_frames[timestep.step_type == FIRST]]
    assert len(starts) > 8  # several games per environment
    assert len(set(starts)) > 3
    assert 1 <= min(starts) and max(starts) <= 30
    env.close()


def test_every_game_starts_with_1_to_30_noop_frames_uniformly():
    """The reference scores' no-op starts: 1..30 NOOP frames before the first agent step. ale-py draws 0..30 (its
    noop_max=31); the games that drew 0 are reset again at once."""
    starts, redraws = [], 0
    for seed in range(4):
        env = atari.AtariBatchedEnv(("pong",), [0] * 16, seed=seed, protocol="impala", max_episode_frames=40)
        env.reset()
        starts += env.game_frames.tolist()
        for _ in range(60):  # a truncation every 10 steps, and the next step begins a new game
            timestep = env.step(np.zeros(16, np.int32))
            starts += env.game_frames[timestep.step_type == FIRST].tolist()
        redraws += env.noop_redraws
        env.close()
    assert len(starts) == 4 * 16 * 6
    assert sorted(set(starts)) == list(range(1, 31))  # never 0; every count of 1..30 occurs
    assert max(np.bincount(starts)) < 4 * len(starts) / 30  # no count far above its share
    assert 0 < redraws < len(starts) / 10  # about 1 game in 31 drew 0


def test_frame_cap_truncates_with_discount_one_and_restarts():
    cap = 200
    env = atari.AtariBatchedEnv(("pong",), [0], seed=1, protocol="impala", max_episode_frames=cap)
    env.reset()
    noops = int(env.game_frames[0])
    steps = 0
    while True:
        timestep = env.step(np.zeros(1, np.int32))
        steps += 1
        if timestep.step_type[0] == LAST:
            break
        assert steps < 1000
    assert steps == cap // atari.FRAMES_PER_STEP
    assert timestep.discount[0] == 1.0  # truncation: the learner bootstraps
    timestep = env.step(np.zeros(1, np.int32))
    assert timestep.step_type[0] == FIRST and timestep.reward[0] == 0.0 and timestep.discount[0] == 0.0
    (episode,) = env.pop_finished_episodes()
    assert episode.episode_frames == noops + cap
    env.close()


def test_game_ending_inside_a_first_step_is_closed_on_the_next_step():
    """A truncation that lands on the NOOP step after a life-loss LAST (emitted as FIRST) is emitted as a LAST
    (discount 1, reward 0, the FIRST's observation) on the next step, and the new game starts after it."""

    def play(cap: int, steps: int):
        env = atari.AtariBatchedEnv(("breakout",), [0], seed=2, max_episode_frames=cap)
        rng = np.random.default_rng(0)
        timesteps, finished = [env.reset()], []
        for _ in range(steps):
            timesteps.append(env.step(rng.integers(0, 18, 1, dtype=np.int32)))
            finished.append(env.pop_finished_episodes())
        env.close()
        return timesteps, finished

    timesteps, _ = play(108_000, 400)
    k = next(t for t, timestep in enumerate(timesteps) if timestep.step_type[0] == LAST)  # first life lost
    # Same seed and actions, with the frame cap landing on step k + 1 (the FIRST after that LAST).
    timesteps, finished = play((k + 1) * atari.FRAMES_PER_STEP, k + 3)
    step_types = [int(t.step_type[0]) for t in timesteps[k:]]
    assert step_types == [LAST, FIRST, LAST, FIRST]
    assert timesteps[k].discount[0] == 0.0 and timesteps[k + 2].discount[0] == 1.0
    assert timesteps[k + 2].reward[0] == 0.0
    np.testing.assert_array_equal(timesteps[k + 2].observation, timesteps[k + 1].observation)
    assert [len(f) for f in finished[k - 1 :]] == [0, 0, 1, 0]  # the game is reported once ale-py resets it


class ScriptedGame:
    """Stands for one game's AtariVectorEnv with one environment: `send` records the game actions, `recv` plays
    `script`, one (reward, terminated, lives, episode_frame) per step; step k's screen is filled with k."""

    def __init__(self, script: list[tuple[float, bool, int, int]]):
        self.ale = self
        self.sent: list[int] = []
        self._script = list(script)
        self._steps = 0
        self._game_start, self._frame = 0, 5  # ale-py's running frame number: where the game began, and now

    def reset(self, seed=None, options=None):
        info = {"lives": np.array([3]), "episode_frame_number": np.array([5]), "frame_number": np.array([5])}
        return np.zeros((1, 1, 84, 84), np.uint8), info

    def send(self, actions, paddle_strength):
        self.sent.append(int(actions[0]))

    def recv(self):
        reward, terminated, lives, episode_frame = self._script.pop(0)
        self._steps += 1
        if episode_frame < self._frame - self._game_start:  # a new game
            self._game_start = self._frame + 1
        self._frame = self._game_start + episode_frame
        info = {
            "lives": np.array([lives]),
            "episode_frame_number": np.array([episode_frame]),
            "frame_number": np.array([self._frame]),
        }
        obs = np.full((1, 1, 84, 84), self._steps, np.uint8)
        return obs, np.array([reward]), np.array([terminated]), np.array([False]), info

    def close(self):
        pass


@pytest.mark.parametrize("ending", ["game_over", "life_loss"])
def test_episode_ending_inside_the_noop_after_a_life_loss_credits_nothing_to_the_agents_action(ending):
    """After a life-loss LAST the forced NOOP (emitted FIRST) ends the game or loses another life: the agent's
    action at that FIRST never runs (NOOP or ale-py's reset instead), and the LAST that closes the episode gives
    it reward 0 and discount 1 on the FIRST's own observation: a self-loop that credits it with nothing."""
    if ending == "game_over":  # the NOOP ends the game (reward 7); ale-py's reset starts a new one (3 no-ops)
        third, fourth = (7.0, True, 0, 21), (0.0, False, 3, 3)
    else:  # the NOOP loses another life (reward 7); the next NOOP scores 5 in the same game
        third, fourth = (7.0, True, 1, 21), (5.0, False, 1, 25)
    game = ScriptedGame([(1.0, False, 3, 13), (0.0, True, 2, 17), third, fourth, (0.0, False, 3, 29)])
    env = atari.AtariBatchedEnv(("pong",), [0], seed=0)
    env._groups[0].vector_env.close()
    env._groups[0].vector_env = game
    env.reset()
    right = np.array([3], np.int32)  # RIGHT: pong's full action set runs it as game action 3
    steps = [env.step(right) for _ in range(5)]
    assert [int(t.step_type[0]) for t in steps] == [MID, LAST, FIRST, LAST, FIRST]
    assert game.sent == [
        3,
        3,
        0,
        0,
        0,
    ]  # after each LAST and at the FIRST that the NOOP ended: NOOP, not RIGHT
    closing = steps[3]
    assert closing.reward[0] == 0.0 and closing.discount[0] == 1.0
    np.testing.assert_array_equal(closing.observation, steps[2].observation)  # x --RIGHT--> x
    assert steps[1].discount[0] == 0.0  # the agent's own life loss stays a termination
    assert steps[2].reward[0] == 0.0 and steps[2].discount[0] == 0.0
    finished = env.pop_finished_episodes()
    if ending == "game_over":
        (game_over,) = finished
        assert game_over.episode_return == 8.0  # the NOOP's reward still counts towards the score
    else:
        assert not finished and env.game_returns[0] == 13.0  # 1 + 7 + 5: both NOOPs' rewards count
    env.close()


def test_rewards_reach_the_interface_unclipped():
    env = atari.AtariBatchedEnv(("space_invaders",), [0, 0], seed=0)
    rng = np.random.default_rng(0)
    env.reset()
    rewards = [env.step(rng.integers(0, 18, 2, dtype=np.int32)).reward for _ in range(300)]
    assert np.max(rewards) > 1.0  # space invaders pays 5-30 points per invader
    env.close()


def test_same_seed_same_first_steps_and_other_seed_differs():
    def first_steps(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = atari.AtariBatchedEnv(("breakout",), [0] * 4, seed=seed, protocol="impala")
        rng = np.random.default_rng(0)
        observations = [env.reset().observation]
        observations += [env.step(rng.integers(0, 18, 4, dtype=np.int32)).observation for _ in range(30)]
        noops = env.game_frames.copy()
        env.close()
        return np.stack(observations), noops

    a, b, c = first_steps(7), first_steps(7), first_steps(8)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0]) or not np.array_equal(a[1], c[1])


def test_single_environment_reset_after_life_loss_continues_the_game():
    env = envs.SingleEnvironment(atari.AtariBatchedEnv(("breakout",), [0], seed=4, num_threads=1))
    lives = lambda: int(env.batched.lives[0])
    timestep = env.reset()
    assert timestep.first() and timestep.reward is None
    start_lives = lives()
    rng = np.random.default_rng(0)
    for _ in range(2000):
        timestep = env.step(int(rng.integers(18)))
        if timestep.last():
            break
    assert timestep.last() and timestep.discount == 0.0 and 0 < lives() < start_lives
    lives_left = lives()
    timestep = env.reset()
    assert timestep.first() and lives() == lives_left
    env.close()


def test_bad_atari_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="valid: impala, machado"):
        atari.get_protocol("sticky")
    with pytest.raises(ValueError, match="needs a single game"):
        atari.AtariBatchedEnv(("pong", "breakout"), [0, 1], seed=0, action_set="minimal")
    with pytest.raises(ValueError, match="valid:.*pong"):
        atari.check_rom("pongg")
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 1\)"):
        atari.AtariBatchedEnv(("pong",), [0, 1], seed=0)
    env = atari.AtariBatchedEnv(("pong",), [0], seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 18\)"):
        env.step(np.array([18]))
    env.close()


def test_measure_env_fps_reports_raw_and_interface_rates():
    for mode in ("sync", "async"):
        result = atari.measure_env_fps(("pong",), num_envs=4, num_threads=1, seconds=0.5, mode=mode)
        assert result["raw_fps"] > 0 and result["interface_fps"] > 0
        assert result["ratio"] == pytest.approx(result["interface_fps"] / result["raw_fps"])


@pytest.mark.slow
def test_interface_keeps_ninety_percent_of_raw_throughput():
    result = atari.measure_env_fps(("pong",), num_envs=8, num_threads=2, seconds=10.0)
    assert result["ratio"] >= 0.9, result
