"""Ray transport: actors are Ray actors (CPU processes on any node); the learner stays on the driver.

Same Actor code as the local runtime (`agent.make_actor`); only the transport differs:
  - parameters: the driver `ray.put`s one snapshot per learner version that some actor asked for, and passes the
    reference with each request, so every node fetches it once from the object store (no per-actor copies);
  - unrolls: the driver keeps at most `in_flight` requests per actor; a result is turned into unrolls for the
    learner's bounded queue before the next request goes out (back-pressure: the object store holds at most
    num_actors x in_flight results);
  - faults: an actor whose process dies is restarted by Ray (max_restarts); an actor whose environment raises is
    killed and so restarted with fresh environments. Both are counted; past --max_actor_restarts the run stops.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import ray

from impala_tf import agent
from impala_tf.actor import ParamSnapshot
from impala_tf.envs.base import EpisodeStats
from impala_tf.runtime.local import ActorFailures, UnrollQueue
from impala_tf.unroll import Unroll

log = logging.getLogger(__name__)


class ActorWorker:
    """Runs one actor inside a Ray actor process; each `next_unrolls` call returns one unroll of every env."""

    def __init__(self, spec: agent.RunSpec, actor_id: int):
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        context = ray.get_runtime_context()
        incarnation = 1 if context.was_current_actor_reconstructed else 0
        self._params: ParamSnapshot | None = None
        self._episodes: list[EpisodeStats] = []
        self._actor = agent.make_actor(
            spec, actor_id, lambda: self._params, self._episodes.append, incarnation
        )
        self._unrolls: Iterator[list[Unroll]] | None = None

    def next_unrolls(self, params: ParamSnapshot) -> tuple[list[Unroll], list[EpisodeStats], int]:
        self._params = params
        if self._unrolls is None:
            self._unrolls = self._actor.unrolls()
        unrolls = next(self._unrolls)
        episodes, self._episodes[:] = list(self._episodes), []
        return unrolls, episodes, len(unrolls) * self._actor.unroll_length

    def pid(self) -> int:
        import os

        return os.getpid()


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Joins `address`, or starts a local instance on loopback. Returns True if this call started Ray."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
        return False
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    return True


class RayRuntime:
    """Actors as Ray actors. The seam every runtime implements: start, unrolls, after_update, stats, fatal, stop."""

    def __init__(
        self,
        spec: agent.RunSpec,
        snapshot_fn: Callable[[], ParamSnapshot],
        on_episode: Callable[[EpisodeStats], None],
        stop: threading.Event,
        queue_capacity: int,
        max_restarts: int,
        address: str | None = None,
        actor_cpus: float = 1.0,
        in_flight: int = 2,
    ):
        self._spec = spec
        self._snapshot_fn = snapshot_fn
        self._on_episode = on_episode
        self._stop_event = stop
        self._queue = UnrollQueue(queue_capacity, stop)
        self._failures = ActorFailures(max_restarts)
        self._address = address
        self._actor_cpus = actor_cpus
        self._in_flight = in_flight
        self._started_ray = False
        self._workers: list = []
        self._params_ref = None
        self._wanted = False
        self._params_lock = threading.Lock()
        self._steps = 0
        self._deaths = 0
        self._thread = threading.Thread(target=self._pump, name="ray-pump", daemon=True)

    def start(self) -> None:
        self._started_ray = init_ray(self._address)
        remote = ray.remote(ActorWorker).options(
            num_cpus=self._actor_cpus, max_restarts=-1, max_task_retries=0, max_concurrency=1
        )
        self._workers = [remote.remote(self._spec, i) for i in range(self._spec.num_actors)]
        self._publish()
        self._thread.start()

    def _publish(self) -> None:
        snapshot = self._snapshot_fn()
        with self._params_lock:
            self._params_ref = ray.put(snapshot)

    def _request(self, worker_index: int):
        with self._params_lock:
            params = self._params_ref
            self._wanted = True
        return self._workers[worker_index].next_unrolls.remote(params)

    def _pump(self) -> None:
        """Keeps `in_flight` requests per actor and moves results into the learner's queue."""
        pending = {}
        try:
            for i in range(len(self._workers)):
                for _ in range(self._in_flight):
                    pending[self._request(i)] = i
            while not self._stop_event.is_set():
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.2)
                if not ready:
                    continue
                ref = ready[0]
                i = pending.pop(ref)
                try:
                    unrolls, episodes, steps = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as error:
                    # The process died; Ray restarts it. Count once per death, not once per in-flight request.
                    if not self._record_failure(i, error, died=True):
                        return
                    time.sleep(0.5)
                    pending[self._request(i)] = i
                    continue
                except ray.exceptions.RayTaskError as error:
                    # The environment or the actor code raised: restart it with fresh environments.
                    if not self._record_failure(i, error.cause or error, died=False):
                        return
                    ray.kill(self._workers[i], no_restart=False)
                    pending[self._request(i)] = i
                    continue
                for episode in episodes:
                    self._on_episode(episode)
                self._steps += steps
                for unroll in unrolls:
                    if not self._queue.put(unroll):
                        return
                pending[self._request(i)] = i
        finally:
            for ref in pending:
                ray.cancel(ref, force=False)

    def _record_failure(self, worker_index: int, error: BaseException, died: bool) -> bool:
        if died:
            self._deaths += 1
        if not self._failures.record(worker_index, error):
            self._stop_event.set()
            return False
        return True

    def unrolls(self) -> Iterator[Unroll]:
        return iter(self._queue)

    def after_update(self) -> None:
        # One object-store copy per learner version, and only once some request has carried the previous one.
        if self._wanted:
            self._wanted = False
            self._publish()

    @property
    def fatal(self) -> str | None:
        return self._failures.fatal

    def stats(self) -> dict[str, int]:
        return {
            "actor_steps": self._steps,
            "actor_failures": self._failures.count,
            "actor_deaths": self._deaths,
            "queue": self._queue.qsize(),
        }

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for worker in self._workers:
            ray.kill(worker, no_restart=True)
        self._workers = []
        if self._started_ray:
            ray.shutdown()
