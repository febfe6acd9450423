"""Plain trainer behaviour, in process on Catch: what a run writes and how a second run resumes it."""

import itertools
import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from impala_tf import config, rundir, trainer, writers
from impala_tf.suites import get_suite
from impala_tf.unroll import Unroll

FLAGS = flags.FLAGS
T, B = 5, 8  # frames per update: T x B (Catch has one frame per step)
CATCH_FLAGS = dict(
    unroll_length=T, batch_size=B, num_actors=1, envs_per_actor=8, learning_rate=0.01, progress_every_secs=1
)


def train(logdir, **overrides) -> tuple[int, trainer.Trainer]:
    """One in-process run of the catch suite (like `python -m suites.catch`), returning (exit code, trainer)."""
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()
    with flagsaver.flagsaver(suite="catch", logdir=str(logdir), **{**CATCH_FLAGS, **overrides}):
        run = trainer.Trainer(get_suite("catch"), str(logdir))
        return run.run(), run


def read_checkpoint(logdir) -> dict[str, int]:
    reader = tf.train.load_checkpoint(str(logdir / "checkpoints"))
    return {
        name: int(reader.get_tensor(f"learner/{name}/.ATTRIBUTES/VARIABLE_VALUE"))
        for name in ("num_frames", "num_updates", "num_nonfinite")
    }


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """A run to 2,000 frames, then the same run resumed to 4,000 frames, then started once more."""
    import signal

    handlers_before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    logdir = tmp_path_factory.mktemp("catch") / "run"
    first_code, _ = train(logdir, total_frames=2_000)
    first = read_checkpoint(logdir)
    first_rows = pd.read_csv(logdir / "episodes.csv")
    second_code, second = train(logdir, total_frames=4_000)
    second_lr = float(second.learner.learning_rate())
    third_code, _ = train(logdir, total_frames=4_000)
    return dict(
        logdir=logdir,
        codes=(first_code, second_code, third_code),
        first=first,
        first_rows=first_rows,
        second=read_checkpoint(logdir),
        second_lr=second_lr,
        handlers_before=handlers_before,
    )


def test_resume_continues_frame_and_update_counters(resumed_run):
    assert resumed_run["codes"] == (0, 0, 0)
    first, second = resumed_run["first"], resumed_run["second"]
    assert first["num_frames"] == 2_000 and first["num_updates"] == 2_000 // (T * B)
    # Every update of either run is counted once: the second run started from the first one's counters.
    assert second["num_frames"] == 4_000 and second["num_updates"] == 4_000 // (T * B)
    assert second["num_nonfinite"] == 0


def test_resume_continues_the_learning_rate_schedule(resumed_run):
    # Linear decay over the second run's budget: 4,000 frames consumed of 4,000 leave a learning rate of 0.
    assert resumed_run["second_lr"] == pytest.approx(0.0, abs=1e-9)
    events = _scalars(resumed_run["logdir"] / "tensorboard", "learner/learning_rate")
    assert any(step <= 2_000 for step, _ in events) and any(step > 2_000 for step, _ in events)
    for step, value in events:
        # The rate logged at frame s was used by the update that ended there, i.e. began at s - T*B.
        assert value == pytest.approx(0.01 * (1 - (step - T * B) / _budget(step)), rel=1e-4), step


def _budget(step: int) -> int:
    return 2_000 if step <= 2_000 else 4_000


def test_episodes_csv_has_the_documented_columns_and_grows_monotonically(resumed_run):
    rows = pd.read_csv(resumed_run["logdir"] / "episodes.csv")
    assert tuple(rows.columns) == writers.EPISODE_COLUMNS
    assert set(rows.task) == {"catch"}
    assert rows.frames.is_monotonic_increasing and rows.frames.max() <= 4_000
    assert set(rows.episode_return.unique()) <= {-1.0, 1.0}
    assert (rows.episode_frames == 9).all()  # a Catch game is rows - 1 = 9 steps
    # The first run's rows are kept verbatim by the resume, and the second run only appended after them.
    first = resumed_run["first_rows"]
    pd.testing.assert_frame_equal(rows.iloc[: len(first)].reset_index(drop=True), first)
    assert rows.frames.iloc[len(first) :].min() > 2_000


def test_config_json_records_suite_flags_spaces_and_versions(resumed_run):
    run_config = json.loads((resumed_run["logdir"] / "config.json").read_text())
    assert run_config["suite"] == "catch" and run_config["games"] == ["catch"]
    assert run_config["backend"] == "catch" and run_config["protocol"] == "catch"
    assert run_config["observation_shape"] == [10, 5, 1] and run_config["num_actions"] == 3
    assert run_config["frames_per_step"] == 1
    assert run_config["task_proportions"] == {"catch": 1.0}
    assert run_config["flags"]["total_frames"] == 4_000  # the latest command's budget
    assert run_config["flags"]["unroll_length"] == T and run_config["flags"]["batch_size"] == B
    assert {"impala_tf", "tensorflow", "ale_py", "python"} <= set(run_config["versions"])
    # Both training starts, in order; the third command found the budget done and did not start.
    assert [start["frames"] for start in run_config["starts"]] == [0, 2_000]
    assert all(set(start) == {"frames", "git_commit", "time"} for start in run_config["starts"])
    assert run_config["git_commit"] == run_config["starts"][-1]["git_commit"]


