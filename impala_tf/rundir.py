"""What a run directory says about its run, read in one place: the suite, config.json and the run's spec, the
versions it records, and whether a new run can resume it.

Every binary that reads a run directory (evaluate, export, transfer, pbt, the trainer itself when it resumes)
goes through here, so none of them imports another binary. Problems with what the user asked for are a
`UserError`: one line on stderr and exit code 1, nothing written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from impala_tf import agent, config


class UserError(Exception):
    """A problem with what the user asked for: reported as one line, exit code 1, nothing written."""


def resolve_suite(name: str, games: list[str]) -> Any:
    """The suite `name` (a registered name or a suite JSON file), restricted to `games` when given."""
    from impala_tf.suites import get_suite

    try:
        suite = get_suite(name)
        if games:
            suite = suite.restrict(games)
    except ValueError as error:
        raise UserError(str(error)) from None
    return suite


def load_config(logdir: str | Path) -> dict:
    """The run's config.json (the trainer writes it at every start)."""
    path = Path(logdir) / "config.json"
    if not path.exists():
        raise UserError(f"{logdir} is not a run directory (no config.json)")
    try:
        run_config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is malformed ({error})") from None
    if not isinstance(run_config, dict):
        raise UserError(f"{path} is malformed (not a JSON object)")
    return run_config


def run_spec_from_config(run_config: dict, where: str | Path) -> agent.RunSpec:
    """The RunSpec a run trained with, from its config.json contents (`where` names the file in errors)."""
    try:
        f = run_config["flags"]
        suite = resolve_suite(f["suite"], list(run_config["games"]))
        return config.run_spec_from_flags(suite, f)
    except KeyError as error:
        raise UserError(f"{where} is malformed (missing {error})") from None


def evaluation_spec(run_config: dict, where: str | Path) -> agent.RunSpec:
    """The spec evaluation plays with: the run's, under its protocol, one environment per game played."""
    spec = run_spec_from_config(run_config, where)
    return dataclasses.replace(spec, protocol=run_config.get("protocol"), num_actors=1, envs_per_actor=1)


def load_run_spec(logdir: str | Path) -> tuple[dict, agent.RunSpec]:
    """(config.json contents, the RunSpec the run trained with)."""
    run_config = load_config(logdir)
    return run_config, run_spec_from_config(run_config, Path(logdir) / "config.json")


# Flags that fix the learner's variables: a resumed run must agree on them. (--rmsprop_momentum adds a
# momentum slot per weight when > 0, so only its being > 0 must agree.)
SHAPE_FLAGS = ("network", "use_lstm", "popart")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict[str, str]:
    import ale_py
    import tensorflow as tf

    import impala_tf

    return {
        # (a stale editable install can leave the package a namespace without __version__)
        "impala_tf": getattr(impala_tf, "__version__", None) or importlib.metadata.version("impala-tf"),
        "tensorflow": tf.__version__,
        "ale_py": ale_py.__version__,
        "python": sys.version.split()[0],
    }


def check_existing_run(
    logdir: Path,
    suite_name: str,
    games: tuple[str, ...],
    flag_values: dict,
    observation_shape: tuple[int, ...] | None = None,
    num_actions: int | None = None,
) -> None:
    """Raises UserError, saying what differs, when `logdir` holds a run this one cannot resume: another suite or
    games, or a learner with other variables (SHAPE_FLAGS, momentum on/off, observations, actions)."""
    path = logdir / "config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
        old_flags = dict(old.get("flags", {}))
    except (OSError, ValueError, TypeError, AttributeError) as error:  # not JSON, or not an object
        raise UserError(f"{path} is unreadable ({error}); use a new --logdir") from None
    if old.get("suite") != suite_name or tuple(old.get("games", ())) != games:
        raise UserError(
            f"--logdir={logdir} holds a run of suite {old.get('suite')!r} ({len(old.get('games', []))} games); "
            f"this run is {suite_name!r} ({len(games)} games): use another --logdir"
        )
    differ = [
        f"--{k}: checkpoint {old_flags[k]!r}, now {flag_values[k]!r}"
        for k in SHAPE_FLAGS
        if k in old_flags and old_flags[k] != flag_values[k]
    ]
    if "rmsprop_momentum" in old_flags and (old_flags["rmsprop_momentum"] > 0) != (
        flag_values["rmsprop_momentum"] > 0
    ):
        differ.append(
            f"--rmsprop_momentum: checkpoint {old_flags['rmsprop_momentum']!r}, now "
            f"{flag_values['rmsprop_momentum']!r} (a momentum slot exists only when > 0)"
        )
    if observation_shape is not None and "observation_shape" in old:
        if tuple(old["observation_shape"]) != tuple(observation_shape):
            differ.append(
                f"observations: checkpoint {old['observation_shape']}, now {list(observation_shape)}"
            )
    if num_actions is not None and old.get("num_actions", num_actions) != num_actions:
        differ.append(f"actions: checkpoint {old['num_actions']}, now {num_actions}")
    if differ:
        raise UserError(
            f"--logdir={logdir} holds an incompatible run ({'; '.join(differ)}): "
            "use the run's flags or another --logdir"
        )


@contextlib.contextmanager
def claimed_run_dir(
    logdir: Path, user_errors: tuple[type[BaseException], ...] = (UserError,)
) -> Iterator[None]:
    """Holds `logdir` for one training process (an flock on `logdir/.lock`, released by the kernel even after
    kill -9): two trainers appending to one episodes.csv and saving over each other's checkpoints would corrupt
    the run. Raises UserError when another process holds it. When the block stops with one of `user_errors`
    (bad input: nothing was written), the directory is left as it was found: no .lock, no new empty directory."""
    existed = logdir.exists()
    lock_path = logdir / ".lock"
    lock_existed = lock_path.exists()
    logdir.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise UserError(
                f"--logdir={logdir} is in use by another training process (pid {holder}): wait for it to "
                "finish, or use another --logdir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield
    except user_errors:
        if not lock_existed:
            lock_path.unlink(missing_ok=True)
        if not existed:
            with contextlib.suppress(OSError):
                logdir.rmdir()  # only if empty
        raise
    finally:
        handle.close()
