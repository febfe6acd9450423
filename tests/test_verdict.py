"""impala_tf.verdict: the end-of-run judgement of whether each game learned."""

import numpy as np
import pandas as pd

from impala_tf import verdict


def _episodes(game, first, last, n=300):
    returns = np.r_[np.full(n // 2, first), np.full(n - n // 2, last)]
    return pd.DataFrame({"task": game, "frames": np.arange(n), "episode_return": returns})


def test_a_game_above_random_and_improving_is_learned_and_the_verdict_says_so():
    scores = pd.DataFrame({"task": "breakout", "score": [30.0, 34.0, 38.0, 32.0] * 5})
    (v,) = verdict.judge(scores, _episodes("breakout", 1.5, 30.0), {"breakout": 1.7})
    assert v.learned and v.baseline_name == "random" and 30.0 < v.eval_low < v.eval_mean < v.eval_high < 38.0
    assert verdict.describe([v])[-1].startswith("verdict: learned")


def test_a_game_whose_interval_reaches_random_is_not_learned():
    scores = pd.DataFrame({"task": "pong", "score": [-21.0, -21.0, -20.0, -21.0] * 5})
    episodes = pd.concat([_episodes("pong", -21.0, -20.0), _episodes("breakout", 1.0, 20.0)])
    both = pd.concat([scores, pd.DataFrame({"task": "breakout", "score": [20.0] * 10})])
    verdicts = verdict.judge(both, episodes, {"pong": -20.7, "breakout": 1.7})
    assert [v.learned for v in verdicts] == [True, False]  # sorted by game: breakout, pong
    assert verdict.describe(verdicts)[-1] == "verdict: NOT learned on 1 of 2 game(s): pong"


def test_without_random_scores_the_baseline_is_the_first_training_games():
    scores = pd.DataFrame({"task": "asterix", "score": [10.0, 12.0] * 10})
    (v,) = verdict.judge(scores, _episodes("asterix", 0.5, 11.0), None)
    assert v.baseline == 0.5 and v.baseline_name == "first 100 training games" and v.learned
