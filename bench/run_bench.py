"""`make bench`: throughput and memory of every stage of the loop, measured in one run on this machine.

  env        Atari frames/s: raw ale-py AtariVectorEnv, and through impala_tf's batched interface, in the loop's
             configuration (its suite's games, one actor's environments and C++ threads)
  inference  frames/s of the actors' batched policy step (B environments), per network
  learner    frames/s of the jit-compiled learner step at T=20, B=32, per network, with and without XLA
  pipeline   frames/s of the learner input pipeline alone (single unrolls to time-major batches)
  loop       frames/s of the whole trainer (real actors, real learner, suite atari5) after warm-up, each network
             in a fresh process (configured as a real run; its peak RSS is the run's)
  limit      1 / (1/env + 1/inference + 1/learner): a perfectly overlapped loop on one shared machine
  efficiency loop / limit

Each stage's rate is the best of 3 timing windows; the loop's is its mean over one long window, so the efficiency
errs low. Frames are emulator frames (agent steps x 4). The last line printed is one JSON object; it is also saved under
bench/results/ with the date, the machine and the git commit. `--quick` is a smoke test (tiny sizes, minutes).
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from bench.loop import measure_loop  # noqa: E402
from experiments import ablation  # noqa: E402
from impala_tf import config, envs, networks, replay, rundir, suites, trainer  # noqa: E402
from impala_tf import learner as learner_lib
from impala_tf.actor import ActingPolicy  # noqa: E402
from impala_tf.envs.atari import default_num_threads  # noqa: E402
from impala_tf.envs.base import BatchedTimeStep  # noqa: E402
from impala_tf.losses import LossConfig  # noqa: E402
from impala_tf.unroll import Unroll, batch_axis  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_bool("quick", False, "Smoke test: tiny sizes and short windows (asserts only that it runs).")
flags.DEFINE_string("results_dir", "bench/results", "Where the JSON result is saved.")
flags.DEFINE_float("loop_secs", 60.0, "Measured window of each full-loop run (after warm-up).")
flags.DEFINE_string("loop_suite", "atari5", "Suite of the full-loop runs.")


def _ablation_cell_flags(cell: ablation.Cell) -> dict:
    """The MinAtar suite's default flags with an ablation cell's command-line flags over them, as values."""
    values = dict(suites.get_suite("minatar").default_flags)
    for flag in cell.flags:
        name, _, value = flag.removeprefix("--").partition("=")
        values[name] = FLAGS[name].parser.parse(value) if value else True
    return values


# Full-loop runs, each in a fresh process: name -> (suite, training flags). None: --loop_suite.
LOOPS = {
    "shallow": (None, {"network": "shallow"}),
    "deep": (None, {"network": "deep"}),
    # Batched A2C: one unroll per environment per update, so B = actors x envs (64 against the others' 32), which
    # bench_loop sets from the loop's environments.
    "shallow_synchronous": (None, {"network": "shallow", "synchronous": True}),
    # The MinAtar suite's defaults: its network, 2 x 30 environments, batches of 8, three quarters replayed.
    "minatar": ("minatar", dict(suites.get_suite("minatar").default_flags)),
    # The off-policy-correction grid's base cell (experiments/ablation.py): the same without replay, λ = 1.
    "minatar_grid": ("minatar", _ablation_cell_flags(ablation.Cell("vtrace"))),
}
flags.DEFINE_enum(
    "loop_only",
    None,
    list(LOOPS),
    "Run only this full loop, in this process, and print its result as JSON (what the bench runs in a fresh "
    "process per loop, so that the trainer configures TensorFlow as a real run does).",
)

OBS_SHAPE = (84, 84, 4)
NUM_ACTIONS = 18
FRAMES_PER_STEP = 4
LOOP_ACTORS, LOOP_ENVS_PER_ACTOR = 2, 32  # the full loop's actors; inference and env rows use its batch
NETWORKS = {  # name -> (torso, use_lstm)
    "shallow": ("shallow", False),
    "deep": ("deep", False),
    "deep_lstm": ("deep", True),
}


def device_description() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"GPU: {details.get('device_name', gpus[0].name)} x{len(gpus)}, {os.cpu_count()} CPU cores"
    model = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model}, {os.cpu_count()} cores"


def _network(name: str) -> networks.ImpalaNetwork:
    torso, use_lstm = NETWORKS[name]
    config_ = networks.NetworkConfig(torso=torso, use_lstm=use_lstm, num_actions=NUM_ACTIONS)
    return networks.make_network(config_, OBS_SHAPE)


WINDOWS = 3  # timing windows per stage measurement (1 with --quick)
QUICK_UNROLL_LENGTH, QUICK_BATCH_SIZE = 5, 4
# --quick loops start 8 environments per actor, not 32: an Atari loop's start-up (environments, first unrolls) is
# most of a quick bench's time (~40 s of ~60 s per loop at 32), and --quick asserts only that the bench runs.
QUICK_ENVS_PER_ACTOR = 8


def _timed(fn, min_calls: int, min_secs: float, windows: int | None = None) -> float:
    """Seconds per call of fn(), after one warm-up call: the best of WINDOWS windows of at least min_calls
    calls and min_secs seconds each. The best window (as timeit advises) keeps a noisy neighbour's moment out of
    a stage's rate; a stage's rate is then an upper bound, and the limit and efficiency built on it
    conservative."""
    fn()
    best = float("inf")
    for _ in range(windows or WINDOWS):
        calls, start = 0, time.perf_counter()
        while calls < min_calls or time.perf_counter() - start < min_secs:
            fn()
            calls += 1
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def bench_minatar(num_envs: int, secs: float) -> float:
    """Steps/s of the five-game MinAtar batched env (random actions): MinAtar's frames are its steps."""
    suite = rundir.resolve_suite("minatar", [])
    env = envs.make_batched_env(suite, [i % len(suite.games) for i in range(num_envs)], seed=0)
    rng = np.random.default_rng(0)
    num_actions = env.action_spec().num_values
    env.reset()
    seconds = _timed(lambda: env.step(rng.integers(0, num_actions, num_envs, dtype=np.int32)), 10, secs)
    env.close()
    return num_envs / seconds


