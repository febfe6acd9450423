"""Train one IMPALA agent on the `atari57` suite: `python -m suites.atari57 --logdir=DIR [--helpfull]`."""

from impala_tf import trainer

if __name__ == "__main__":
    trainer.main_for_suite("atari57")
