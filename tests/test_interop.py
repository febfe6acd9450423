"""The suites' environments behind gymnasium and dm_env faces, and score files the leaderboard reads."""

import dm_env
import gymnasium
import numpy as np
import pytest

import suites
from impala_tf.interop import collect_game_scores, make_dm_env, make_gym_vector_env, write_scores_csv
from impala_tf.interop import tf_agents as tf_agents_adapters
from impala_tf.report import inputs


def random_actor(env, seed=0):
    rng = np.random.default_rng(seed)
    return lambda observation, info: rng.integers(0, env.num_actions, env.num_envs)


def test_gym_vector_env_has_the_suites_spaces_and_task_ids():
    env = make_gym_vector_env("minatar", ["breakout", "asterix"], num_envs=4, seed=1)
    try:
        assert isinstance(env, gymnasium.vector.VectorEnv)
        # Channels are padded to the suite's widest game, as for the network trained on the whole suite.
        assert env.single_observation_space == gymnasium.spaces.Box(0, 255, (10, 10, 10), np.uint8)
        assert env.observation_space.shape == (4, 10, 10, 10)
        assert env.single_action_space == gymnasium.spaces.Discrete(6)
        assert env.action_space == gymnasium.spaces.MultiDiscrete([6] * 4)
        assert env.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
        observation, info = env.reset()
        assert env.observation_space.contains(observation)
        suite = suites.get_suite("minatar")
        assert info["task_id"].tolist() == [suite.task_id(g) for g in ("breakout", "asterix")] * 2
        assert env.legal_action_mask.shape == (4, 6)
        assert env.legal_action_mask[0].sum() == 3  # breakout: no-op, left, right
        observation, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(observation)
        assert reward.shape == terminated.shape == truncated.shape == (4,)
        with pytest.raises(ValueError, match=r"actions must lie in \[0, 6\)"):
            env.step(np.array([0, 0, 6, 0]))
    finally:
        env.close()


def test_gym_vector_env_autoresets_on_the_next_step_with_zero_reward():
    env = make_gym_vector_env("catch", None, num_envs=3, seed=2)
    try:
        env.reset()
        steps_to_end = 0
        terminated = np.zeros(3, bool)
        while not terminated.any():
            _, reward, terminated, truncated, info = env.step(np.ones(3, np.int64))
            steps_to_end += 1
        assert steps_to_end == 9  # Catch: the ball falls 9 rows
        assert terminated.all() and not truncated.any()
        assert set(np.abs(reward)) == {1.0}
        np.testing.assert_array_equal(info["game"]["score"], reward)  # a Catch game is one episode
        assert info["_game"].all()
        _, reward, terminated, truncated, info = env.step(np.zeros(3, np.int64))  # the autoreset step
        assert (
            (reward == 0).all() and not terminated.any() and not truncated.any() and not info["_game"].any()
        )
    finally:
        env.close()


def test_game_scores_add_up_the_rewards_of_each_environment():
    env = make_gym_vector_env("minatar", ["breakout", "asterix"], num_envs=4, seed=3)
    act = random_actor(env)
    try:
        env.reset()
        running, finished = np.zeros(4), []
        for _ in range(3000):
            _, reward, terminated, truncated, info = env.step(act(None, None))
            running += reward
            for i in np.flatnonzero(info["_game"]):
                finished.append((i, info["game"]["score"][i], running[i]))
                running[i] = 0
            if len(finished) >= 6:
                break
        assert len(finished) >= 6
        for _, score, summed in finished:
            assert score == summed
    finally:
        env.close()


def test_equal_seeds_give_equal_games_and_reset_seed_reseeds():
    def play(env, seed):
        return collect_game_scores(env, random_actor(env, seed=seed), games_per_env=2, max_steps=5000)

    first = make_gym_vector_env("minatar", ["asterix"], num_envs=2, seed=5)
    second = make_gym_vector_env("minatar", ["asterix"], num_envs=2, seed=5)
    other = make_gym_vector_env("minatar", ["asterix"], num_envs=2, seed=6)
    try:
        assert play(first, 0) == play(second, 0)
        first_observation, _ = first.reset(seed=6)
        other_observation, _ = other.reset()
        np.testing.assert_array_equal(first_observation, other_observation)
        with pytest.raises(ValueError, match="options are not supported"):
            first.reset(options={"mode": 1})
    finally:
        for env in (first, second, other):
            env.close()


