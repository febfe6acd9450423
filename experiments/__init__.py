"""Experiment drivers (absl binaries over impala_tf): `python -m experiments.<name> --help`."""
