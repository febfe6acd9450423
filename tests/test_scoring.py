"""Scoring maths (known values, rliable conventions) and the package's reference rows."""

import numpy as np
import pytest
import scipy.stats

from impala_tf import reference, scoring


def test_hns_is_zero_at_random_and_hundred_at_human():
    hns = scoring.human_normalised_score(np.array([227.8, 7127.7, 3677.75]), 227.8, 7127.7)
    np.testing.assert_allclose(hns, [0.0, 100.0, 50.0])


def test_hns_broadcasts_per_game_references_over_runs():
    scores = np.array([[1.0, 10.0], [3.0, 30.0]])  # [R=2, G=2]
    hns = scoring.human_normalised_score(scores, np.array([1.0, 0.0]), np.array([3.0, 20.0]))
    np.testing.assert_allclose(hns, [[0.0, 50.0], [100.0, 150.0]])


def test_normalised_score_rejects_equal_low_and_high():
    with pytest.raises(ValueError, match="high == low"):
        scoring.normalised_score(1.0, 2.0, 2.0)


def test_iqm_of_0_to_99_is_49_5():
    assert scoring.interquartile_mean(np.arange(100.0).reshape(4, 25)) == pytest.approx(49.5)


@pytest.mark.parametrize("shape", [(1, 7), (3, 5), (5, 57), (2, 2)])
def test_iqm_equals_scipy_trimmed_mean_of_flattened_runs_by_games(shape):
    scores = np.random.default_rng(1).normal(100.0, 50.0, size=shape)
    expected = scipy.stats.trim_mean(scores.flatten(), 0.25)
    assert scoring.interquartile_mean(scores) == pytest.approx(expected)


def test_median_and_mean_average_each_game_over_runs_first():
    scores = np.array([[0.0, 10.0, 100.0], [20.0, 30.0, 300.0]])  # per-game means: 10, 20, 200
    assert scoring.median(scores) == pytest.approx(20.0)
    assert scoring.mean(scores) == pytest.approx(230.0 / 3.0)
    # The median of the per-game means differs from the median of all entries (25.0).
    assert np.median(scores) != pytest.approx(20.0)


def test_capped_mean_counts_superhuman_games_as_100():
    scores = np.array([[50.0, 200.0, -20.0], [50.0, 400.0, -20.0]])
    assert scoring.capped_mean(scores) == pytest.approx((50.0 + 100.0 - 20.0) / 3.0)


def test_capped_mean_is_cap_minus_rliable_optimality_gap():
    scores = np.random.default_rng(2).uniform(-50.0, 300.0, size=(4, 9))
    optimality_gap = 100.0 - np.mean(np.minimum(scores, 100.0))
    assert scoring.capped_mean(scores) == pytest.approx(100.0 - optimality_gap)


def test_games_above_human_counts_run_averaged_games_at_or_over_100():
    scores = np.array([[100.0, 99.0, 150.0, 80.0], [100.0, 99.9, 40.0, 130.0]])  # means 100, 99.45, 95, 105
    assert scoring.games_above(scores) == 2


def test_missing_runs_as_nan_are_ignored_per_game():
    scores = np.array([[10.0, 100.0], [30.0, np.nan]])  # game 1 has one run
    np.testing.assert_allclose(scoring.per_game_means(scores), [20.0, 100.0])
    assert scoring.mean(scores) == pytest.approx(60.0)
    assert scoring.interquartile_mean(scores) == pytest.approx(
        scipy.stats.trim_mean([10.0, 30.0, 100.0], 0.25)
    )


def test_aggregates_accept_a_leading_batch_of_resamples():
    batch = np.random.default_rng(3).normal(size=(6, 3, 5))
    for name, aggregate in scoring.AGGREGATES.items():
        expected = [aggregate(matrix) for matrix in batch]
        np.testing.assert_allclose(aggregate(batch), expected, err_msg=name)


def test_bootstrap_interval_with_one_run_per_game_collapses_to_point_estimate():
    scores = np.random.default_rng(4).uniform(0.0, 500.0, size=(1, 57))
    for name, estimate in scoring.interval_estimates(scores, num_resamples=200).items():
        assert estimate.low == pytest.approx(estimate.point), name
        assert estimate.high == pytest.approx(estimate.point), name


def test_bootstrap_is_deterministic_for_a_seed_and_varies_across_seeds():
    scores = np.random.default_rng(5).normal(100.0, 40.0, size=(5, 10))
    first = scoring.interval_estimates(scores, num_resamples=300, seed=7)
    again = scoring.interval_estimates(scores, num_resamples=300, seed=7)
    other = scoring.interval_estimates(scores, num_resamples=300, seed=8)
    assert first == again
    assert first["iqm"] != other["iqm"]


