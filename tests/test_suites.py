"""Suite registry: built-in suites, restriction, custom JSON suites and the errors users see."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

import impala_tf.reference
from impala_tf import envs
from impala_tf import suites as registry
from impala_tf.envs import atari

ATARI5 = ("battle_zone", "double_dunk", "name_this_game", "phoenix", "qbert")
TUNING6 = ("beam_rider", "breakout", "pong", "qbert", "seaquest", "space_invaders")


def test_atari57_lists_the_57_rom_ids_with_their_human_random_scores():
    suite = registry.get_suite("atari57")
    data = Path(impala_tf.reference.__file__).parent / "data"
    rows = [line.split(",") for line in (data / "atari57_envs.csv").read_text().splitlines()[1:]]
    assert suite.games == tuple(row[1] for row in rows) and len(suite.games) == 57
    assert "montezuma_revenge" in suite.games
    assert suite.backend == "atari" and suite.protocol == "impala" and suite.action_set == "full"
    assert suite.reference["pong"] == (-20.7, 14.6) and suite.reference["montezuma_revenge"] == (0.0, 4753.3)
    assert set(suite.reference) == set(suite.games)
    assert "dqn_zoo" in suite.reference_source
    assert suite.default_total_frames == 57 * 200_000_000


def test_small_atari_suites_and_non_atari_suites():
    assert registry.get_suite("atari5").games == ATARI5
    assert registry.get_suite("atari_tuning6").games == TUNING6
    minatar = registry.get_suite("minatar")
    assert minatar.backend == "minatar" and minatar.reference is None and len(minatar.games) == 5
    catch = registry.get_suite("catch")
    assert catch.games == ("catch",) and catch.reference is None and catch.num_tasks == 1
    assert set(registry.SUITE_NAMES) == {"atari57", "atari5", "atari_tuning6", "minatar", "catch"}


def test_suites_are_frozen_and_hashable():
    suite = registry.get_suite("atari5")
    with pytest.raises(dataclasses.FrozenInstanceError):
        suite.games = ("pong",)
    assert hash(suite) == hash(registry.get_suite("atari5"))


def test_restrict_keeps_the_given_games_their_references_and_frame_budget():
    suite = registry.get_suite("atari57").restrict(["qbert", "pong"])
    assert suite.games == ("qbert", "pong") and suite.task_id("pong") == 1
    assert set(suite.reference) == {"qbert", "pong"}
    assert suite.default_total_frames == 2 * 200_000_000
    expert = registry.get_suite("atari57").restrict(["pong"], action_set="minimal")
    assert expert.action_set == "minimal"
    with pytest.raises(ValueError, match="not in suite 'atari5'; valid: battle_zone"):
        registry.get_suite("atari5").restrict(["pong"])
    with pytest.raises(ValueError, match="needs a single-game suite"):
        registry.get_suite("atari5").restrict(ATARI5[:2], action_set="minimal")


def test_custom_suite_from_json(tmp_path):
    path = tmp_path / "my3.json"
    path.write_text(
        json.dumps({"name": "my3", "backend": "atari", "games": ["pong", "breakout", "adventure"]})
    )
    suite = registry.get_suite(str(path))
    assert suite == registry.load_suite_file(path)
    assert suite.name == "my3" and suite.games == ("pong", "breakout", "adventure")
    assert suite.protocol == "impala"
    # adventure is an ale-py ROM outside Atari-57: playable, but it has no reference score.
    assert set(suite.reference) == {"pong", "breakout"}
    path.write_text(
        json.dumps({"name": "m", "backend": "minatar", "games": ["freeway"], "action_set": "minimal"})
    )
    assert registry.load_suite_file(path).action_set == "minimal"
    path.write_text(
        json.dumps(
            {
                "name": "mach",
                "backend": "atari",
                "games": ["pong"],
                "protocol": "machado",
                "default_total_frames": 10,
            }
        )
    )
    assert registry.load_suite_file(path).protocol == "machado"
    assert registry.load_suite_file(path).default_total_frames == 10


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"name": "x", "backend": "nes", "games": ["pong"]},
            "unknown backend 'nes'.*valid: atari, minatar, catch",
        ),
        (
            {"name": "x", "backend": "atari", "games": ["pongg"]},
            "(?i)unknown atari game 'pongg'; valid: .*pong",
        ),
        ({"name": "x", "backend": "minatar", "games": ["pong"]}, "valid: asterix, breakout, freeway"),
        ({"name": "x", "backend": "atari", "games": ["pong"], "protocol": "dqn"}, "valid: impala, machado"),
        (
            {"name": "x", "backend": "atari", "games": ["pong", "qbert"], "action_set": "minimal"},
            "single-game",
        ),
        ({"name": "x", "backend": "atari", "games": ["pong", "pong"]}, "more than once"),
        ({"name": "x", "backend": "atari"}, "lacks games"),
        ({"name": "x", "backend": "atari", "games": ["pong"], "seed": 1}, "unknown keys"),
        ({"name": "x", "backend": "atari", "games": "pong"}, "list of names"),
    ],
)
def test_bad_custom_suites_raise_one_line_errors(tmp_path, spec, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match=message) as error:
        registry.load_suite_file(path)
    assert "\n" not in str(error.value)


def test_unknown_suite_and_unreadable_file_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown suite 'atari58'; valid: atari57, atari5"):
        registry.get_suite("atari58")
    with pytest.raises(ValueError, match="cannot read suite file"):
        registry.get_suite(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        registry.get_suite(str(tmp_path / "broken.json"))


def test_an_atari57_game_missing_from_ale_py_names_the_needed_version(monkeypatch):
    monkeypatch.setattr(atari, "rom_ids", lambda: ("pong",))
    with pytest.raises(ValueError, match=r"'qbert' has no ROM in the installed ale-py .*needs ale-py>=0\.12"):
        registry.check_game("atari", "qbert")


def test_make_batched_env_follows_the_suite_and_its_overrides():
    suite = registry.get_suite("atari5").restrict(["qbert"])
    env = envs.make_batched_env(suite, [0, 0], seed=0, action_set="minimal", num_threads=1)
    assert env.action_spec().num_values == 6 and env.num_envs == 2
    env.close()
    with pytest.raises(ValueError, match=r"task_ids must lie in \[0, 1\)"):
        envs.make_batched_env(suite, [1], seed=0)
    with pytest.raises(ValueError, match="valid: impala, machado"):
        envs.make_batched_env(suite, [0], seed=0, protocol="minatar")


def test_paper_preset_gives_table_g1_over_suite_defaults_but_not_over_the_command_line():
    from absl import flags

    from impala_tf import config

    # A copy of the real flags: suite defaults as a suite binary sets them, one flag on the command line.
    values = flags.FlagValues()
    for flag in flags.FLAGS.get_flags_for_module(config.__name__):
        values[flag.name] = copy.deepcopy(flag)
    values.set_default("learning_rate", 0.01)  # a suite's default
    values.set_default("entropy_cost", 0.05)
    values.set_default("replay_capacity", 128)
    values(["prog", "--preset=paper", "--batch_size=8"])
    config.apply_preset(values)
    assert values.learning_rate == 6e-4 and values.entropy_cost == 0.01
    assert values.replay_capacity == 0  # the paper's agents learn from fresh unrolls only
    assert values.rmsprop_epsilon == 0.01 and values.rmsprop_initial_mean_square == 1.0
    assert values.batch_size == 8  # the command line wins


@pytest.mark.parametrize("name", registry.SUITE_NAMES)
def test_every_built_in_suite_gives_each_task_an_equal_share_of_environments_by_default(name, run_spec):
    """A suite binary runs with its own defaults: num_actors x envs_per_actor environments (config.py's defaults,
    then the suite's) play every task, each on the same number of environments (environment k plays task k mod
    N, so the total must be a multiple of N)."""
    from impala_tf import config

    suite = registry.get_suite(name)
    flags = {n: config.FLAGS[n].default for n in ("num_actors", "envs_per_actor")} | suite.default_flags
    spec = run_spec(
        suite,
        use_lstm=True,
        unroll_length=20,
        num_actors=flags["num_actors"],
        envs_per_actor=flags["envs_per_actor"],
    )
    total = spec.num_actors * spec.envs_per_actor
    shares = set(spec.task_proportions().values())
    assert total >= suite.num_tasks and shares == {1 / suite.num_tasks}, (
        f"{name}: {spec.num_actors} actors x {spec.envs_per_actor} environments = {total} for {suite.num_tasks} "
        f"tasks: shares {sorted(shares)}"
    )


def test_xla_inference_compiles_the_actors_inference_but_not_the_learner_step():
    from impala_tf import config

    assert config.use_xla("inference") and not config.use_xla("inference", learner=True)
    assert config.use_xla("on", learner=True) and config.use_xla("on")
    assert not config.use_xla("off", learner=True) and not config.use_xla("off")
    assert registry.get_suite("minatar").default_flags["xla"] == "inference"
