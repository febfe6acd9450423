"""Train one IMPALA agent on the `atari5` suite: `python -m suites.atari5 --logdir=DIR [--helpfull]`."""

from impala_tf import trainer

if __name__ == "__main__":
    trainer.main_for_suite("atari5")
