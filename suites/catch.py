"""Train one IMPALA agent on the `catch` suite: `python -m suites.catch --logdir=DIR [--helpfull]`."""

from impala_tf import trainer

if __name__ == "__main__":
    trainer.main_for_suite("catch")