def test_rerunning_a_finished_run_trains_no_further(resumed_run, capsys):
    # The third run of the fixture found 4,000 of 4,000 frames done: it changed nothing.
    assert resumed_run["second"]["num_frames"] == 4_000
    code, _ = train(resumed_run["logdir"], total_frames=4_000)
    assert code == 0 and "nothing to do" in capsys.readouterr().out
    assert read_checkpoint(resumed_run["logdir"]) == resumed_run["second"]


def test_check_existing_run_names_what_differs(tmp_path):
    values = {"network": "shallow", "use_lstm": False, "popart": False, "rmsprop_momentum": 0.0}
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "suite": "catch",
                "games": ["catch"],
                "flags": {**values, "network": "deep", "rmsprop_momentum": 0.9},
                "observation_shape": [10, 5, 1],
                "num_actions": 3,
            }
        )
    )
    with pytest.raises(rundir.UserError) as error:
        rundir.check_existing_run(tmp_path, "catch", ("catch",), values, (10, 5, 1), 4)
    message = str(error.value)
    assert "--network: checkpoint 'deep', now 'shallow'" in message
    assert "--rmsprop_momentum: checkpoint 0.9, now 0.0" in message
    assert "actions: checkpoint 3, now 4" in message
    assert "\n" not in message
    with pytest.raises(rundir.UserError, match="holds a run of suite 'catch'"):
        rundir.check_existing_run(tmp_path, "minatar", ("breakout",), values)
    # Same shapes: a resume with another learning rate or frame budget is fine.
    rundir.check_existing_run(
        tmp_path, "catch", ("catch",), {**values, "network": "deep", "rmsprop_momentum": 0.5}, (10, 5, 1), 3
    )


def test_trainer_restores_the_signal_handlers_it_replaced(resumed_run):
    import signal

    # Whatever was installed before (the default, or another library's, e.g. Ray's) is back.
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == resumed_run[
        "handlers_before"
    ]


def _scalars(directory, tag) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing import event_accumulator

    accumulator = event_accumulator.EventAccumulator(str(directory), size_guidance={"tensors": 0})
    accumulator.Reload()
    return [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in accumulator.Tensors(tag)]


def _numbered_unroll(k: int, t1: int = 4, state_size: int = 3) -> Unroll:
    """An unroll whose every entry encodes k, as a strided view of an actor-style [T+1, N, ...] buffer."""
    buffer = np.full((t1, 2, 2, 2, 1), k, np.uint8)
    return Unroll(
        observation=buffer[:, 1],
        step_type=np.full(t1, k % 3, np.uint8),
        reward=np.arange(t1, dtype=np.float32) + k,
        discount=np.ones(t1, np.float32),
        prev_action=np.full(t1, k, np.int32),
        action=np.full(t1, k + 1, np.int32),
        behaviour_logits=np.full((t1, 5), k, np.float32),
        task_id=np.int32(k % 2),
        agent_state=np.full((2, state_size), k, np.float32),
        policy_version=np.int64(10 * k),
    )


# "/CPU:0" takes the copy-to-device path that a GPU learner uses.
@pytest.mark.parametrize("device", [None, "/CPU:0"])
def test_learner_batches_stack_unrolls_time_major_in_arrival_order_and_drop_a_short_last_batch(device):
    unrolls = [_numbered_unroll(k) for k in range(5)]
    elements = list(trainer.LearnerBatches(unrolls, batch_size=2, device=device))
    assert len(elements) == 2  # the fifth unroll does not fill a batch
    assert [int(n) for _, n in elements] == [0, 0]  # nothing replayed without a buffer
    for b, (batch, _) in enumerate(elements):
        assert batch.observation.shape == (4, 2, 2, 2, 1) and batch.observation.dtype == tf.uint8
        assert batch.behaviour_logits.shape == (4, 2, 5)
        assert batch.agent_state.shape == (2, 2, 3)
        assert batch.task_id.shape == batch.policy_version.shape == (2,)
        for j in range(2):
            unroll = unrolls[2 * b + j]
            for name in ("observation", "step_type", "reward", "prev_action", "action", "behaviour_logits"):
                np.testing.assert_array_equal(getattr(batch, name).numpy()[:, j], getattr(unroll, name))
            np.testing.assert_array_equal(batch.agent_state.numpy()[:, j], unroll.agent_state)
            assert batch.task_id.numpy()[j] == unroll.task_id
            assert batch.policy_version.numpy()[j] == unroll.policy_version


def test_learner_batches_raise_a_source_error_from_the_next_call_and_then_end():
    def unrolls():
        yield from (_numbered_unroll(k) for k in range(2))
        raise OSError("transport gone")

    batches = trainer.LearnerBatches(unrolls(), batch_size=2)
    batch, _ = next(batches)
    assert batch.policy_version.numpy().tolist() == [0, 10]
    with pytest.raises(OSError, match="transport gone"):
        next(batches)
    assert list(batches) == []