def test_stratified_bootstrap_resamples_runs_within_each_game_only():
    scores = np.array([[1.0, 10.0, 100.0], [2.0, 20.0, np.nan], [3.0, 30.0, np.nan]])
    resampled = next(scoring.stratified_bootstrap(scores, 50, np.random.default_rng(0)))
    assert resampled.shape == (50, 3, 3)
    assert set(np.unique(resampled[:, :, 0])) <= {1.0, 2.0, 3.0}
    assert set(np.unique(resampled[:, :, 1])) <= {10.0, 20.0, 30.0}
    assert np.all(resampled[:, 0, 2] == 100.0) and np.all(np.isnan(resampled[:, 1:, 2]))


def test_bootstrap_interval_of_two_runs_spans_their_resampled_means():
    # One game, runs {0, 100}: resampled means are 0, 50, 100 with probabilities 1/4, 1/2, 1/4.
    estimate = scoring.interval_estimates(np.array([[0.0], [100.0]]), num_resamples=4000)["mean"]
    assert estimate == (50.0, 0.0, 100.0)
    narrow = scoring.interval_estimates(np.array([[0.0], [100.0]]), num_resamples=4000, confidence=0.4)[
        "mean"
    ]
    assert narrow == (50.0, 50.0, 50.0)


def test_interval_contains_point_estimate_and_narrows_with_more_seeds():
    rng = np.random.default_rng(6)
    few = rng.normal(100.0, 30.0, size=(3, 20))
    many = rng.normal(100.0, 30.0, size=(30, 20))
    width = {}
    for label, scores in (("few", few), ("many", many)):
        estimate = scoring.interval_estimates(scores, num_resamples=500)["median"]
        assert estimate.low <= estimate.point <= estimate.high
        width[label] = estimate.high - estimate.low
    assert width["many"] < width["few"]


def test_performance_profile_counts_scores_strictly_above_each_threshold():
    scores = np.array([[0.0, 50.0], [150.0, 250.0]])
    profile = scoring.performance_profile(scores, np.array([0.0, 100.0, 200.0, 300.0]))
    np.testing.assert_allclose(profile, [0.75, 0.5, 0.25, 0.0])


def test_performance_profile_bands_collapse_with_one_run_and_enclose_profile_with_several():
    taus = np.linspace(0.0, 300.0, 7)
    single = np.array([[0.0, 50.0, 150.0, 250.0]])
    profile, low, high = scoring.performance_profile_bands(single, taus, num_resamples=100)
    np.testing.assert_allclose(low, profile)
    np.testing.assert_allclose(high, profile)
    several = np.random.default_rng(9).uniform(0.0, 300.0, size=(5, 8))
    profile, low, high = scoring.performance_profile_bands(several, taus, num_resamples=500)
    assert np.all(low <= profile + 1e-12) and np.all(profile <= high + 1e-12)
    assert np.any(high > low)


def test_per_game_intervals_bound_each_game_mean():
    scores = np.array([[0.0, 5.0], [100.0, 5.0]])
    means, low, high = scoring.per_game_intervals(scores, num_resamples=2000)
    np.testing.assert_allclose(means, [50.0, 5.0])
    np.testing.assert_allclose(low, [0.0, 5.0])
    np.testing.assert_allclose(high, [100.0, 5.0])


def test_score_matrix_checks_reject_bad_shapes_and_empty_games():
    with pytest.raises(ValueError, match="runs, games"):
        scoring.interval_estimates(np.zeros(3))
    with pytest.raises(ValueError, match="at least one finite"):
        scoring.interval_estimates(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="finite"):
        scoring.interval_estimates(np.array([[1.0, np.inf]]))


def test_smoothed_returns_are_trailing_means_in_frame_order():
    frames = np.array([30.0, 10.0, 20.0, 40.0])
    returns = np.array([3.0, 1.0, 2.0, 10.0])
    x, y = scoring.smooth_episode_returns(frames, returns, window=2)
    np.testing.assert_allclose(x, [10.0, 20.0, 30.0, 40.0])
    np.testing.assert_allclose(y, [1.0, 1.5, 2.5, 6.5])


def test_mean_curve_averages_runs_only_where_they_were_recorded():
    run_a = (np.array([0.0, 10.0]), np.array([0.0, 10.0]))
    run_b = (np.array([0.0, 20.0]), np.array([10.0, 10.0]))
    curve = scoring.mean_curve_on_grid([run_a, run_b], np.array([0.0, 5.0, 15.0, 30.0]))
    np.testing.assert_allclose(curve, [5.0, 7.5, 10.0, np.nan])