def bench_inference(name: str, num_envs: int, xla: bool, secs: float, windows: int | None = None) -> float:
    policy = ActingPolicy(_network(name), seed=0, xla=xla)
    rng = np.random.default_rng(0)
    timestep = BatchedTimeStep(
        step_type=np.ones(num_envs, np.uint8),
        reward=np.zeros(num_envs, np.float32),
        discount=np.ones(num_envs, np.float32),
        observation=rng.integers(0, 255, (num_envs, *OBS_SHAPE), dtype=np.uint8),
    )
    prev_action = np.zeros(num_envs, np.int32)
    task_id = np.zeros(num_envs, np.int32)
    state = policy.initial_state(num_envs)
    seconds = _timed(lambda: policy.step(timestep, prev_action, task_id, state), 5, secs, windows)
    return num_envs * FRAMES_PER_STEP / seconds


def synthetic_batch(
    unroll_length: int,
    batch_size: int,
    state_size: int,
    seed: int = 0,
    obs_shape: tuple[int, ...] = OBS_SHAPE,
    num_actions: int = NUM_ACTIONS,
) -> Unroll:
    rng = np.random.default_rng(seed)
    t1, b = unroll_length + 1, batch_size
    step_type = np.ones((t1, b), np.uint8)
    step_type[0] = 0
    return Unroll(
        observation=tf.constant(rng.integers(0, 255, (t1, b, *obs_shape), dtype=np.uint8)),
        step_type=tf.constant(step_type),
        reward=tf.constant(rng.choice([0.0, 1.0], (t1, b)).astype(np.float32)),
        discount=tf.constant(np.ones((t1, b), np.float32)),
        prev_action=tf.constant(rng.integers(0, num_actions, (t1, b), dtype=np.int32)),
        action=tf.constant(rng.integers(0, num_actions, (t1, b), dtype=np.int32)),
        behaviour_logits=tf.constant(rng.normal(size=(t1, b, num_actions)).astype(np.float32)),
        task_id=tf.constant(np.zeros(b, np.int32)),
        agent_state=tf.constant(np.zeros((2, b, state_size), np.float32)),
        policy_version=tf.constant(np.zeros(b, np.int64)),
    )


