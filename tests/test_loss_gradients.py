"""experiments.loss_gradients: which loss term moves which layer (no training here)."""

import math

import numpy as np

from experiments import loss_gradients


def test_profile_measures_coherence_within_units_and_steadiness_across_batches():
    # Unit 0: every incoming weight's gradient positive in every batch (coherent and steady).
    # Unit 1: half positive, half negative, its summed sign flipping between batches (neither).
    batches = [
        np.array([[1.0, 1.0], [1.0, -1.0], [1.0, 2.0], [1.0, -3.0]]),
        np.array([[2.0, -1.0], [2.0, 1.0], [2.0, -2.0], [2.0, 3.0]]),
    ]
    row = loss_gradients.profile("dense", "baseline_loss", batches)
    assert row.coherence == 0.5  # mean of 1 (unit 0) and 0 (unit 1)
    assert row.steady == 0.5  # unit 0 only
    assert math.isclose(row.norm, np.mean([np.linalg.norm(b) for b in batches]))


def test_a_term_that_does_not_reach_a_kernel_has_no_coherence():
    row = loss_gradients.profile("dense_1", "baseline_loss", [np.zeros((3, 2)), np.zeros((3, 2))])
    assert row.norm == 0 and math.isnan(row.coherence) and row.steady == 0


def test_binary_prints_every_kernel_and_term_and_refuses_bad_input_in_one_line(
    tmp_path, untrained_run, capsys
):
    run = untrained_run(tmp_path, "minatar", ["breakout"], use_lstm=False)
    assert loss_gradients._main(run, None, batches=2, seed=3) == 0
    out = capsys.readouterr().out
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    rows = [[cell.strip() for cell in row] for row in rows[1:]]  # without the header
    kernels = {row[0] for row in rows}
    assert len(rows) == 3 * len(kernels) and len(kernels) >= 3
    # The value loss does not reach the policy head, the policy terms not the value head: shown as "—".
    assert sum(row[3] == "—" for row in rows) >= 3

    assert loss_gradients._main(tmp_path / "nowhere", None, batches=1, seed=3) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err

    assert loss_gradients._main(run, str(run / "checkpoints" / "ckpt-99"), batches=1, seed=3) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot read checkpoint" in err
