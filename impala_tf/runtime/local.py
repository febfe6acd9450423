"""Local transport: actor threads in this process, a bounded unroll queue, the learner's parameters on request.

Threads suffice on one machine because the heavy work releases the GIL (ALE steps in C++ threads, TF ops run in
its own thread pools); see bench/NOTES.md for the measurements behind that choice.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from impala_tf import agent
from impala_tf.actor import Actor, ParamSnapshot
from impala_tf.envs.base import EpisodeStats
from impala_tf.unroll import Unroll

log = logging.getLogger(__name__)

_POLL_SECS = 0.1
# Fault injection for tests and `make soak`: each actor raises InjectedFault after an unroll with this probability.
FAULT_RATE_ENV = "IMPALA_TF_FAULT_RATE"
# What ParamServer hands out: a ParamSnapshot here, a Ray object reference in the Ray runtime.
P = TypeVar("P")


class InjectedFault(RuntimeError):
    """The failure that IMPALA_TF_FAULT_RATE injects into actors."""


def put_unless_stopped(bounded: queue.Queue, item, stop: threading.Event) -> bool:
    """Puts `item`, blocking while `bounded` is full; returns False (nothing put) once `stop` is set."""
    while not stop.is_set():
        try:
            bounded.put(item, timeout=_POLL_SECS)
            return True
        except queue.Full:
            continue
    return False


class UnrollQueue:
    """Bounded FIFO of unrolls: a full queue blocks the actors (back-pressure), it never drops.

    `producers_alive`, when given, is asked whenever the queue stays empty: once it answers False (every producer
    has exited) iteration ends and the run stops, rather than the learner waiting forever.
    """

    def __init__(
        self, capacity: int, stop: threading.Event, producers_alive: Callable[[], bool] | None = None
    ):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self._queue: queue.Queue[Unroll] = queue.Queue(maxsize=capacity)
        self._stop_event = stop
        self._producers_alive = producers_alive
        self.producers_gone = False

    def put(self, unroll: Unroll) -> bool:
        """Blocks while full; returns False if the run is stopping."""
        return put_unless_stopped(self._queue, unroll, self._stop_event)

    def __iter__(self) -> Iterator[Unroll]:
        """Yields unrolls until the run stops (the source of `trainer.LearnerBatches`)."""
        while not self._stop_event.is_set():
            try:
                yield self._queue.get(timeout=_POLL_SECS)
            except queue.Empty:
                # In this order: producers that exited because the run is stopping do not count as gone.
                if self._producers_alive is not None and not self._producers_alive():
                    if not self._stop_event.is_set():
                        self.producers_gone = True
                        self._stop_event.set()

    def qsize(self) -> int:
        return self._queue.qsize()


class ParamServer(Generic[P]):
    """The learner's parameters for the actors: what `get()` returns is at least as new as the learner's latest
    finished update at the time of the call.

    The learner brackets each update with `before_update()` and `after_update()`. A snapshot (`snapshot_fn`, a
    host copy of the network's variables) is only ever taken outside an update, so it is never torn:
      - between updates, an ask whose snapshot is older than the latest update takes a new one at once (the
        learner's next `before_update` waits for that copy);
      - during an update, an ask whose snapshot is older than the previous update waits for the learner to
        publish when this update ends (`after_update` copies only when some ask waits), so what it gets also
        holds the update in progress. An ask whose snapshot is current returns at once.
    Nothing is copied while nobody asks, and at most one copy is taken per learner version. A wait ends when
    the run stops (`stop`) or after `wait_secs` (a learner stuck inside an update); `get()` then returns the
    newest snapshot there is.

    `ask()` and `at_least()` are the same rule without the wait, for a runtime that must not block (Ray's).
    """

    def __init__(
        self, snapshot_fn: Callable[[], P], stop: threading.Event | None = None, wait_secs: float = 60.0
    ):
        self._snapshot_fn = snapshot_fn
        self._stop_event = stop if stop is not None else threading.Event()
        self._wait_secs = wait_secs
        self._cond = threading.Condition()
        self._updates = 0  # updates the learner has finished
        self._updating = False
        self._wanted = False  # an ask waits for the snapshot after the update in progress
        self._snapshot = snapshot_fn()
        self._snapshot_at = 0  # self._updates when self._snapshot was taken
        self.copies = 1  # snapshots taken so far

    def before_update(self) -> None:
        """Called by the learner before it changes its variables (waits for a copy in progress)."""
        with self._cond:
            self._updating = True

    def after_update(self) -> None:
        """Called by the learner after an update: publishes it if an ask is waiting for it."""
        with self._cond:
            self._updating = False
            self._updates += 1
            if self._wanted:
                self._wanted = False
                self._publish()
            self._cond.notify_all()  # wakes asks waiting for this update (`get`, `wait_for`)

    def ask(self) -> tuple[int, P | None]:
        """(the version an ask now needs, a snapshot at least that new or None: then `at_least` gives it once
        the learner publishes after its update in progress)."""
        with self._cond:
            target = self._updates
            if self._snapshot_at >= target:
                return target, self._snapshot
            if not self._updating:
                self._publish()
                return target, self._snapshot
            self._wanted = True
            return target, None

    def at_least(self, target: int) -> P | None:
        """The snapshot if it holds `target` updates or more, else None."""
        with self._cond:
            return self._snapshot if self._snapshot_at >= target else None

    def current(self) -> P:
        """The newest snapshot taken, however old."""
        with self._cond:
            return self._snapshot

    def get(self) -> P:
        """A snapshot at least as new as the learner's latest finished update (see the class docstring)."""
        target, snapshot = self.ask()
        if snapshot is not None:
            return snapshot
        deadline = time.monotonic() + self._wait_secs
        with self._cond:
            while self._snapshot_at < target and not self._stop_event.is_set():
                if not self._updating:  # the update ended without publishing (nobody else can clear _wanted)
                    self._publish()
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    log.warning(
                        "no parameters newer than update %d after %.0f s: the learner is stuck inside an "
                        "update; acting with the parameters of update %d",
                        target,
                        self._wait_secs,
                        self._snapshot_at,
                    )
                    break
                self._wanted = True
                self._cond.wait(min(remaining, _POLL_SECS))
            return self._snapshot

    def wait_for(self, updates: int) -> tuple[int, P]:
        """Blocks until the learner has finished `updates` updates (or the run stops); returns (updates finished,
        a snapshot holding them). Synchronous acting asks for one update more than its last snapshot held."""
        with self._cond:
            while self._updates < updates and not self._stop_event.is_set():
                self._cond.wait(_POLL_SECS)
            done = self._updates
        return done, self.get()

    def _publish(self) -> None:
        # Under self._cond, outside any update.
        self._snapshot = self._snapshot_fn()
        self._snapshot_at = self._updates
        self.copies += 1


class ActorFailures:
    """Counts actor failures across actors; logs each distinct failure (type and place raised) once with its
    traceback, and its repeats in one line. Past `max_restarts` failures the run is to stop (`fatal` says why)."""

    def __init__(self, max_restarts: int):
        self.max_restarts = max_restarts
        self.count = 0
        self.fatal: str | None = None
        self._seen: set[tuple] = set()
        self._lock = threading.Lock()

    def record(self, actor_id: int, error: BaseException) -> bool:
        """Returns True if the actor may restart. Once the run is failing (`fatal`), another actor's failure that
        raced with the stop is neither counted nor logged."""
        frames = traceback.extract_tb(error.__traceback__)
        where = (frames[-1].filename, frames[-1].lineno) if frames else None
        key = (type(error).__name__, where)
        with self._lock:
            if self.fatal is not None:
                return False
            self.count += 1
            if key not in self._seen:
                self._seen.add(key)
                text = "".join(traceback.format_exception(error)).rstrip()
                log.error("actor %d failed (failure %d); restarting it:\n%s", actor_id, self.count, text)
            else:
                log.error("actor %d failed again (failure %d): %r", actor_id, self.count, error)
            if self.count > self.max_restarts:
                self.fatal = (
                    f"{self.count} actor failures, more than --max_actor_restarts={self.max_restarts}; "
                    f"the last: {type(error).__name__}: {error}"
                )
                return False
            return True


class ActorThread(threading.Thread):
    """Runs an actor, pushing its unrolls into the queue; on an error restarts it with fresh environments."""

    def __init__(
        self,
        actor_id: int,
        make_actor: Callable[[int, int], Actor],
        unroll_queue: UnrollQueue,
        stop: threading.Event,
        failures: ActorFailures,
    ):
        super().__init__(name=f"actor-{actor_id}", daemon=True)
        self.actor_id = actor_id
        self._make_actor = make_actor
        self._queue = unroll_queue
        self._stop_event = stop
        self._failures = failures
        self._fault_rate = float(os.environ.get(FAULT_RATE_ENV) or 0.0)
        self.steps = 0
        self.restarts = 0

    def run(self) -> None:
        faults = random.Random(self.actor_id)
        while not self._stop_event.is_set():
            actor = None
            try:
                actor = self._make_actor(self.actor_id, self.restarts)
                for unrolls in actor.unrolls():
                    for unroll in unrolls:
                        if not self._queue.put(unroll):
                            return
                    self.steps += len(unrolls) * actor.unroll_length
                    if faults.random() < self._fault_rate:
                        raise InjectedFault(f"injected by {FAULT_RATE_ENV}={self._fault_rate}")
            except Exception as error:  # any actor error restarts the actor, with fresh environments
                if self._stop_event.is_set():
                    return
                if not self._failures.record(self.actor_id, error):
                    self._stop_event.set()
                    return
                self.restarts += 1
            finally:
                if actor is not None:
                    _close_quietly(actor.env, self.actor_id)


def _next_update_params(params: ParamServer) -> Callable[[], ParamSnapshot]:
    """Synchronous acting's parameters: the first call returns the newest at once; each later call waits for the
    learner's next update after the previous call's, which comes once every environment's unroll is in."""
    last = -1

    def get() -> ParamSnapshot:
        nonlocal last
        last, snapshot = params.wait_for(last + 1)
        return snapshot

    return get


def _close_quietly(env, actor_id: int) -> None:
    try:
        env.close()
    except Exception as error:  # a broken environment must not take the restart down with it
        log.warning("actor %d: closing its environments failed: %r", actor_id, error)


class LocalRuntime:
    """Actors as threads of this process. The seam every runtime implements: start, unrolls, before_update and
    after_update (around each learner update), stats, fatal, stop."""

    def __init__(
        self,
        spec: agent.RunSpec,
        snapshot_fn: Callable[[], ParamSnapshot],
        on_episode: Callable[[EpisodeStats], None],
        stop: threading.Event,
        queue_capacity: int,
        max_restarts: int,
    ):
        self._stop_event = stop
        self._queue = UnrollQueue(queue_capacity, stop, producers_alive=self._any_actor_alive)
        self._params = ParamServer(snapshot_fn, stop)
        self._failures = ActorFailures(max_restarts)

        def make_actor(actor_id: int, incarnation: int) -> Actor:
            get_params = _next_update_params(self._params) if spec.synchronous else self._params.get
            return agent.make_actor(spec, actor_id, get_params, on_episode, incarnation)

        self._threads = [
            ActorThread(i, make_actor, self._queue, stop, self._failures) for i in range(spec.num_actors)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _any_actor_alive(self) -> bool:
        return any(t.is_alive() or t.ident is None for t in self._threads)  # ident None: not started yet

    def unrolls(self) -> Iterator[Unroll]:
        return iter(self._queue)

    def before_update(self) -> None:
        self._params.before_update()

    def after_update(self) -> None:
        self._params.after_update()

    @property
    def fatal(self) -> str | None:
        if self._failures.fatal is None and self._queue.producers_gone:
            return "every actor thread has exited"
        return self._failures.fatal

    def stats(self) -> dict[str, int]:
        return {
            "actor_steps": sum(t.steps for t in self._threads),
            "actor_failures": self._failures.count,
            "queue": self._queue.qsize(),
        }

    def stop(self, timeout: float = 10.0) -> None:
        self._stop_event.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
