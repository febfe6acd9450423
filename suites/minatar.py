"""Train one IMPALA agent on the `minatar` suite: `python -m suites.minatar --logdir=DIR [--helpfull]`."""

from impala_tf import trainer

if __name__ == "__main__":
    trainer.main_for_suite("minatar")
