"""experiments.dead_units: the dead-ReLU count behind the Pong diagnosis (no training here)."""

import numpy as np

from experiments import dead_units
from impala_tf import agent, rundir
from impala_tf.evaluate import evaluation_spec


def test_layer_activity_counts_units_that_fire_on_any_frame(tmp_path, untrained_run):
    run = untrained_run(tmp_path, "minatar", ["breakout"], use_lstm=False)
    spec = evaluation_spec(rundir.load_config(run), run / "config.json")
    torso_name = spec.network_config(1).torso
    observations = dead_units.random_observations(spec, 100, seed=3)
    assert observations.shape[0] == 100 and observations.dtype == np.uint8

    env = agent.make_env(spec, [0], 3)
    network = agent.make_network(spec, env)
    env.close()
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
