"""What a run directory says about its run, read in one place: the suite, config.json and the run's spec.

Every binary that reads a run directory (evaluate, export, transfer, pbt, the trainer itself when it resumes)
goes through here, so none of them imports another binary. Problems with what the user asked for are a
`UserError`: one line on stderr and exit code 1, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from impala_tf import agent


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
        return agent.run_spec_from_flags(suite, f)
    except KeyError as error:
        raise UserError(f"{where} is malformed (missing {error})") from None


def load_run_spec(logdir: str | Path) -> tuple[dict, agent.RunSpec]:
    """(config.json contents, the RunSpec the run trained with)."""
    run_config = load_config(logdir)
    return run_config, run_spec_from_config(run_config, Path(logdir) / "config.json")
