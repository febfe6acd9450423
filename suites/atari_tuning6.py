"""Train one IMPALA agent on the `atari_tuning6` suite: `python -m suites.atari_tuning6 --logdir=DIR [--helpfull]`."""

from impala_tf import trainer

if __name__ == "__main__":
    trainer.main_for_suite("atari_tuning6")