def test_dm_env_face_plays_one_game_of_a_suite():
    env = make_dm_env("minatar", "breakout", seed=4)
    try:
        assert isinstance(env, dm_env.Environment)
        assert env.task_id == suites.get_suite("minatar").task_id("breakout")
        assert env.observation_spec().shape == (10, 10, 10) and env.action_spec().num_values == 6
        timestep = env.reset()
        assert timestep.first() and timestep.reward is None
        total, steps = 0.0, 0
        while True:
            timestep = env.step(3 if steps % 2 else 1)
            steps += 1
            total += timestep.reward
            if timestep.last():
                break
        assert timestep.discount == 0.0
        (game,) = env.pop_finished_episodes()
        assert game.episode_return == total and game.episode_frames == steps
        assert env.step(0).first()  # after LAST, dm_env's step starts the next episode
    finally:
        env.close()


def test_dm_env_face_of_an_atari_game_keeps_its_suite_task_id():
    env = make_dm_env("atari5", "qbert", seed=1)
    try:
        assert env.task_id == suites.get_suite("atari5").games.index("qbert")
        timestep = env.reset()
        assert timestep.observation.shape == (84, 84, 4) and timestep.observation.dtype == np.uint8
        assert env.action_spec().num_values == 18
        assert env.step(0).mid()
    finally:
        env.close()
    with pytest.raises(ValueError, match="not a game of suite 'atari5'"):
        make_dm_env("atari5", "pong", seed=1)


def test_score_file_from_a_gym_evaluation_is_read_by_the_leaderboard(tmp_path):
    env = make_gym_vector_env("minatar", ["breakout", "asterix"], num_envs=4, seed=7)
    try:
        scores = collect_game_scores(env, random_actor(env), games_per_env=1, max_steps=5000)
    finally:
        env.close()
    assert {game: len(s) for game, s in scores.items()} == {"breakout": 2, "asterix": 2}
    path = write_scores_csv(
        tmp_path / "random.csv", scores, agent="random", seed=1, frames=0, protocol="minatar"
    )
    assert path.read_text().splitlines()[0] == "game,score,agent,seed,frames,protocol"
    (agent,) = inputs.load_agents(inputs.resolve_suite("minatar"), [str(path)])
    assert agent.name == "random"
    assert agent.scores == {game: {1: float(np.mean(s))} for game, s in scores.items()}


def test_score_file_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="unknown protocol 'sticky'; valid: catch, impala, machado, minatar"):
        write_scores_csv(tmp_path / "x.csv", {"pong": [1.0]}, agent="a", protocol="sticky")
    with pytest.raises(ValueError, match="finite score"):
        write_scores_csv(tmp_path / "x.csv", {"pong": [float("nan")]}, agent="a")
    with pytest.raises(ValueError, match="without commas"):
        write_scores_csv(tmp_path / "x.csv", {"pong": 1.0}, agent="a,b")
    assert not (tmp_path / "x.csv").exists()


def test_game_scores_stop_at_max_steps_naming_the_unfinished_games():
    env = make_gym_vector_env("catch", None, num_envs=2, seed=1)
    try:
        with pytest.raises(ValueError, match="games still running after max_steps=3: catch"):
            collect_game_scores(env, random_actor(env), max_steps=3)
    finally:
        env.close()


def test_tf_agents_adapters_import_without_tf_agents_and_say_how_to_get_it():
    if tf_agents_adapters.is_available():
        pytest.skip("tf-agents is installed here; tests/tf_agents covers the adapters")
    with pytest.raises(ImportError, match=r"impala-tf\[tf-agents\]"):
        tf_agents_adapters.SuitePyEnvironment("catch", "catch", seed=0)
    with pytest.raises(ImportError, match="make test-tf-agents"):
        tf_agents_adapters.ExportedTFPolicy("policy", None, None)
