"""Benchmark suites: which games one agent trains on (data), plus one thin absl binary per built-in suite."""

from impala_tf.suites import (
    ACTION_SETS,
    BACKENDS,
    PROTOCOLS,
    SUITE_NAMES,
    Suite,
    get_suite,
    load_suite_file,
)

__all__ = [
    "ACTION_SETS",
    "BACKENDS",
    "PROTOCOLS",
    "SUITE_NAMES",
    "Suite",
    "get_suite",
    "load_suite_file",
]
