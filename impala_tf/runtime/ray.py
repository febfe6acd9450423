"""Ray transport: actors are Ray actors (CPU processes on any node); the learner stays on the driver.

Same Actor code as the local runtime (`agent.make_actor`); only the transport differs:
  - parameters: each request carries a reference to parameters at least as new as the learner's latest
    finished update when the request is made (`local.ParamServer`'s rule, without blocking: during an update
    whose predecessor nobody asked for, the request waits in the driver until the learner publishes after that
    update). The driver `ray.put`s one snapshot per learner version that some request needs, so each node
    fetches a version once from the object store (no per-actor copies, nothing sent while it is unchanged).
    With `in_flight` = 2 an actor starts a request's unroll when it finishes the previous one, so it acts
    with parameters up to one unroll older than when it starts;
  - unrolls: the driver keeps at most `in_flight` requests per actor and turns each result into unrolls for the
    learner's bounded queue before it asks that actor again (back-pressure: the object store holds at most
    num_actors x in_flight results, plus what the queue holds);
  - faults: an actor whose process dies is restarted by Ray (max_restarts=-1); an actor whose environment
    raises is killed, and so restarted with fresh environments. Either is one failure, however many requests
    were in flight; the driver probes the actor until its new process answers, then resumes. Past
    --max_actor_restarts failures, or when a restarted actor does not come back in `restart_timeout_secs`, the
    run stops with an error instead of waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray
from ray._private import ray_constants
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from impala_tf import agent
from impala_tf.actor import Actor, ParamSnapshot
from impala_tf.envs.base import EpisodeStats
from impala_tf.runtime.local import ActorFailures, ParamServer, UnrollQueue
from impala_tf.unroll import Unroll

log = logging.getLogger(__name__)

_POLL_SECS = 0.1
_DEFERRED_POLL_SECS = 0.005  # while a request waits for the learner's next parameters
_PROBE_SECS = 0.5  # between readiness probes of a restarting actor
_RESERVE_SECS = 60.0  # how long --learner_gpus waits for the driver's node to free its GPUs

MakeActor = Callable[..., Actor]  # agent.make_actor's signature


class ActorWorker:
    """One actor in a Ray actor process. Its environments are built on the first request, with the incarnation
    (restart count) the driver gives, so that a restarted actor does not replay its predecessor's seeds."""

    def __init__(self, spec: agent.RunSpec, actor_id: int, num_threads: int, make_actor: MakeActor):
        import tensorflow as tf

        # Before TensorFlow initialises: actors act on CPU, within the CPUs Ray gave them.
        tf.config.set_visible_devices([], "GPU")
        tf.config.threading.set_intra_op_parallelism_threads(num_threads)
        tf.config.threading.set_inter_op_parallelism_threads(num_threads)
        self._spec = spec
        self._actor_id = actor_id
        self._make_actor = make_actor
        self._params: ParamSnapshot | None = None
        self._episodes: list[EpisodeStats] = []
        self._actor: Actor | None = None
        self._unrolls: Iterator[list[Unroll]] | None = None
        self._error: Exception | None = None

    def ready(self) -> tuple[int, str]:
        """(process id, Ray node id): answers once the (re)started process is up."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def next_unrolls(
        self, params: ParamSnapshot, incarnation: int
    ) -> tuple[list[Unroll], list[EpisodeStats], int]:
        """One unroll of every environment, the episodes finished meanwhile, and the agent steps taken."""
        self._params = params
        if self._actor is None:
            self._actor = self._make_actor(
                self._spec, self._actor_id, lambda: self._params, self._episodes.append, incarnation
            )
            self._unrolls = self._actor.unrolls()
        if self._error is not None:
            # The error closed the generator: the requests still in flight get it too, not a StopIteration that
            # the driver could take for the cause when their answers arrive first.
            raise self._error
        try:
            unrolls = next(self._unrolls)
        except Exception as error:
            self._error = error
            raise
        episodes, self._episodes[:] = list(self._episodes), []
        return unrolls, episodes, len(unrolls) * self._actor.unroll_length


class _LearnerReservation:
    """Holds --learner_gpus GPUs of the driver's node, so that Ray schedules nothing else on them."""

    def ready(self) -> bool:
        return True