def test_suite_curve_normalises_each_game_and_holds_its_ends_before_aggregating():
    per_game = {
        "a": (np.array([10.0, 20.0]), np.array([0.0, 10.0])),  # normalised 0 % -> 100 %
        "b": (np.array([0.0, 20.0]), np.array([2.0, 2.0])),  # normalised 50 % throughout
    }
    normalisers = {"a": (0.0, 10.0), "b": (1.0, 3.0)}
    grid = np.array([0.0, 15.0, 30.0])
    np.testing.assert_allclose(
        scoring.normalised_suite_curve(per_game, normalisers, grid), [25.0, 50.0, 75.0]
    )
    np.testing.assert_allclose(
        scoring.normalised_suite_curve(per_game, normalisers, grid, np.max), [50.0, 50.0, 100.0]
    )


# --- Reference data -------------------------------------------------------------------------------


def _reference_hns(agent: reference.ReferenceAgent) -> np.ndarray:
    normalisers = reference.atari57_human_random()
    games = reference.atari57_games()
    raw = np.array([[agent.scores[game] for game in games]])
    low = np.array([normalisers[game].low for game in games])
    high = np.array([normalisers[game].high for game in games])
    return scoring.human_normalised_score(raw, low, high)


def test_reference_tables_cover_the_57_games():
    games = reference.atari57_games()
    assert len(games) == 57 and len(set(games)) == 57
    assert set(reference.atari57_human_random()) == set(games)
    for name in reference.REFERENCE_SETS:
        for agent in reference.reference_agents(name):
            assert set(agent.scores) == set(games), agent.agent


@pytest.mark.parametrize(
    "agent, median",
    [
        ("impala_shallow_experts", 93.2),  # IMPALA paper, Table 4
        ("impala_deep_experts", 191.8),
        ("impala_deep_multitask", 59.7),
    ],
)
def test_paper_rows_reproduce_table_4_medians(agent, median):
    row = {a.agent: a for a in reference.reference_agents("impala_paper")}[agent]
    assert row.protocol == "impala"
    assert float(scoring.median(_reference_hns(row))) == pytest.approx(median, abs=0.05)


@pytest.mark.parametrize(
    "agent, median", [("monobeast_impala", 159.7), ("moolib_impala", 124.4), ("cleanba_impala", 165.8)]
)
def test_machado_reproductions_medians(agent, median):
    row = {a.agent: a for a in reference.reference_agents("machado_repro")}[agent]
    assert row.protocol == "machado"
    assert float(scoring.median(_reference_hns(row))) == pytest.approx(median, abs=0.05)


def test_video_pinball_narrow_reference_gap_dominates_the_paper_means():
    deep = {a.agent: a for a in reference.reference_agents("impala_paper")}["impala_deep_experts"]
    hns = _reference_hns(deep)
    pinball = reference.atari57_games().index("video_pinball")
    assert hns[0, pinball] > 10_000.0
    without = np.delete(hns, pinball, axis=1)
    assert float(scoring.mean(hns)) - float(scoring.mean(without)) > 500.0


def test_unknown_reference_set_is_a_one_line_error_naming_the_choices():
    with pytest.raises(ValueError, match="valid: impala_paper, machado_repro"):
        reference.reference_agents("atari100k")


def test_minatar_published_baselines_cover_the_five_games_at_the_read_off_values():
    ac = reference.minatar_published("ac_lambda_0.8")
    assert ac == {
        "breakout": 17.5,
        "asterix": 19.5,
        "freeway": 47.5,
        "seaquest": 15.5,
        "space_invaders": 185.0,
    }
    assert set(reference.minatar_published("dqn")) == set(ac)
    with pytest.raises(ValueError, match="ac_lambda_0.8, dqn"):
        reference.minatar_published("ppo")


def test_difference_interval_resamples_each_sides_seeds_and_collapses_with_one_seed_each():
    assert scoring.difference_interval(np.array([3.0]), np.array([1.0])) == (2.0, 2.0)
    low, high = scoring.difference_interval(np.array([10.0, 12.0, 14.0]), np.array([1.0, 3.0]))
    # Resampled means lie within [10, 14] and [1, 3], so the difference within [7, 13]; it covers the point 10.
    assert 7.0 <= low < 10.0 < high <= 13.0
    assert scoring.difference_interval(np.array([5.0, 5.0]), np.array([2.0, 2.0])) == (3.0, 3.0)