def bench_pipeline(unroll_length: int, batch_size: int, secs: float) -> float:
    """Frames/s of the learner's input pipeline alone: single unrolls (strided views of an actor's time-major
    buffers, as actors emit them) into `trainer.LearnerBatches`' time-major batches."""
    block = synthetic_batch(unroll_length, batch_size, state_size=0)
    block = Unroll(*(np.asarray(x) for x in block))
    unrolls = [
        Unroll(*(x[(slice(None),) * batch_axis(name) + (i,)] for name, x in block._asdict().items()))
        for i in range(batch_size)
    ]
    batches = trainer.LearnerBatches(itertools.cycle(unrolls), batch_size)
    seconds = _timed(lambda: next(batches), 5, secs)
    batches.close()
    return unroll_length * batch_size * FRAMES_PER_STEP / seconds


def bench_learner(
    name: str, unroll_length: int, batch_size: int, xla: bool, calls: int, windows: int | None = None
) -> float:
    network = _network(name)
    learner = learner_lib.Learner(
        network,
        LossConfig(),
        learner_lib.OptimizerConfig(),
        total_frames=10**12,
        frames_per_step=FRAMES_PER_STEP,
        xla=xla,
    )
    batch = synthetic_batch(unroll_length, batch_size, network.state_size)

    def step():
        # .numpy() waits for the step to finish: without it only the dispatch would be timed.
        learner.step(batch)["total_loss"].numpy()

    seconds = _timed(step, calls, 0.0, windows)
    return unroll_length * batch_size * FRAMES_PER_STEP / seconds