def use_loopback_only() -> None:
    """Keeps the Ray services that this process starts or joins on 127.0.0.1.

    Ray replaces a loopback node address by the machine's network address unless multi-node clusters are off
    (its default on macOS and Windows), and binds its services to the node address. The environment variable
    turns clusters off for the processes Ray starts from here; the constant for this process, which read the
    variable when it imported Ray.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def init_ray(address: str | None, num_cpus: int | None = None) -> bool:
    """Joins the cluster at `address`, or starts a local instance on loopback only (no dashboard).

    Returns True if this call started Ray (the caller then shuts it down).
    """
    if ray.is_initialized():
        return False
    if address:
        if address.split(":")[0] in ("127.0.0.1", "localhost"):
            use_loopback_only()  # a cluster on this machine's loopback (`ray start --node-ip-address=127.0.0.1`)
        ray.init(address=address, log_to_driver=False)
        return False
    use_loopback_only()
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    return True


@dataclasses.dataclass
class _Slot:
    """The driver's view of one Ray actor."""

    handle: Any
    incarnation: int = 0  # failures so far; requests carry it, so that a failure's fallout is recognised
    ready: bool = False  # its current process answered a probe
    probing: bool = False
    probe_at: float = 0.0
    down_since: float = 0.0  # when it last failed (or was created)
    pid: int | None = None
    pid_before: int | None = None  # a killed process may answer once more before it dies


@dataclasses.dataclass
class _Deferred:
    """A request that waits for parameters holding `version` learner updates."""

    index: int
    incarnation: int
    version: int
    deadline: float