def test_learner_batches_reject_a_batch_shaped_unlike_the_first():
    wider = _numbered_unroll(2)._replace(behaviour_logits=np.zeros((4, 6), np.float32))
    batches = trainer.LearnerBatches([_numbered_unroll(0), _numbered_unroll(1), wider, wider], batch_size=2)
    next(batches)
    with pytest.raises(
        ValueError, match=r"behaviour_logits has shape \(4, 2, 6\), the first had \(4, 2, 5\)"
    ):
        next(batches)


def test_closing_learner_batches_stops_their_thread_while_the_queue_is_full():
    batches = trainer.LearnerBatches(itertools.repeat(_numbered_unroll(1)), batch_size=2, depth=1)
    next(batches)
    batches.close()
    assert not batches._thread.is_alive()


def test_auto_intra_op_threads_share_the_cores_between_local_actors_and_the_learner():
    assert config.intra_op_threads(0, "local", num_actors=2, cpu_count=2) == 1
    assert config.intra_op_threads(0, "local", num_actors=3, cpu_count=16) == 4
    assert config.intra_op_threads(0, "ray", num_actors=8, cpu_count=16) == 0  # TensorFlow's default
    assert config.intra_op_threads(6, "local", num_actors=2, cpu_count=2) == 6  # an explicit value wins


def test_a_run_with_replay_reports_the_buffer_and_the_age_of_replayed_unrolls(tmp_path, capsys):
    code, run = train(tmp_path / "run", total_frames=1_600, replay_capacity=40, replay_fraction=0.5)
    assert code == 0
    sizes = [v for _, v in _scalars(tmp_path / "run" / "tensorboard", "perf/replay")]
    ages = [v for _, v in _scalars(tmp_path / "run" / "tensorboard", "perf/replay_age")]
    assert sizes and max(sizes) == 40  # filled to capacity: 1,600 frames are 40 updates of 4 fresh unrolls
    assert ages and ages[-1] > 1.0  # replayed unrolls are older than fresh ones (lag ~1 here)
    assert "replay 40" in capsys.readouterr().out


def test_a_synchronous_run_acts_every_unroll_with_the_learners_current_parameters(tmp_path):
    code, run = train(tmp_path / "run", total_frames=1_200, synchronous=True, progress_every_secs=1)
    assert code == 0
    assert int(run.learner.num_updates.numpy()) == 1_200 // (T * B)
    lags = [v for _, v in _scalars(tmp_path / "run" / "tensorboard", "perf/policy_lag")]
    assert lags and all(lag == 0.0 for lag in lags)


def test_every_numeric_training_flag_is_rejected_at_its_definition_or_accepted_by_every_consumer():
    """Walks each numeric training flag through -1, 0, NaN and inf: `config.validate` rejects the value with one
    line, or the configs built from it (loss, optimiser, run spec) take it as it is — never a traceback later."""
    import math

    numeric = [
        f.name
        for f in FLAGS.get_flags_for_module(config.__name__)
        if isinstance(f.default, int | float) and not isinstance(f.default, bool)
    ]
    assert {"learning_rate", "max_grad_norm", "replay_fraction", "popart_step_size", "actor_cpus"} <= set(
        numeric
    )
    if not FLAGS.is_parsed():
        FLAGS.mark_as_parsed()
    accepted = set()
    for name in numeric:
        integer = isinstance(FLAGS[name].default, int)
        for value in (-1, 0) if integer else (-1.0, 0.0, math.nan, math.inf):
            with flagsaver.flagsaver(suite="catch", logdir="/nonexistent", **{name: value}):
                try:
                    config.validate()
                except flags.ValidationError:
                    continue
                config.loss_config_from_flags()
                config.optimizer_config_from_flags()
                config.run_spec_from_flags(get_suite("catch"))
                accepted.add((name, value))
    assert all(value == 0 for _, value in accepted), sorted(
        accepted
    )  # only "0 = off / auto / default" passes


def test_equal_seeds_give_equal_initial_weights_and_other_seeds_differ(tmp_path):
    def initial_weights(seed: int) -> list[np.ndarray]:
        if not FLAGS.is_parsed():
            FLAGS.mark_as_parsed()
        logdir = tmp_path / f"seed{seed}_{len(list(tmp_path.iterdir()))}"
        with flagsaver.flagsaver(suite="catch", logdir=str(logdir), seed=seed, **CATCH_FLAGS):
            run = trainer.Trainer(get_suite("catch"), str(logdir))
            return [v.numpy() for v in run.learner.network.trainable_variables]

    first, again, other = initial_weights(1), initial_weights(1), initial_weights(2)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True) if a.std() > 0)


@pytest.mark.parametrize(("given", "expected"), [(None, "true"), ("false", "false")])
def test_importing_the_package_chooses_tensorflows_bfc_cpu_allocator_unless_the_environment_says(
    given, expected
):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPU_ALLOCATOR_USE_BFC"}
    if given is not None:
        env["TF_CPU_ALLOCATOR_USE_BFC"] = given
    code = "import os, impala_tf; print(os.environ['TF_CPU_ALLOCATOR_USE_BFC'])"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == expected
