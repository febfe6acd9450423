"""Train on a suite of your own: `python -m suites.custom --suite=my_suite.json --logdir=DIR`.

The JSON names the backend and the games, e.g. {"name": "my3", "backend": "atari", "games": ["pong", "breakout",
"qbert"]} (see README, "Custom suites").
"""

from impala_tf import trainer

if __name__ == "__main__":
    trainer.main_for_suite(None)