class RayRuntime:
    """Actors as Ray actors. The seam every runtime implements: start, unrolls, before_update and after_update
    (around each learner update), stats, fatal, stop."""

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
        learner_gpus: float = 0.0,
        in_flight: int = 2,
        restart_timeout_secs: float = 300.0,
        make_actor: MakeActor = agent.make_actor,
        params_wait_secs: float = 60.0,
    ):
        """
        Args:
          spec: the run; one Ray actor per `spec.num_actors`.
          snapshot_fn: the learner's current parameters (called on the learner's thread).
          on_episode: called on the runtime's thread for each finished episode.
          stop: set to stop the run; the runtime sets it on a fatal failure.
          queue_capacity: unrolls buffered for the learner.
          max_restarts: actor failures after which the run stops.
          address: a Ray cluster to join; None starts a local instance (loopback only) for this run.
          actor_cpus: CPUs Ray reserves for each actor (also its TensorFlow thread count).
          learner_gpus: GPUs of the driver's node reserved for the learner (0: none).
          in_flight: requests outstanding per actor.
          restart_timeout_secs: how long a failed actor may take to answer again.
          make_actor: builds an Actor in the worker (`agent.make_actor`'s signature; for fault injection).
          params_wait_secs: how long a request waits for the learner's next parameters before it goes with the
            newest there are (a learner stuck inside an update).
        """
        if in_flight < 1:
            raise ValueError(f"in_flight must be >= 1, got {in_flight}")
        if actor_cpus <= 0 or learner_gpus < 0:
            raise ValueError(
                f"need actor_cpus > 0 and learner_gpus >= 0, got {actor_cpus} and {learner_gpus}"
            )
        self._spec = spec
        self._snapshot_fn = snapshot_fn
        self._on_episode = on_episode
        self._stop_event = stop
        self._queue = UnrollQueue(queue_capacity, stop)
        self._failures = ActorFailures(max_restarts)
        self._address = address
        self._actor_cpus = actor_cpus
        self._learner_gpus = learner_gpus
        self._in_flight = in_flight
        self._restart_timeout = restart_timeout_secs
        self._make_actor = make_actor
        self._started_ray = False
        self._slots: list[_Slot] = []
        self._reservation = None
        self._params_wait = params_wait_secs
        self._params: ParamServer | None = None  # of object references; made in start(), once Ray runs
        self._deferred: list[_Deferred] = []
        self._pump_error: str | None = None
        self._steps = 0
        self._deaths = 0
        self._restarts = 0
        self._thread = threading.Thread(target=self._pump_until_stopped, name="ray-pump", daemon=True)

    def start(self) -> None:
        needed_cpus = self._spec.num_actors * self._actor_cpus
        # A local instance gets enough logical CPUs for every actor: an actor Ray cannot place would never run.
        self._started_ray = init_ray(self._address, max(os.cpu_count() or 1, math.ceil(needed_cpus)))
        available = ray.cluster_resources().get("CPU", 0.0)
        if available < needed_cpus:
            log.warning(
                "%d actors x --actor_cpus=%g need %g CPUs; the Ray cluster has %g: some actors wait for resources",
                self._spec.num_actors,
                self._actor_cpus,
                needed_cpus,
                available,
            )
        if self._learner_gpus > 0:
            self._reserve_learner_gpus()
        remote = ray.remote(ActorWorker).options(
            num_cpus=self._actor_cpus, num_gpus=0, max_restarts=-1, max_task_retries=0
        )
        num_threads = max(1, int(self._actor_cpus))
        now = time.monotonic()
        self._slots = [
            _Slot(remote.remote(self._spec, i, num_threads, self._make_actor), down_since=now)
            for i in range(self._spec.num_actors)
        ]
        self._params = ParamServer(lambda: ray.put(self._snapshot_fn()), self._stop_event, self._params_wait)
        self._thread.start()

    def _reserve_learner_gpus(self) -> None:
        node_id = ray.get_runtime_context().get_node_id()
        node_gpus = next((n["Resources"].get("GPU", 0.0) for n in ray.nodes() if n["NodeID"] == node_id), 0.0)
        if node_gpus < self._learner_gpus:
            raise ValueError(
                f"--learner_gpus={self._learner_gpus:g}, but the driver's Ray node has {node_gpus:g} GPUs: run the "
                "trainer on a GPU node (see README, Ray), or use --learner_gpus=0"
            )
        self._reservation = (
            ray.remote(_LearnerReservation)
            .options(
                num_cpus=0,
                num_gpus=self._learner_gpus,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            )
            .remote()
        )
        ready, _ = ray.wait([self._reservation.ready.remote()], timeout=_RESERVE_SECS)
        if not ready:
            raise ValueError(
                f"--learner_gpus={self._learner_gpus:g}: the driver's node has {node_gpus:g} GPUs but other Ray "
                f"work held them for {_RESERVE_SECS:.0f} s"
            )

    def before_update(self) -> None:
        if self._params is not None:
            self._params.before_update()

    def after_update(self) -> None:
        if self._params is not None:
            self._params.after_update()

    def _request(self, index: int, pending: dict) -> None:
        """Asks actor `index` for its next unrolls, with the newest parameters (see the module docstring)."""
        version, params = self._params.ask()
        if params is None:
            slot = self._slots[index]
            deadline = time.monotonic() + self._params_wait
            self._deferred.append(_Deferred(index, slot.incarnation, version, deadline))
            return
        self._send(index, params, pending)

    def _send(self, index: int, params: Any, pending: dict) -> None:
        slot = self._slots[index]
        pending[slot.handle.next_unrolls.remote(params, slot.incarnation)] = (
            index,
            slot.incarnation,
            "unrolls",
        )

    def _send_deferred(self, pending: dict) -> None:
        """Sends the waiting requests whose parameters the learner has published (or whose wait is over)."""
        now, waiting = time.monotonic(), []
        for request in self._deferred:
            slot = self._slots[request.index]
            if not slot.ready or slot.incarnation != request.incarnation:
                continue  # its actor failed meanwhile: the restart asks anew
            params = self._params.at_least(request.version)
            if params is None and now < request.deadline and not self._stop_event.is_set():
                waiting.append(request)
                continue
            if params is None:
                log.warning(
                    "no parameters newer than update %d after %.0f s: the learner is stuck inside an update; "
                    "actor %d acts with older ones",
                    request.version,
                    self._params_wait,
                    request.index,
                )
                params = self._params.current()
            self._send(request.index, params, pending)
        self._deferred = waiting

    def _pump_until_stopped(self) -> None:
        pending: dict = {}
        try:
            self._pump(pending)
        except Exception as error:  # noqa: BLE001 - the learner must hear of it, not wait for unrolls forever
            log.exception("the Ray runtime failed")
            self._pump_error = f"the Ray runtime failed: {error!r}"
            self._stop_event.set()
        finally:
            self._drop(pending)

    @staticmethod
    def _drop(pending: dict) -> None:
        """Cancels what is still asked of the actors; reads what already failed, so Ray does not report it."""
        if not pending:
            return
        done, waiting = ray.wait(list(pending), num_returns=len(pending), timeout=0)
        for ref in waiting:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - its actor may be gone already
                pass
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayError:
                pass

    def _pump(self, pending: dict) -> None:
        """Probes actors until they answer, keeps `in_flight` requests per ready actor, and moves results into
        the learner's queue; returns when the run stops."""
        while not self._stop_event.is_set():
            if self._deferred:
                self._send_deferred(pending)
            poll = _DEFERRED_POLL_SECS if self._deferred else _POLL_SECS
            now = time.monotonic()
            for index, slot in enumerate(self._slots):
                if slot.ready:
                    continue
                if now - slot.down_since > self._restart_timeout:
                    error = TimeoutError(f"actor {index} did not answer within {self._restart_timeout:.0f} s")
                    slot.down_since = now
                    if not self._record_failure(index, error):
                        return
                if not slot.probing and now >= slot.probe_at:
                    pending[slot.handle.ready.remote()] = (index, slot.incarnation, "probe")
                    slot.probing = True
            if not pending:
                time.sleep(poll)
                continue
            done, _ = ray.wait(list(pending), num_returns=1, timeout=poll)
            for ref in done:
                index, incarnation, kind = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:
                    if not self._on_error(index, incarnation, kind, error):
                        return
                    continue
                if kind == "probe":
                    self._on_probe(index, incarnation, result, pending)
                    continue
                unrolls, episodes, steps = result
                for episode in episodes:
                    self._on_episode(episode)
                self._steps += steps
                for unroll in unrolls:
                    if not self._queue.put(unroll):
                        return
                slot = self._slots[index]
                if slot.ready and incarnation == slot.incarnation:
                    self._request(index, pending)

    def _on_probe(self, index: int, incarnation: int, answer: tuple[int, str], pending: dict) -> None:
        slot = self._slots[index]
        slot.probing = False
        pid, node_id = answer
        if incarnation != slot.incarnation or pid == slot.pid_before:
            slot.probe_at = time.monotonic() + _PROBE_SECS  # an answer from before the failure: ask again
            return
        slot.ready, slot.pid = True, pid
        if incarnation > 0:
            self._restarts += 1
            log.warning(
                "actor %d restarted (process %d on node %s, restart %d of the run)",
                index,
                pid,
                node_id[:8],
                self._restarts,
            )
        else:
            log.info("actor %d up (process %d on node %s)", index, pid, node_id[:8])
        for _ in range(self._in_flight):
            self._request(index, pending)

    def _on_error(self, index: int, incarnation: int, kind: str, error: ray.exceptions.RayError) -> bool:
        """Handles a failed request; returns False if the run must stop."""
        slot = self._slots[index]
        now = time.monotonic()
        if kind == "probe":
            slot.probing = False  # still restarting: probe again shortly
            slot.probe_at = now + _PROBE_SECS
            return True
        if incarnation != slot.incarnation:
            return True  # another request lost in a failure already counted
        if isinstance(error, ray.exceptions.RayTaskError):
            # The environment or the actor code raised: a fresh process gets fresh environments.
            cause = error.cause or error
            remote_traceback = getattr(error, "traceback_str", "") or str(error)
            log.warning(
                "actor %d raised %r; restarting its process. In the actor:\n%s",
                index,
                cause,
                remote_traceback,
            )
            ray.kill(slot.handle, no_restart=False)
        else:
            cause = error.with_traceback(None)  # the driver's side of it says nothing
            self._deaths += 1
            log.warning(
                "actor %d died (process %s, death %d of the run); Ray restarts it",
                index,
                slot.pid,
                self._deaths,
            )
        slot.incarnation += 1
        slot.ready, slot.probing = False, False
        slot.pid_before, slot.pid = slot.pid, None
        slot.down_since, slot.probe_at = now, now + _PROBE_SECS
        return self._record_failure(index, cause)

    def _record_failure(self, index: int, error: BaseException) -> bool:
        if not self._failures.record(index, error):
            self._stop_event.set()
            return False
        return True

    def unrolls(self) -> Iterator[Unroll]:
        return iter(self._queue)

    @property
    def fatal(self) -> str | None:
        return self._failures.fatal or self._pump_error

    def actor_pids(self) -> list[int | None]:
        """The process id of each actor that is up (None while it starts or restarts)."""
        return [slot.pid if slot.ready else None for slot in self._slots]

    def stats(self) -> dict[str, int]:
        return {
            "actor_steps": self._steps,
            "actor_failures": self._failures.count,
            "actor_deaths": self._deaths,
            "actor_restarts": self._restarts,
            "queue": self._queue.qsize(),
        }

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        for slot in self._slots:
            ray.kill(slot.handle, no_restart=True)
        self._slots = []
        if self._reservation is not None:
            ray.kill(self._reservation)
            self._reservation = None
        if self._started_ray:
            ray.shutdown()