def bench_loop(name: str, warmup_secs: float, window_secs: float, overrides: dict) -> dict:
    """The whole trainer in this process (loop `name` of LOOPS); frames/s of the learner over the window."""
    suite, loop_flags = LOOPS[name]
    values = {**overrides, **loop_flags}
    if values.get("synchronous"):
        values["batch_size"] = values["num_actors"] * values["envs_per_actor"]
    result = measure_loop(suite or FLAGS.loop_suite, [], warmup_secs, window_secs, use_lstm=False, **values)
    return {
        **result,
        "peak_rss_mb": peak_rss_mb(),
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS: /proc's VmHWM where there is one (getrusage's ru_maxrss survives fork and exec,
    so a child started by this bench would report the bench's own peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def loop_overrides(quick: bool) -> dict:
    """Two actor threads with 32 environments each: the inference batch the inference row measures (8 each and
    tiny batches with --quick)."""
    overrides = {"num_actors": LOOP_ACTORS, "envs_per_actor": LOOP_ENVS_PER_ACTOR}
    if quick:
        overrides.update(
            envs_per_actor=QUICK_ENVS_PER_ACTOR,
            unroll_length=QUICK_UNROLL_LENGTH,
            batch_size=QUICK_BATCH_SIZE,
        )
    return overrides


def bench_minatar_stages(
    secs: float,
    unroll_length: int,
    batch_size: int,
    fresh_per_batch: int,
    inference_xla: bool,
    learner_xla: bool,
) -> dict[str, float]:
    """The MinAtar loop's stages alone (frames/s): one actor's environments (the suite's 30, five games),
    inference with the suite's network on that batch, and the learner's step, with the loop's XLA settings. The
    learner's rate counts the `fresh_per_batch` unrolls of each batch that are not replayed, as the loop's
    frames/s does."""
    suite = rundir.resolve_suite("minatar", [])
    num_envs = LOOPS["minatar"][1]["envs_per_actor"]
    env = envs.make_batched_env(suite, [0], seed=0)  # only for the specs
    obs_shape, num_actions = tuple(env.observation_spec().shape), env.action_spec().num_values
    env.close()
    rng = np.random.default_rng(0)

    def network():
        return networks.make_network(
            networks.NetworkConfig(torso="minatar", use_lstm=False, num_actions=num_actions), obs_shape
        )

    policy = ActingPolicy(network(), seed=0, xla=inference_xla)
    timestep = BatchedTimeStep(
        np.ones(num_envs, np.uint8),
        np.zeros(num_envs, np.float32),
        np.ones(num_envs, np.float32),
        rng.integers(0, 2, (num_envs, *obs_shape), dtype=np.uint8) * 255,
    )
    zeros = np.zeros(num_envs, np.int32)
    state = policy.initial_state(num_envs)
    infer_secs = _timed(lambda: policy.step(timestep, zeros, zeros, state), 5, secs)
    learner = learner_lib.Learner(
        network(),
        LossConfig(),
        learner_lib.OptimizerConfig(),
        total_frames=10**12,
        frames_per_step=1,
        xla=learner_xla,
    )
    batch = synthetic_batch(unroll_length, batch_size, 0, obs_shape=obs_shape, num_actions=num_actions)
    learn_secs = _timed(lambda: learner.step(batch), 10, secs)
    return {
        "env": bench_minatar(num_envs, secs),
        "inference": num_envs / infer_secs,
        "learner": unroll_length * fresh_per_batch / learn_secs,
    }


def bench_replay_bytes(unroll_length: int) -> tuple[int, int]:
    """(bytes of one Atari unroll as the actor sends it, bytes the replay buffer keeps of it): real frames of
    the loop suite's first game, random actions."""
    suite = rundir.resolve_suite(FLAGS.loop_suite, [])
    env = envs.make_batched_env(suite, [0], seed=0)
    rng = np.random.default_rng(0)
    observations = [env.reset().observation[0]]
    for _ in range(unroll_length):
        observations.append(env.step(rng.integers(0, NUM_ACTIONS, 1, dtype=np.int32)).observation[0])
    env.close()
    t1 = unroll_length + 1
    unroll = Unroll(
        observation=np.stack(observations),
        step_type=np.ones(t1, np.uint8),
        reward=np.zeros(t1, np.float32),
        discount=np.ones(t1, np.float32),
        prev_action=np.zeros(t1, np.int32),
        action=np.zeros(t1, np.int32),
        behaviour_logits=np.zeros((t1, NUM_ACTIONS), np.float32),
        task_id=np.int32(0),
        agent_state=np.zeros((2, 0), np.float32),
        policy_version=np.int64(0),
    )
    buffer = replay.ReplayBuffer(capacity=1, seed=0)
    buffer.add(unroll)
    return replay.unroll_nbytes(unroll), buffer.nbytes


def run_loop_only(name: str) -> dict:
    quick = FLAGS.quick
    return bench_loop(
        name,
        warmup_secs=2.0 if quick else 15.0,
        window_secs=5.0 if quick else FLAGS.loop_secs,
        overrides=loop_overrides(quick),
    )


def loop_in_fresh_process(name: str) -> dict:
    """`run_loop_only` in a new Python process: TensorFlow has not run there yet, so the trainer sets its thread
    pools as in a real run, and the peak RSS is the training run's alone."""
    argv = [f"--loop_only={name}", f"--loop_suite={FLAGS.loop_suite}", f"--loop_secs={FLAGS.loop_secs}"]
    if FLAGS.quick:
        argv.append("--quick")
    process = subprocess.run(
        [sys.executable, "-m", "bench.run_bench", *argv], capture_output=True, text=True, timeout=1800
    )
    lines = process.stdout.strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the {name} loop failed (exit {process.returncode}):\n{process.stderr[-3000:]}")
    return json.loads(lines[-1])


def limit(env: float, inference: float, learn: float) -> float:
    return 1.0 / (1.0 / env + 1.0 / inference + 1.0 / learn)


def git_commit() -> str:
    return rundir.git_commit() or "unknown"


def main(argv):
    del argv
    if FLAGS.loop_only:
        print(json.dumps(run_loop_only(FLAGS.loop_only)), flush=True)
        os._exit(0)  # actor threads and learner-batch threads are daemonic; do not wait for them
    quick = FLAGS.quick
    results: dict = {"device": device_description(), "quick": quick}

    def record(key: str, value: float, label: str) -> None:
        results[key] = round(float(value), 3)
        text = f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"  # ratios need the digits
        print(f"  {label:<58} {text:>12}", flush=True)

    bench_start = time.perf_counter()
    global WINDOWS
    WINDOWS = 1 if quick else WINDOWS
    unroll_length, batch_size = (QUICK_UNROLL_LENGTH, QUICK_BATCH_SIZE) if quick else (20, 32)
    print(f"impala-tf bench on {results['device']} (commit {git_commit()[:10]})", flush=True)

    # Environment: raw vector env vs the batched interface, in the loop's configuration: the loop suite's games,
    # one actor's environments, the C++ threads an actor's env gets by default. The limit uses this row.
    # Best of WINDOWS measurements, like every stage.
    loop_suite = rundir.resolve_suite(FLAGS.loop_suite, [])
    env = max(
        (
            envs.measure_env_fps(
                games=loop_suite.games,
                num_envs=LOOP_ENVS_PER_ACTOR,
                num_threads=default_num_threads(LOOP_ENVS_PER_ACTOR),
                seconds=2.0 if quick else 4.0,
                protocol=loop_suite.protocol,
            )
            for _ in range(WINDOWS)
        ),
        key=lambda measured: measured["interface_fps"],
    )
    where = f"{FLAGS.loop_suite}, {LOOP_ENVS_PER_ACTOR} envs"
    record("env_fps_raw", env["raw_fps"], f"env: raw AtariVectorEnv, {where} (frames/s)")
    record("env_fps", env["interface_fps"], "env: impala_tf batched interface, same envs (frames/s)")
    record("env_interface_ratio", env["interface_fps"] / env["raw_fps"], "env: interface / raw")
    pong = envs.measure_env_fps(games=("pong",), num_envs=8, seconds=2.0 if quick else 5.0)
    record("env_fps_pong", pong["interface_fps"], "env: interface, 8 pong envs (frames/s)")
    env_async = envs.measure_env_fps(games=("pong",), num_envs=8, seconds=2.0 if quick else 5.0, mode="async")
    record("env_fps_raw_async", env_async["raw_fps"], "env: raw AtariVectorEnv async halves, 8 pong envs")
    record("env_fps_async", env_async["interface_fps"], "env: interface, two async halves, same envs")
    record(
        "minatar_steps_per_sec",
        bench_minatar(20, 1.0 if quick else 2.0),
        "env: MinAtar, 5 games x 4 envs (steps/s)",
    )

    # The primary keys use the XLA setting the loop runs with (--xla=auto: on with a GPU, off on CPU), so that the
    # limit describes the loop that is measured; the other setting is reported beside it, from one window (it
    # enters no limit, and one window keeps the bench within ~10 minutes on 2 cores).
    loop_xla = config.use_xla("auto")
    xla_options = (loop_xla,) if quick else (loop_xla, not loop_xla)
    infer_envs = LOOP_ENVS_PER_ACTOR
    for name in NETWORKS:
        for xla in xla_options:
            suffix = "" if xla == loop_xla else ("_xla_on" if xla else "_xla_off")
            fps = bench_inference(
                name, infer_envs, xla, 1.0 if quick else 3.0, None if xla == loop_xla else 1
            )
            record(
                f"infer_fps_{name}{suffix}", fps, f"inference {name}, B={infer_envs}, xla={xla} (frames/s)"
            )
    for name in NETWORKS:
        for xla in xla_options:
            suffix = "" if xla == loop_xla else ("_xla_on" if xla else "_xla_off")
            calls = 1 if quick else (2 if name.startswith("deep") else 10)
            fps = bench_learner(name, unroll_length, batch_size, xla, calls, None if xla == loop_xla else 1)
            record(
                f"learn_fps_{name}{suffix}",
                fps,
                f"learner {name}, T={unroll_length} B={batch_size}, xla={xla} (frames/s)",
            )

    record(
        "pipeline_fps",
        bench_pipeline(unroll_length, batch_size, 1.0 if quick else 2.0),
        f"learner input pipeline, T={unroll_length} B={batch_size}: unrolls to batches (frames/s)",
    )

    loop_rss = []
    for name in ("shallow", "deep"):
        loop = loop_in_fresh_process(name)
        loop_rss.append(loop["peak_rss_mb"])
        results["loop_intra_op_threads"] = loop["intra_op_threads"]  # the trainer's choice (0: every core)
        record(f"loop_fps_{name}", loop["fps"], f"full loop {name}, {FLAGS.loop_suite} (frames/s)")
        lim = limit(results["env_fps"], results[f"infer_fps_{name}"], results[f"learn_fps_{name}"])
        record(f"limit_fps_{name}", lim, f"limit {name} = 1/(1/env + 1/inference + 1/learner)")
        record(f"efficiency_{name}", loop["fps"] / lim, f"efficiency {name} = loop / limit")

    # Synchronous (batched A2C, policy lag 0) against the asynchronous loop above: same suite, network, actors.
    sync = loop_in_fresh_process("shallow_synchronous")
    loop_rss.append(sync["peak_rss_mb"])
    record(
        "loop_fps_shallow_synchronous",
        sync["fps"],
        f"full loop shallow, synchronous (A2C), B={LOOP_ACTORS * loop_overrides(quick)['envs_per_actor']}",
    )
    record(
        "synchronous_over_async_shallow",
        sync["fps"] / results["loop_fps_shallow"],
        "synchronous / asynchronous frames/s, shallow",
    )

    # MinAtar: the suite's default loop and the ablation grid's, each against its own limit (MinAtar's frames are
    # its steps). Each loop's stages are measured just before it: on a shared 2-core VM the machine's speed drifts
    # by up to a quarter within the hour, and a limit from another moment would say little about the loop.
    for name in ("minatar", "minatar_grid"):
        loop_flags = LOOPS[name][1]
        batch = loop_flags["batch_size"]
        fresh = batch - (
            replay.num_replayed(batch, loop_flags.get("replay_fraction", FLAGS.replay_fraction))
            if loop_flags.get("replay_capacity")
            else 0
        )
        xla_value = loop_flags.get("xla", "auto")
        infer_xla, learn_xla = config.use_xla(xla_value), config.use_xla(xla_value, learner=True)
        stages = bench_minatar_stages(
            1.0 if quick else 2.0, unroll_length, batch, fresh, infer_xla, learn_xla
        )
        what = "the suite's defaults" if name == "minatar" else "the ablation grid's base cell"
        record(f"env_fps_{name}", stages["env"], "env: MinAtar, 5 games x 6 envs = one actor's 30 (steps/s)")
        record(
            f"infer_fps_{name}",
            stages["inference"],
            f"inference minatar, B=30, xla={infer_xla} (frames/s)",
        )
        record(
            f"learn_fps_{name}",
            stages["learner"],
            f"learner minatar, T={unroll_length} B={batch}, {fresh} fresh, xla={learn_xla} (fresh frames/s)",
        )
        loop = loop_in_fresh_process(name)
        loop_rss.append(loop["peak_rss_mb"])
        record(f"loop_fps_{name}", loop["fps"], f"full loop {name} ({what}), B={batch} (fresh frames/s)")
        lim = limit(stages["env"], stages["inference"], stages["learner"])
        record(f"limit_fps_{name}", lim, f"limit {name} = 1/(1/env + 1/inference + 1/learner)")
        record(f"efficiency_{name}", loop["fps"] / lim, f"efficiency {name} = loop / limit")

    raw_bytes, stored_bytes = bench_replay_bytes(unroll_length)
    record("replay_unroll_bytes", raw_bytes, f"replay: one Atari unroll as sent, T={unroll_length} (bytes)")
    record(
        "replay_unroll_bytes_stored", stored_bytes, "replay: the same unroll as the buffer keeps it (bytes)"
    )

    record("peak_rss_mb", max(loop_rss), "peak RSS of a full-loop training process (MB)")
    record("peak_rss_mb_bench", peak_rss_mb(), "peak RSS of this bench process: a dozen networks (MB)")
    results["bench_secs"] = round(time.perf_counter() - bench_start, 1)
    print(f"  {'wall time of this bench (s)':<58} {results['bench_secs']:>12,.1f}")
    results.update(
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
        commit=git_commit(),
        tensorflow=tf.__version__,
    )
    out_dir = Path(FLAGS.results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{stamp}_{'quick_' if quick else ''}{'gpu' if 'GPU' in results['device'] else 'cpu'}.json"
    from impala_tf.writers import atomic_write_json

    atomic_write_json(out_dir / name, results)
    print(json.dumps(results, sort_keys=True))
    sys.stdout.flush()
    os._exit(0)  # actor threads and learner-batch threads of the loop runs are daemonic; do not wait for them


if __name__ == "__main__":
    app.run(main)
