"""experiments.dead_units: the dead-ReLU count behind the Pong diagnosis (no training here)."""

import numpy as np
import pytest

from experiments import dead_units
from impala_tf import agent, checkpoints, rundir
from impala_tf import learner as learner_lib
from impala_tf.losses import LossConfig


def _untrained_network(tmp_path, untrained_run):
    """(run dir, its evaluation spec, a freshly built network of that spec) for a MinAtar breakout run."""
    run = untrained_run(tmp_path, "minatar", ["breakout"], use_lstm=False)
    spec = rundir.evaluation_spec(rundir.load_config(run), run / "config.json")
    env = agent.make_env(spec, [0], 3)
    network = agent.make_network(spec, env)
    env.close()
    return run, spec, network


def test_layer_activity_counts_units_that_fire_on_any_frame(tmp_path, untrained_run):
    _, spec, network = _untrained_network(tmp_path, untrained_run)
    torso_name = spec.network_config(1).torso
    observations = dead_units.random_observations(spec, 100, seed=3)
    assert observations.shape[0] == 100 and observations.dtype == np.uint8

    rows = dead_units.layer_activity(network.torso, torso_name, observations)
    assert [row.layer for row in rows] == [
        name for name in dead_units._CHAINS[torso_name] if name != "flatten"
    ]
    assert all(0 < row.mean_active <= row.ever_active <= 1 for row in rows)

    # A unit whose bias is far below zero never fires: the count sees it.
    fc = network.torso.fc
    bias = fc.bias.numpy()
    bias[: len(bias) // 2] = -1e6
    fc.bias.assign(bias)
    after = dead_units.layer_activity(network.torso, torso_name, observations)[-1]
    assert after.ever_active <= 0.5


def test_binary_prints_the_table_and_refuses_bad_input_in_one_line(tmp_path, untrained_run, capsys):
    run = untrained_run(tmp_path, "minatar", ["breakout"], use_lstm=False)
    assert dead_units._main(run, 100, 3) == 0
    out = capsys.readouterr().out
    assert "| initialisation | fc |" in out and "M frames | fc |" in out

    assert dead_units._main(tmp_path / "nowhere", 100, 3) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run directory" in err


def test_history_prints_one_row_per_kept_checkpoint_and_sees_a_unit_die(tmp_path, untrained_run, capsys):
    run, spec, network = _untrained_network(tmp_path, untrained_run)
    checkpoints.restore_network(run / "checkpoints", network)
    learner = learner_lib.Learner(
        network, LossConfig(), learner_lib.OptimizerConfig(), total_frames=1, xla=False
    )
    saver = checkpoints.RunCheckpoints(run / "checkpoints", learner, max_to_keep=10)
    saver.restore_latest()
    # A later checkpoint in which every fc unit is switched off: the history shows fc alive fall to 0.
    learner.num_updates.assign(7)
    learner.num_frames.assign(9000)
    network.torso.fc.bias.assign(np.full(network.torso.fc.bias.shape, -1e6, np.float32))
    saver.save()

    assert dead_units._main(run, 100, 3, all_checkpoints=True) == 0
    lines = capsys.readouterr().out.splitlines()
    header = [cell.strip() for cell in next(line for line in lines if line.startswith("| frames")).split("|")]
    rows = [
        [cell.strip() for cell in line.split("|")]
        for line in lines
        if line.startswith("| ") and line[2].isdigit()
    ]
    assert [row[1] for row in rows] == ["4,321", "9,000"]
    fc_alive = [float(row[header.index("fc alive")]) for row in rows]
    assert fc_alive[0] > 0 and fc_alive[1] == 0


def test_negative_value_share_counts_live_units_only(tmp_path, untrained_run):
    _, spec, network = _untrained_network(tmp_path, untrained_run)
    observations = dead_units.random_observations(spec, 100, seed=3)
    kernel = network.value_kernel.numpy()
    kernel[:, 0] = np.where(np.arange(len(kernel)) % 2, -1.0, 1.0)  # odd units negative
    network.value_kernel.assign(kernel)
    bias = network.torso.fc.bias.numpy()
    bias[0::2] = -1e6  # the positive-weight units never fire
    network.torso.fc.bias.assign(bias)
    torso_name = spec.network_config(1).torso
    assert dead_units.negative_value_share(network, torso_name, observations) == 1.0


def test_restoring_a_named_checkpoint_that_does_not_exist_is_one_line(tmp_path, untrained_run):
    run, spec, network = _untrained_network(tmp_path, untrained_run)
    with pytest.raises(checkpoints.CheckpointError, match="cannot read checkpoint") as error:
        checkpoints.restore_network(run / "checkpoints", network, str(run / "checkpoints" / "ckpt-99"))
    assert "\n" not in str(error.value)
