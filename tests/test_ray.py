"""The Ray runtime: Catch actors as Ray actors on a loopback-only Ray instance, a learner on the driver.

Ray starts inside the tests and is shut down at the end, failed test or not. Fault injection: an actor's
process is killed with SIGKILL (by its pid), or its environment raises (a `make_actor` that breaks it).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import itertools
import json
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from impala_tf import agent  # noqa: E402
from impala_tf import learner as learner_lib  # noqa: E402
from impala_tf import suites as registry  # noqa: E402
from impala_tf.actor import snapshot_of  # noqa: E402
from impala_tf.losses import LossConfig  # noqa: E402
from impala_tf.runtime.local import ParamServer  # noqa: E402
from impala_tf.runtime.ray import ActorWorker, RayRuntime, _Slot, use_loopback_only  # noqa: E402
from impala_tf.unroll import stack_time_major  # noqa: E402

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[1]
UNROLL_LENGTH, ENVS_PER_ACTOR, BATCH_SIZE = 10, 4, 8
# The worker processes unpickle the fault-injecting `make_actor`s below: send them by value, not by module name.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def local_ray():
    # One fake GPU, so that --learner_gpus can be reserved on a machine without one.
    use_loopback_only()
    ray.init(
        num_cpus=4, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def catch_spec(run_spec):
    """`catch_spec(num_actors)`: the Catch RunSpec these tests train."""

    def make(num_actors: int = 2) -> agent.RunSpec:
        suite = registry.get_suite("catch")
        return run_spec(
            suite, seed=3, unroll_length=UNROLL_LENGTH, num_actors=num_actors, envs_per_actor=ENVS_PER_ACTOR
        )

    return make


class Run:
    """A RayRuntime feeding a Catch learner, as the trainer wires them (without its files)."""

    def __init__(
        self, spec: agent.RunSpec, queue_capacity: int = 2 * BATCH_SIZE, max_restarts: int = 5, **kwargs
    ):
        env = agent.make_env(spec, [0], seed=0)
        self.learner = learner_lib.Learner(
            agent.make_network(spec, env),
            LossConfig(),
            learner_lib.OptimizerConfig(learning_rate=1e-3),
            10**6,
            xla=False,
        )
        env.close()
        self.stop = threading.Event()
        self.episodes = []
        self.runtime = RayRuntime(
            spec,
            lambda: snapshot_of(self.learner.network, int(self.learner.num_updates.numpy())),
            self.episodes.append,
            self.stop,
            queue_capacity,
            max_restarts,
            **kwargs,
        )
        self.versions: list[int] = []

    def train(self, until) -> bool:
        """Learner steps on batches of unrolls until `until()`; False if the unrolls ran out first."""
        unrolls = iter(self.runtime.unrolls())
        while not until():
            batch = list(itertools.islice(unrolls, BATCH_SIZE))
            if len(batch) < BATCH_SIZE:
                return False
            batch = stack_time_major(batch)
            self.versions.extend(batch.policy_version.tolist())
            self.runtime.before_update()
            self.learner.step(batch)
            self.runtime.after_update()
        return True


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class LogRecords(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def faulty_run(local_ray, catch_spec):
    """One run with both faults (the actors' start-up dominates the time): actor 1's environment raises on its
    25th step, and actor 0's process is killed once the learner has updated. Then the learner stops consuming."""
    records = LogRecords()
    logging.getLogger("impala_tf").addHandler(records)
    run = Run(catch_spec(num_actors=2), make_actor=make_actor_whose_env_breaks_once)
    runtime = run.runtime
    try:
        runtime.start()
        assert run.train(until=lambda: runtime.actor_pids()[0] and run.learner.num_updates.numpy() >= 3)
        victim = runtime.actor_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert run.train(until=lambda: runtime.stats()["actor_restarts"] == 2)
        steps_at_restart = runtime.stats()["actor_steps"]
        assert run.train(
            until=lambda: runtime.stats()["actor_steps"] >= steps_at_restart + 4 * BATCH_SIZE * UNROLL_LENGTH
        )
        outcome = {
            "stats": runtime.stats(),
            "fatal": runtime.fatal,
            "victim": victim,
            "pids": runtime.actor_pids(),
            "steps_at_restart": steps_at_restart,
            "versions": list(run.versions),
            "updates": int(run.learner.num_updates.numpy()),
            "messages": list(records.messages),
        }
        # The learner stops consuming: the queue fills, the actors finish what they were asked, nothing more.
        wait_for(lambda: runtime.stats()["queue"] == 2 * BATCH_SIZE, 60, "a full queue")
        time.sleep(3.0)
        outcome["steps_when_full"] = runtime.stats()["actor_steps"]
        time.sleep(2.0)
        outcome["steps_later"] = runtime.stats()["actor_steps"]
        yield outcome
    finally:
        runtime.stop()
        logging.getLogger("impala_tf").removeHandler(records)


def test_killed_actor_is_restarted_and_the_run_goes_on(faulty_run):
    new_pid = faulty_run["pids"][0]
    assert new_pid is not None and new_pid != faulty_run["victim"]
    messages = faulty_run["messages"]
    assert any(m.startswith("actor 0 died") for m in messages), messages
    assert any(m.startswith(f"actor 0 restarted (process {new_pid}") for m in messages), messages
    assert faulty_run["stats"]["actor_steps"] > faulty_run["steps_at_restart"]  # frames keep counting
    assert faulty_run["fatal"] is None


def test_actor_whose_environment_raises_restarts_with_fresh_environments(faulty_run):
    messages = "\n".join(faulty_run["messages"])
    assert "actor 1 raised RuntimeError('emulator crashed'); restarting its process" in messages
    assert "in breaking_step" in messages  # the traceback from inside the actor
    assert "actor 1 restarted (process" in messages
    assert faulty_run["pids"][1] is not None


def test_each_failure_is_counted_once_however_many_requests_were_in_flight(faulty_run):
    stats = faulty_run["stats"]
    # Two failures: one death (SIGKILL) and one error; each with two requests in flight.
    assert (stats["actor_failures"], stats["actor_deaths"], stats["actor_restarts"]) == (2, 1, 2)


def test_actors_act_with_the_parameters_the_learner_publishes(faulty_run):
    versions, updates = faulty_run["versions"], faulty_run["updates"]
    assert versions[0] == 0
    # The policy lag stays within what is buffered: the queue and the requests in flight.
    assert max(versions) >= updates - 8, (max(versions), updates)


def test_unrolls_in_flight_are_bounded_when_the_learner_does_not_keep_up(faulty_run):
    assert faulty_run["steps_later"] == faulty_run["steps_when_full"]


def test_too_many_failures_stop_the_run_instead_of_waiting_for_unrolls(local_ray, catch_spec):
    run = Run(catch_spec(num_actors=1), max_restarts=0, make_actor=make_actor_whose_env_always_breaks)
    try:
        run.runtime.start()
        started = time.monotonic()
        unrolls = list(run.runtime.unrolls())  # ends: the runtime stops the run
        assert time.monotonic() - started < 120
    finally:
        run.runtime.stop()
    assert run.stop.is_set()
    assert run.runtime.stats()["actor_failures"] == 1
    assert "more than --max_actor_restarts=0" in run.runtime.fatal
    assert "emulator crashed" in run.runtime.fatal
    assert len(unrolls) <= 2 * ENVS_PER_ACTOR  # two unrolls at most, then the 26th step raised


def test_requests_in_flight_when_an_environment_raises_get_its_error_not_a_stopped_generator(
    local_ray, catch_spec
):
    # The driver logs the first failed answer it reads; with several requests in flight that can be a later one.
    spec = catch_spec(num_actors=1)
    env = agent.make_env(spec, [0], seed=0)
    params = snapshot_of(agent.make_network(spec, env), 0)
    env.close()
    worker = (
        ray.remote(ActorWorker).options(num_cpus=1).remote(spec, 0, 1, make_actor_whose_env_always_breaks)
    )
    try:
        answers = [worker.next_unrolls.remote(params, 0) for _ in range(4)]
        ray.get(answers[:2])  # two unrolls of 10 steps, then the 26th step raises
        for answer in answers[2:]:
            with pytest.raises(ray.exceptions.RayTaskError) as raised:
                ray.get(answer)
            assert repr(raised.value.cause) == "RuntimeError('emulator crashed')"
    finally:
        ray.kill(worker)


def test_learner_gpus_are_reserved_on_the_drivers_node_or_rejected_clearly(local_ray, catch_spec):
    for learner_gpus in (1, 2):  # the fixture's node has one (fake) GPU
        run = Run(catch_spec(num_actors=1), learner_gpus=learner_gpus)
        try:
            if learner_gpus == 1:
                run.runtime.start()
                assert ray.available_resources().get("GPU", 0.0) == 0.0  # held for the learner
            else:
                with pytest.raises(
                    ValueError, match="--learner_gpus=2, but the driver's Ray node has 1 GPUs"
                ):
                    run.runtime.start()
        finally:
            run.runtime.stop()
    wait_for(lambda: ray.available_resources().get("GPU", 0.0) == 1.0, 30, "the GPU to be released")


def test_bad_runtime_settings_are_rejected(catch_spec):
    spec = catch_spec()
    with pytest.raises(ValueError, match="in_flight must be >= 1"):
        RayRuntime(spec, lambda: None, lambda e: None, threading.Event(), 4, 1, in_flight=0)
    with pytest.raises(ValueError, match="actor_cpus > 0"):
        RayRuntime(spec, lambda: None, lambda e: None, threading.Event(), 4, 1, actor_cpus=0)


class FakeActorHandle:
    """Stands for a Ray actor handle: records the parameters each `next_unrolls` request carries."""

    def __init__(self):
        self.sent: list[int] = []
        self.next_unrolls = self

    def remote(self, params, incarnation):
        self.sent.append(params)
        return object()


def test_requests_carry_the_learners_newest_parameters_or_wait_in_the_driver_for_them(catch_spec):
    learner = {"version": 0}
    runtime = RayRuntime(
        catch_spec(1), lambda: None, lambda e: None, threading.Event(), 4, 1, params_wait_secs=0.5
    )
    # As start() wires it, without Ray: the "references" are the versions themselves.
    params = runtime._params = ParamServer(lambda: learner["version"], runtime._stop_event)
    handle = FakeActorHandle()
    runtime._slots = [_Slot(handle, ready=True)]
    pending: dict = {}

    def update():
        params.before_update()
        learner["version"] += 1
        params.after_update()

    update()  # nobody asked: not copied
    runtime._request(0, pending)
    assert handle.sent == [1]  # the learner is between updates: its newest parameters, at once
    update()
    params.before_update()  # an update in progress, and version 2 was never copied
    learner["version"] += 1
    runtime._request(0, pending)
    runtime._send_deferred(pending)
    assert handle.sent == [1] and len(runtime._deferred) == 1  # waits in the driver for this update
    params.after_update()
    runtime._send_deferred(pending)
    assert handle.sent == [1, 3] and not runtime._deferred and len(pending) == 2
    update()
    params.before_update()  # an update that does not end: the request goes after params_wait with the newest
    runtime._request(0, pending)
    time.sleep(0.6)
    runtime._send_deferred(pending)
    assert handle.sent == [1, 3, 3] and not runtime._deferred


def make_actor_whose_env_breaks_once(spec, actor_id, get_params, on_episode, incarnation=0):
    """agent.make_actor, but actor 1's first incarnation has an environment that raises on its 25th step."""
    actor = agent.make_actor(spec, actor_id, get_params, on_episode, incarnation)
    if actor_id == 1 and incarnation == 0:
        _break_env(actor.env, after_steps=25)
    return actor


def make_actor_whose_env_always_breaks(spec, actor_id, get_params, on_episode, incarnation=0):
    actor = agent.make_actor(spec, actor_id, get_params, on_episode, incarnation)
    _break_env(actor.env, after_steps=25)
    return actor


def _break_env(env, after_steps: int) -> None:
    step, calls = env.step, itertools.count()

    def breaking_step(action):
        if next(calls) == after_steps:
            raise RuntimeError("emulator crashed")
        return step(action)

    env.step = breaking_step


def _catch_on_ray(logdir: Path, *flags: str) -> list[str]:
    """The command line of a Catch training run with the Ray runtime."""
    return [sys.executable, "-m", "suites.catch", f"--logdir={logdir}", "--runtime=ray", *flags]


@pytest.mark.timeout(600)  # 23 s alone, ~4 min beside two training runs on 2 cores
def test_a_ray_run_with_replay_mixes_older_unrolls_into_its_batches_and_counts_only_fresh_frames(tmp_path):
    """Replay sits in the learner's input pipeline, after the runtime: the same buffer behind Ray actors."""
    command = _catch_on_ray(
        tmp_path / "run",
        "--num_actors=2",
        "--envs_per_actor=4",
        "--actor_cpus=0.5",
        "--total_frames=2400",
        "--replay_capacity=24",
        "--replay_fraction=0.5",
        "--progress_every_secs=1",
    )
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    progress = [line for line in done.stdout.splitlines() if line.startswith("frames ")]
    last = dict(re.findall(r"\b(replay|replay_age) ([\d.]+)", progress[-1]))
    assert float(last["replay"]) == 24  # the buffer filled to its capacity
    assert float(last["replay_age"]) > 1.0  # replayed unrolls are older than the fresh ones of the same batch
    # The first batch is all fresh (16 unrolls x 10 steps); once the buffer holds a batch, half of every batch is
    # replayed: 8 fresh unrolls, 80 frames an update. 1 + (2400 - 160) / 80 = 29 updates, not the 15 that
    # counting replayed frames would give.
    updates = int(re.search(r"done: [\d,]+ frames, ([\d,]+) updates", done.stdout)[1].replace(",", ""))
    assert 28 <= updates <= 30, done.stdout[-2000:]


@pytest.mark.slow
def test_catch_learns_on_a_two_node_ray_cluster(tmp_path):
    """The trainer joins a cluster of two simulated nodes (one actor each) and learns as the local runtime."""
    from ray.cluster_utils import Cluster

    use_loopback_only()  # for the nodes started here and, through the environment, for the trainer
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        logdir = tmp_path / "run"
        command = _catch_on_ray(
            logdir,
            f"--ray_address={cluster.address}",
            "--total_frames=60000",
            "--learning_rate=0.01",
            "--num_actors=2",
            "--envs_per_actor=8",
            "--actor_cpus=1",
            "--progress_every_secs=5",
        )
        started = time.monotonic()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=400)
        elapsed = time.monotonic() - started
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        cluster.shutdown()
    # The local runtime's learning check (tests/test_learning_catch.py): the same threshold.
    evaluation = subprocess.run(
        [sys.executable, "-m", "impala_tf.evaluate", f"--logdir={logdir}", "--episodes=50"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluation.returncode == 0, evaluation.stderr[-3000:]
    summary = json.loads((logdir / "eval_summary.json").read_text())
    with open(logdir / "episodes.csv") as f:
        returns = [float(row["episode_return"]) for row in csv.DictReader(f)]
    print(f"two-node Ray Catch run: {elapsed:.0f} s; evaluation {summary['mean_score']}")
    assert summary["trained_frames"] >= 60_000
    assert summary["mean_score"]["catch"] >= 0.8, summary
    assert np.mean(returns[-200:]) > np.mean(returns[:200]) + 0.5
    assert "actor_failures 0" in done.stdout
    nodes = set(re.findall(r"actor \d up \(process \d+ on node (\w+)\)", done.stderr))
    assert len(nodes) == 2, done.stderr[-3000:]  # one actor on each node
