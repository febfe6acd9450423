"""PopArt statistics, output preservation, and the scale invariance it buys the multi-task loss."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

from impala_tf import popart
from impala_tf.losses import LossConfig, impala_loss


def moments(mu, sigma):
    mu = np.asarray(mu, np.float32)
    return mu, np.asarray(sigma, np.float32) ** 2 + mu**2


def test_initial_statistics_give_unit_scale():
    mu, nu = popart.initial_statistics(3)
    np.testing.assert_array_equal(mu, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(popart.sigma_from_moments(mu, nu), [1.0, 1.0, 1.0])


def test_sigma_is_the_standard_deviation_bounded_to_its_limits():
    mu = np.array([3.0, 0.0, 2.0, 0.0], np.float32)
    nu = np.array([9.0 + 4.0, -1.0, 4.0, 1e14], np.float32)  # σ² = 4; negative; zero; huge
    sigma = popart.sigma_from_moments(mu, nu, sigma_min=1e-4, sigma_max=1e6).numpy()
    np.testing.assert_allclose(sigma, [2.0, 1e-4, 1e-4, 1e6], rtol=1e-5)
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        popart.sigma_from_moments(mu, nu, sigma_min=2.0, sigma_max=1.0)


def test_update_moves_each_present_task_by_step_size_towards_its_batch_moments():
    mu, nu = moments([1.0, -2.0, 7.0], [1.0, 2.0, 3.0])
    targets = np.array([[1.0, 10.0, 3.0], [5.0, 20.0, -1.0]], np.float32)  # [T=2, B=3]
    task_ids = np.array([0, 1, 0], np.int32)  # task 2 absent
    mask = np.ones((2, 3), np.float32)
    new_mu, new_nu = popart.update_statistics(mu, nu, targets, task_ids, mask, step_size=0.1)
    task0 = np.array([1.0, 5.0, 3.0, -1.0])
    task1 = np.array([10.0, 20.0])
    expected_mu = [0.9 * mu[0] + 0.1 * task0.mean(), 0.9 * mu[1] + 0.1 * task1.mean(), mu[2]]
    expected_nu = [0.9 * nu[0] + 0.1 * np.mean(task0**2), 0.9 * nu[1] + 0.1 * np.mean(task1**2), nu[2]]
    np.testing.assert_allclose(new_mu, expected_mu, rtol=1e-6)
    np.testing.assert_allclose(new_nu, expected_nu, rtol=1e-6)


def test_default_step_size_is_the_papers_beta():
    mu, nu = popart.initial_statistics(1)
    one = np.ones((1, 1), np.float32)
    new_mu, _ = popart.update_statistics(mu, nu, targets=one, task_ids=[0], mask=one)
    np.testing.assert_allclose(new_mu, [3e-4], rtol=1e-6)


def test_masked_steps_and_fully_masked_tasks_leave_statistics_alone():
    mu, nu = moments([1.0, 2.0], [1.0, 1.0])
    targets = np.array([[4.0, 1e6], [1e6, 1e6]], np.float32)
    mask = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)  # only task 0's first step is real
    new_mu, new_nu = popart.update_statistics(mu, nu, targets, [0, 1], mask, step_size=0.5)
    np.testing.assert_allclose(new_mu, [0.5 * 1.0 + 0.5 * 4.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(new_nu, [0.5 * 2.0 + 0.5 * 16.0, 5.0], rtol=1e-6)


def test_statistics_converge_to_mean_and_std_of_a_stationary_stream():
    rng = np.random.default_rng(0)
    means, stds = np.array([5.0, -100.0]), np.array([2.0, 30.0])
    task_ids = np.array([0, 1, 0, 1], np.int32)
    update = tf.function(
        lambda mu, nu, targets: popart.update_statistics(
            mu, nu, targets, task_ids, tf.ones([20, 4]), step_size=0.01, num_tasks=3
        )
    )
    mu, nu = popart.initial_statistics(3)
    for _ in range(1500):
        targets = rng.normal(means[task_ids], stds[task_ids], size=(20, 4)).astype(np.float32)
        mu, nu = update(mu, nu, targets)
    sigma = popart.sigma_from_moments(mu, nu).numpy()
    np.testing.assert_allclose(mu[:2], means, rtol=0.03)
    np.testing.assert_allclose(sigma[:2], stds, rtol=0.05)
    np.testing.assert_array_equal([mu[2], sigma[2]], [0.0, 1.0])  # task 2 never seen


def test_statistics_scale_with_the_targets():
    rng = np.random.default_rng(1)
    mu, nu = moments([0.5, 1.0], [2.0, 3.0])
    targets = rng.normal(size=(5, 2)).astype(np.float32)
    args = dict(task_ids=[0, 1], mask=np.ones((5, 2), np.float32), step_size=0.2)
    base_mu, base_nu = popart.update_statistics(mu, nu, targets, **args)
    scaled_mu, scaled_nu = popart.update_statistics(1000 * mu, 1e6 * nu, 1000 * targets, **args)
    np.testing.assert_allclose(scaled_mu, 1000 * base_mu.numpy(), rtol=1e-5)
    np.testing.assert_allclose(
        popart.sigma_from_moments(scaled_mu, scaled_nu),
        1000 * popart.sigma_from_moments(base_mu, base_nu).numpy(),
        rtol=1e-3,
    )


def test_preserve_outputs_keeps_unnormalised_values_of_every_task_head():
    rng = np.random.default_rng(2)
    num_features, num_tasks = 8, 3
    features = rng.normal(size=(16, num_features)).astype(np.float32)
    kernel = rng.normal(size=(num_features, num_tasks)).astype(np.float32)
    bias = rng.normal(size=(num_tasks,)).astype(np.float32)
    mu_old, nu_old = moments([1.0, -5.0, 100.0], [2.0, 0.5, 30.0])
    sigma_old = popart.sigma_from_moments(mu_old, nu_old)

    targets = rng.normal(50.0, 80.0, size=(10, 4)).astype(np.float32)
    mu_new, nu_new = popart.update_statistics(
        mu_old, nu_old, targets, [0, 1, 2, 1], np.ones((10, 4), np.float32), step_size=0.5
    )
    sigma_new = popart.sigma_from_moments(mu_new, nu_new)
    assert np.all(np.abs(mu_new - mu_old) > 1.0) and np.all(np.abs(sigma_new - sigma_old) > 1.0)

    new_kernel, new_bias = popart.preserve_outputs(kernel, bias, mu_old, sigma_old, mu_new, sigma_new)
    before = sigma_old * (features @ kernel + bias) + mu_old
    after = sigma_new * (features @ new_kernel + new_bias) + mu_new
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-3)
    # The normalised outputs did change: the head now predicts on the new scale.
    assert not np.allclose(features @ new_kernel + new_bias, features @ kernel + bias, atol=0.1)


def test_preserve_outputs_rejects_mismatched_bias():
    with pytest.raises(ValueError, match="bias has shape"):
        popart.preserve_outputs(np.ones((4, 3)), np.ones(2), *([np.ones(3, np.float32)] * 4))


def _task_gradient_norms(batch, task_ids, config, popart_mu=None, popart_sigma=None):
    target_logits = tf.constant(batch["target_logits"])
    baseline = tf.constant(batch["baseline"])
    with tf.GradientTape() as tape:
        tape.watch([target_logits, baseline])
        total, _ = impala_loss(
            **dict(batch, target_logits=target_logits, baseline=baseline),
            config=config,
            popart_mu=popart_mu,
            popart_sigma=popart_sigma,
        )
    grad_logits, grad_baseline = (g.numpy() for g in tape.gradient(total, [target_logits, baseline]))
    norms = []
    for task in range(2):
        columns = task_ids == task
        norms.append(np.sqrt(np.sum(grad_logits[:, columns] ** 2) + np.sum(grad_baseline[:, columns] ** 2)))
    return np.array(norms), grad_logits, grad_baseline


def test_scaling_one_tasks_rewards_keeps_gradients_in_proportion_only_with_popart():
    rng = np.random.default_rng(3)
    num_steps, num_actions = 5, 4
    task_ids = np.array([0, 1, 0, 1], np.int32)
    shape = (num_steps, task_ids.size)
    batch = dict(
        target_logits=rng.normal(size=(*shape, num_actions)).astype(np.float32),
        baseline=rng.normal(size=shape).astype(np.float32),
        bootstrap_value=rng.normal(size=(task_ids.size,)).astype(np.float32),
        behaviour_logits=rng.normal(size=(*shape, num_actions)).astype(np.float32),
        actions=rng.integers(num_actions, size=shape).astype(np.int32),
        rewards=rng.normal(size=shape).astype(np.float32),
        env_discounts=np.ones(shape, np.float32),
        mask=np.ones(shape, np.float32),
    )
    scaled = dict(batch, rewards=np.where(task_ids == 1, 1000.0, 1.0).astype(np.float32) * batch["rewards"])
    config = LossConfig(reward_clipping="none")

    # Without PopArt, task 1's gradient grows with its rewards and drowns task 0's.
    plain, _, _ = _task_gradient_norms(batch, task_ids, config)
    plain_scaled, _, _ = _task_gradient_norms(scaled, task_ids, config)
    assert (plain_scaled[1] / plain_scaled[0]) / (plain[1] / plain[0]) > 100.0

    # With PopArt, task 1's statistics track its scale (μ, σ × 1000) and the normalised gradients do not move.
    mu, sigma = np.array([0.3, -0.8], np.float32), np.array([1.5, 2.0], np.float32)
    scaled_mu, scaled_sigma = mu * [1.0, 1000.0], sigma * [1.0, 1000.0]
    normed, grad_logits, grad_baseline = _task_gradient_norms(
        batch, task_ids, config, popart_mu=mu[task_ids], popart_sigma=sigma[task_ids]
    )
    normed_scaled, grad_logits_scaled, grad_baseline_scaled = _task_gradient_norms(
        scaled, task_ids, config, popart_mu=scaled_mu[task_ids], popart_sigma=scaled_sigma[task_ids]
    )
    np.testing.assert_allclose(normed_scaled[1] / normed_scaled[0], normed[1] / normed[0], rtol=1e-4)
    np.testing.assert_allclose(grad_logits_scaled, grad_logits, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(grad_baseline_scaled, grad_baseline, rtol=1e-3, atol=1e-5)
