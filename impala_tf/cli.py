"""The one harness of the report binaries that run in-process with their own flag values (tests call `run(argv)`;
`python -m` calls it too): parse, answer --help, map user errors to one line and exit code 1."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from absl import flags


def run_with_own_flags(
    argv: Sequence[str],
    define_flags: Callable[[flags.FlagValues], None],
    main: Callable[[Sequence[str], flags.FlagValues], int],
    user_errors: tuple[type[Exception], ...],
    doc: str | None = None,
) -> int:
    """Parses `argv` (argv[0]: program name) into fresh FlagValues and runs `main(rest, fv)`; returns the exit code:
    2 for a flag error, 1 (one line on stderr) for one of `user_errors`. With `doc`, -h/--help prints it and the
    flags' help."""
    fv = flags.FlagValues()
    define_flags(fv)
    if doc is not None and any(arg in ("-h", "--help", "--helpfull") for arg in argv[1:]):
        print(doc)
        print(fv.get_help())
        return 0
    try:
        rest = fv(list(argv))
    except flags.Error as error:
        print(f"error: {error}".splitlines()[0], file=sys.stderr)
        return 2
    try:
        return main(rest, fv)
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
