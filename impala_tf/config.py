"""Every training flag, defined once. Suite binaries change defaults only (`set_suite_defaults`).

Defaults are the IMPALA paper's Atari settings (Table G.1) — unroll 20, batch 32, discount 0.99, entropy cost 0.01,
baseline cost 0.5, RMSProp decay 0.99 and momentum 0, global gradient-norm clip 40, rewards clipped to [-1, 1],
the learning rate annealed linearly to 0 — except the optimiser's step size: RMSProp's epsilon is 1e-5 (paper:
0.01) with the mean square starting at 0 (TF1: 1), and the learning rate 1.2e-3 (paper: 6e-4). With the paper's
values the policy barely moves within CPU budgets (leaderboards/inputs/atari_tuning6/diagnosis/README.md);
`--preset=paper` restores them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from absl import flags

from impala_tf import agent, losses, networks
from impala_tf import learner as learner_lib
from impala_tf.envs.base import ACTION_SETS
from impala_tf.losses import LossConfig

FLAGS = flags.FLAGS

# Run and suite.
flags.DEFINE_string(
    "suite", None, "Suite name (atari57, atari5, atari_tuning6, minatar, catch) or a suite JSON file."
)
flags.DEFINE_list("games", [], "Restrict the suite to these games (comma separated). Empty: every game.")
flags.DEFINE_string("protocol", None, "Atari protocol: impala (paper) or machado. Default: the suite's.")
flags.DEFINE_enum(
    "action_set", None, list(ACTION_SETS), "Action set. Default: the suite's (multi-task: full)."
)
flags.DEFINE_integer(
    "total_frames", None, "Frame budget (emulator frames, frameskip included). Default: suite's."
)
flags.DEFINE_integer("seed", 1, "Seed for environments, network initialisation and action sampling.")
flags.DEFINE_string("logdir", None, "Run directory. Re-running with the same logdir resumes the run.")
flags.DEFINE_string(
    "init_from", None, "Initialise the network from this run directory (fine-tuning / transfer)."
)

# Actors.
flags.DEFINE_integer("num_actors", 2, "Number of actors.")
flags.DEFINE_integer("envs_per_actor", 16, "Environments per actor (batched inference per actor).")
flags.DEFINE_integer(
    "env_threads", 0, "C++ threads per Atari vector env (0: one per environment, capped by cores)."
)
flags.DEFINE_enum(
    "runtime", "local", ["local", "ray"], "Where actors run: threads of this process, or Ray actors."
)
flags.DEFINE_integer(
    "intra_op_threads",
    0,
    "TensorFlow threads per op in the trainer's process. 0: auto: with --runtime=local, cores // (actors + 1), at "
    "least 1, so that actor and learner ops run side by side instead of each splitting over every core (measured "
    "faster on 2 cores, bench/NOTES.md); with --runtime=ray TensorFlow's default (Ray actors set their own).",
)
flags.DEFINE_integer("max_actor_restarts", 10, "Stop the run after this many actor failures.")
flags.DEFINE_integer(
    "param_refresh_unrolls",
    1,
    "Actors fetch the learner's parameters after every K-th batch of unrolls (1: after each). K > 1 makes the "
    "behaviour policy deliberately stale, for off-policy-correction ablations (--correction).",
)

# Learner.
flags.DEFINE_integer("unroll_length", 20, "Unroll length T (agent steps).")
flags.DEFINE_integer("batch_size", 32, "Unrolls per learner batch B.")
flags.DEFINE_integer("queue_capacity", 0, "Unrolls buffered between actors and learner (0: 2 x batch_size).")
flags.DEFINE_integer(
    "replay_capacity",
    0,
    "Experience replay: the learner keeps the last N unrolls and fills --replay_fraction of each batch from them "
    "(uniformly; paper Section 5.2.2). 0: no replay. At least --batch_size.",
)
flags.DEFINE_float(
    "replay_fraction",
    0.5,
    "Share of each learner batch replayed when --replay_capacity > 0 (the paper: 0.5).",
)
flags.DEFINE_bool(
    "synchronous",
    False,
    "Synchronous (batched A2C) acting: every unroll is acted by the learner's current parameters and the learner "
    "waits for them (policy lag 0). Needs --batch_size = --num_actors x --envs_per_actor and --runtime=local.",
)
flags.DEFINE_enum(
    "xla",
    "auto",
    ["auto", "on", "off", "inference"],
    "jit-compile the learner step and the actors' inference with XLA. auto: on with a GPU, off on CPU, where "
    "XLA measured 2-3x slower with the Atari networks; inference: the actors' inference only (the MinAtar suite's "
    "default, whose learner step ran faster without it; bench/NOTES.md).",
)
flags.DEFINE_integer(
    "learner_devices", 1, "Learner replicas (tf.distribute.MirroredStrategy when > 1; 0: every visible GPU)."
)

# Network.
flags.DEFINE_enum(
    "network",
    "shallow",
    list(networks.TORSOS),
    "Torso: the paper's shallow CNN or deep ResNet, or the MinAtar paper's conv 3x3 x16 -> FC 128.",
)
flags.DEFINE_enum(
    "initializer",
    "glorot",
    list(networks.INITIALIZERS),
    "Weight initialisation: Keras' Glorot-uniform, or orthogonal (gain sqrt(2); policy head 0.01, value head 1) as "
    "OpenAI baselines and CleanRL.",
)
flags.DEFINE_bool(
    "use_lstm", False, "Add the LSTM-256 core (ResNet-LSTM); the paper's Atari agents had none."
)

# Loss.
flags.DEFINE_enum("correction", "vtrace", list(losses.CORRECTIONS), "Off-policy correction.")
flags.DEFINE_float("discount", 0.99, "Discount gamma.")
flags.DEFINE_float("baseline_cost", 0.5, "Baseline loss weight.")
flags.DEFINE_float("entropy_cost", 0.01, "Entropy bonus weight.")
flags.DEFINE_enum("reward_clipping", "abs_one", list(losses.REWARD_CLIPPING_MODES), "Reward clipping.")
flags.DEFINE_float("clip_rho_threshold", 1.0, "V-trace rho-bar (value targets).")
flags.DEFINE_float("clip_pg_rho_threshold", 1.0, "V-trace pg-rho-bar (policy gradient).")
flags.DEFINE_float(
    "vtrace_lambda",
    1.0,
    "V-trace lambda: traces c_i = lambda * min(1, pi/mu) (1: the paper's; 0: one-step TD).",
)
flags.DEFINE_bool("popart", False, "PopArt multi-task value normalisation (Hessel et al. 2019).")
flags.DEFINE_float("popart_step_size", 3e-4, "PopArt statistics step size beta.")
flags.DEFINE_list(
    "reward_scale",
    [],
    "Multiply the rewards the learner sees, per game: GAME=FACTOR,... (scores stay raw). For reward-scale "
    "experiments such as PopArt's.",
)

# Optimiser.
flags.DEFINE_float(
    "learning_rate", 1.2e-3, "Initial learning rate, annealed linearly to 0 over total_frames (paper: 6e-4)."
)
flags.DEFINE_float("rmsprop_decay", 0.99, "RMSProp decay.")
flags.DEFINE_float("rmsprop_momentum", 0.0, "RMSProp momentum.")
flags.DEFINE_float("rmsprop_epsilon", 1e-5, "RMSProp epsilon, inside the square root as TF1 (paper: 0.01).")
flags.DEFINE_float(
    "rmsprop_initial_mean_square",
    0.0,
    "RMSProp's mean square at step 0: 0 as Keras, PyTorch and optax; 1 as TF1's RMSPropOptimizer (the paper's).",
)
flags.DEFINE_bool(
    "rmsprop_debias",
    False,
    "Divide RMSProp's mean square by (1 - decay^t) (as Adam; needs --rmsprop_initial_mean_square=0): without it "
    "the first steps from a zero mean square are up to 10x the learning rate.",
)
flags.DEFINE_float("max_grad_norm", 40.0, "Global gradient-norm clip.")

# The IMPALA paper's Atari settings (Table G.1), as the paper's TF1 code ran them. `--preset=paper` gives every
# flag below this value unless the command line sets it, whatever the suite's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "unroll_length": 20,
        "batch_size": 32,
        "discount": 0.99,
        "baseline_cost": 0.5,
        "entropy_cost": 0.01,
        "reward_clipping": "abs_one",
        "learning_rate": 6e-4,
        "rmsprop_decay": 0.99,
        "rmsprop_momentum": 0.0,
        "rmsprop_epsilon": 0.01,
        "rmsprop_initial_mean_square": 1.0,
        "rmsprop_debias": False,
        "max_grad_norm": 40.0,
        "vtrace_lambda": 1.0,
        "replay_capacity": 0,  # the paper's agents learn from fresh unrolls only (replay is section 5.2.1's ablation)
    },
}
flags.DEFINE_enum(
    "preset",
    None,
    list(PRESETS),
    "A named set of hyper-parameters applied over the suite's defaults (the command line still wins). paper: "
    "Table G.1 of the IMPALA paper with TF1's RMSProp (epsilon 0.01 inside the square root, mean square from 1).",
)

# Logging and checkpoints.
flags.DEFINE_integer("checkpoint_every_secs", 600, "Seconds between checkpoints (and one at exit).")
flags.DEFINE_integer(
    "keep_checkpoints",
    3,
    "Checkpoints kept, newest first (more for a run's history, e.g. `experiments.dead_units --all_checkpoints`).",
)
flags.DEFINE_integer("progress_every_secs", 10, "Seconds between progress lines and summaries.")

# Ray.
flags.DEFINE_string("ray_address", None, "Join this Ray cluster; without it a local instance is started.")
flags.DEFINE_float("actor_cpus", 1.0, "CPUs per Ray actor.")
flags.DEFINE_float("learner_gpus", 0.0, "GPUs reserved for the learner (driver) under Ray.")

# Evaluation.
flags.DEFINE_integer(
    "eval_episodes",
    10,
    "Whole games per task played by `impala_tf.evaluate` after training (the paper: 200).",
)

POSITIVE_INTS = (
    "num_actors",
    "envs_per_actor",
    "unroll_length",
    "batch_size",
    "eval_episodes",
    "param_refresh_unrolls",
    "keep_checkpoints",
)


def validate(values: Any = None) -> None:
    """Checks flag combinations that absl cannot; raises flags.ValidationError (a one-line usage error)."""
    f = values or FLAGS
    for name in POSITIVE_INTS:
        if getattr(f, name) < 1:
            raise flags.ValidationError(f"--{name} must be >= 1, got {getattr(f, name)}")
    if f.total_frames is not None and f.total_frames < 1:
        raise flags.ValidationError(f"--total_frames must be >= 1, got {f.total_frames}")
    if f.checkpoint_every_secs < 1 or f.progress_every_secs < 1:
        raise flags.ValidationError("--checkpoint_every_secs and --progress_every_secs must be >= 1")
    if f.learner_devices < 0:
        raise flags.ValidationError("--learner_devices must be >= 0 (0: every visible GPU)")
    if f.learner_devices and f.batch_size % f.learner_devices:
        raise flags.ValidationError(
            f"--batch_size={f.batch_size} must be divisible by --learner_devices={f.learner_devices}"
        )
    if f.intra_op_threads < 0:
        raise flags.ValidationError(f"--intra_op_threads must be >= 0 (0: auto), got {f.intra_op_threads}")
    if f.max_actor_restarts < 0:
        raise flags.ValidationError("--max_actor_restarts must be >= 0")
    for name in ("discount", "vtrace_lambda"):
        if not 0.0 <= getattr(f, name) <= 1.0:
            raise flags.ValidationError(f"--{name} must be in [0, 1], got {getattr(f, name)}")
    for name in ("seed", "env_threads", "queue_capacity"):
        if getattr(f, name) < 0:
            raise flags.ValidationError(f"--{name} must be >= 0, got {getattr(f, name)}")
    for name in ("baseline_cost", "entropy_cost", "rmsprop_initial_mean_square", "learner_gpus"):
        if not 0 <= getattr(f, name) < float("inf"):  # also rejects NaN
            raise flags.ValidationError(f"--{name} must be a number >= 0, got {getattr(f, name)}")
    if not 0 < f.popart_step_size <= 1:
        raise flags.ValidationError(f"--popart_step_size must be in (0, 1], got {f.popart_step_size}")
    for name in (
        "learning_rate",
        "rmsprop_epsilon",
        "max_grad_norm",
        "clip_rho_threshold",
        "clip_pg_rho_threshold",
        "actor_cpus",
    ):
        if not 0 < getattr(f, name) < float("inf"):
            raise flags.ValidationError(f"--{name} must be a positive number, got {getattr(f, name)}")
    if not 0 <= f.rmsprop_decay < 1 or not 0 <= f.rmsprop_momentum < 1:
        raise flags.ValidationError("--rmsprop_decay and --rmsprop_momentum must be in [0, 1)")
    if f.rmsprop_debias and f.rmsprop_initial_mean_square != 0:
        raise flags.ValidationError(
            "--rmsprop_debias corrects a mean square that starts at 0: it needs --rmsprop_initial_mean_square=0, "
            f"got {f.rmsprop_initial_mean_square}"
        )
    if f.replay_capacity < 0:
        raise flags.ValidationError(f"--replay_capacity must be >= 0 (0: no replay), got {f.replay_capacity}")
    if f.replay_capacity and f.replay_capacity < f.batch_size:
        raise flags.ValidationError(
            f"--replay_capacity={f.replay_capacity} must be at least --batch_size={f.batch_size} "
            "(replay starts once the buffer holds a batch)"
        )
    if not 0.0 < f.replay_fraction < 1.0:
        raise flags.ValidationError(f"--replay_fraction must be in (0, 1), got {f.replay_fraction}")
    if f.synchronous:
        if f.runtime != "local":
            raise flags.ValidationError("--synchronous runs with --runtime=local only")
        if f.batch_size != f.num_actors * f.envs_per_actor:
            raise flags.ValidationError(
                f"--synchronous needs --batch_size = --num_actors x --envs_per_actor (one unroll per environment "
                f"per update): got {f.batch_size} and {f.num_actors} x {f.envs_per_actor}"
            )
        if f.param_refresh_unrolls != 1 or f.replay_capacity:
            raise flags.ValidationError(
                "--synchronous is on-policy: it takes neither --param_refresh_unrolls > 1 nor replay"
            )
    parse_reward_scales(f.reward_scale)
    if not f.logdir:
        raise flags.ValidationError("--logdir is required")


def apply_preset(values: Any = None) -> None:
    """Gives the flags of `--preset` its values, except those set on the command line."""
    f = values or FLAGS
    for name, value in PRESETS.get(f.preset, {}).items():
        if not f[name].present:
            f[name].value = value


def set_suite_defaults(defaults: dict[str, Any]) -> None:
    """Lets a suite binary change flag defaults (the user's command line still wins)."""
    for name, value in defaults.items():
        FLAGS.set_default(name, value)


def flag_values_dict() -> dict[str, Any]:
    """The resolved training flags (only the ones this module defines), for config.json."""
    return {flag.name: flag.value for flag in FLAGS.get_flags_for_module(__name__)}


def use_xla(value: str | None = None, learner: bool = False) -> bool:
    """Resolves --xla for the actors' inference, or with `learner` for the learner's step: `auto` means XLA
    exactly when TensorFlow sees a GPU, `inference` XLA for the inference only."""
    value = value or FLAGS.xla
    if value == "inference":
        return not learner
    if value == "auto":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    return value == "on"


def intra_op_threads(value: int, runtime: str, num_actors: int, cpu_count: int) -> int:
    """Resolves --intra_op_threads; 0 means TensorFlow's default (every core)."""
    if value or runtime != "local":
        return value
    return max(1, cpu_count // (num_actors + 1))


def parse_reward_scales(items: list[str]) -> dict[str, float]:
    """`["pong=10", "breakout=0.1"]` -> {"pong": 10.0, "breakout": 0.1}; a usage error when malformed."""
    scales = {}
    for item in items:
        game, sep, value = item.partition("=")
        try:
            scales[game] = float(value)
        except ValueError:
            sep = ""
        if not sep or not game:
            raise flags.ValidationError(f"--reward_scale expects GAME=FACTOR items, got {item!r}")
    return scales


# --- From flags to the configs the library takes ----------------------------------------------------------------


def run_spec_from_flags(suite: Any, f: Mapping[str, Any] | None = None) -> agent.RunSpec:
    """The RunSpec of the parsed training flags, or of a run's recorded ones (config.json's "flags")."""
    f = flag_values_dict() if f is None else f
    return agent.RunSpec(
        suite=suite,
        protocol=f.get("protocol"),
        action_set=f.get("action_set"),
        seed=f.get("seed", 1),
        network=f["network"],
        use_lstm=f["use_lstm"],
        popart=f.get("popart", False),
        reward_clipping=f["reward_clipping"],
        unroll_length=f["unroll_length"],
        num_actors=f.get("num_actors", 1),
        envs_per_actor=f.get("envs_per_actor", 1),
        env_threads=f.get("env_threads", 0),
        inference_xla=use_xla(f.get("xla", "auto")),
        reward_scale=tuple(parse_reward_scales(f.get("reward_scale") or []).items()),
        param_refresh_unrolls=f.get("param_refresh_unrolls", 1),
        synchronous=f.get("synchronous", False),
        initializer=f.get("initializer", "glorot"),  # runs from before the flag existed: Keras' default
    )


def loss_config_from_flags(f: dict[str, Any] | None = None) -> LossConfig:
    """The loss of the parsed flags, or of a run's recorded ones (config.json's "flags")."""
    f = FLAGS.flag_values_dict() if f is None else f
    return LossConfig(
        discount=f["discount"],
        baseline_cost=f["baseline_cost"],
        entropy_cost=f["entropy_cost"],
        reward_clipping=f["reward_clipping"],
        correction=f["correction"],
        clip_rho_threshold=f["clip_rho_threshold"],
        clip_pg_rho_threshold=f["clip_pg_rho_threshold"],
        vtrace_lambda=f.get("vtrace_lambda", 1.0),  # runs from before the flag existed: the paper's
    )


def optimizer_config_from_flags() -> learner_lib.OptimizerConfig:
    return learner_lib.OptimizerConfig(
        learning_rate=FLAGS.learning_rate,
        decay=FLAGS.rmsprop_decay,
        momentum=FLAGS.rmsprop_momentum,
        epsilon=FLAGS.rmsprop_epsilon,
        initial_mean_square=FLAGS.rmsprop_initial_mean_square,
        debias=FLAGS.rmsprop_debias,
        max_grad_norm=FLAGS.max_grad_norm,
    )
