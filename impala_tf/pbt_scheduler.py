"""Ray Tune's synchronous PBT scheduler, made to resume: `impala_tf.pbt` uses it instead of the plain class.

Tune pickles the scheduler once, when the experiment starts (tuner.pkl), and restores that pickle: a resumed
population gets a scheduler that has forgotten where the members are. In synchronous mode this deadlocks. The
fresh scheduler's next boundary is its first one (max(interval, burn-in)); the members, restored at frame T, all
report at T + interval, the perturbation there advances the boundary to max(first + interval, T + interval) =
T + interval, and a paused member is only restarted while its frames are below the boundary: none is, and every
member stays paused for good (seen in the MinAtar demonstration, resumed at 1.5M frames, stuck at 2M).

On resume, this scheduler takes each restored member's last report as that member's state (its frames, fitness
and last perturbation) and puts the next boundary one interval past the furthest member.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining


def next_boundary(first: float, restored_frames: list[float], interval: float) -> float:
    """The synchronous boundary after a resume: one interval past the furthest restored member, never before
    the scheduler's first boundary (max(interval, burn-in))."""
    return max([first, *(frames + interval for frames in restored_frames)])


class ResumablePopulationBasedTraining(PopulationBasedTraining):
    """`PopulationBasedTraining(synch=True)` whose state is rebuilt from the trials Tune restores."""

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        super().on_trial_add(tune_controller, trial)
        result = trial.last_result or {}
        if trial.is_finished() or self._time_attr not in result or self._metric not in result:
            return  # a new member, one restored before its first report, or one that is done
        frames = result[self._time_attr]
        state = self._trial_state[trial]
        state.last_train_time = frames
        state.last_perturbation_time = frames
        state.last_score = self._metric_op * result[self._metric]
        state.last_result = result
        self._next_perturbation_sync = next_boundary(
            self._next_perturbation_sync, [frames], self._perturbation_interval
        )
