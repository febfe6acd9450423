"""Atari on ale-py's C++ vector environment (`ale_py.vector_env.AtariVectorEnv`), behind the BatchedEnv face.

Preprocessing runs in ale-py's C++ threads: action repeat 4 with a max over the last two frames, 84x84
greyscale, a 4-frame stack, no-op starts and the frame cap. Python only maps actions, labels step types and
keeps per-game bookkeeping with a handful of numpy operations per batched step.

Protocols (`PROTOCOLS`):
  impala   the paper's: no sticky actions; 1 to 30 no-op frames (uniform) at the start of every game, as
           the reference scores assume (see "No-op starts"); a lost life ends the LEARNING episode (LAST,
           discount 0) while the game goes on; 108,000-frame cap.
  machado  Machado et al. 2018: sticky actions (0.25), full action set, no life-loss signal, no no-op starts,
           108,000-frame cap.
Neither presses FIRE at reset: the paper did not, and an agent that must learn to press FIRE after a life loss
must also learn it at the start of a game. Rewards are raw (unclipped); the loss clips them.

Life loss under auto-reset. ale-py's `episodic_life` would reset the whole game on a life loss, so we use its
`life_loss_info` instead: the step that loses a life is reported terminated while the emulator carries on.
We emit it as LAST (discount 0); on the next step that environment's agent action is replaced by NOOP and the
result is emitted as FIRST (reward 0) of a new learning episode in the same game. After a real game over or
a truncation ale-py itself resets the game on the next step (its NEXT_STEP autoreset) and ignores the action,
so the same "next step is FIRST" rule covers both cases. Rewards of those FIRST steps still count towards the
game score; they are almost always 0.

A learning episode that ends inside its FIRST step. When the NOOP step after a life-loss LAST itself ends the
game (game over, or the frame cap) or loses another life, that FIRST step (observation x, where the agent then
picks action a) cannot also be the LAST: dm-env needs a FIRST after a LAST. So the next step closes the episode:
its env step executes NOOP in place of a (after a game over or truncation it is ale-py's reset, which ignores
the action anyway), and it is emitted as LAST with reward 0, discount 1 and the FIRST's observation x. The
transition x --a--> x is a self-loop that credits a with nothing: a never ran, and what ended the game or the
life was the forced NOOP, not a. Its value target is gamma * V(x) and its policy-gradient advantage
-(1 - gamma) * V(x), about 0: neither a termination (discount 0, which would pin V(x) to 0 and push a down by
V(x)) nor the step's reward is attributed to a. Rewards of both steps still count towards the game score; the
next step is the FIRST of the new game (or, after a life loss, of the next life, from another forced NOOP).

Truncation at the frame cap is LAST with discount 1 (the learner bootstraps); termination is discount 0.

No-op starts. The reference random and human scores (dqn_zoo) start every game with 1 to 30 NOOP emulator
frames, uniformly, before action repeat. ale-py's vector env plays its no-op start itself, on every reset (its
own and its NEXT_STEP autoreset): `noop_max` = M draws 0..M-1 single NOOP frames, uniformly, from each
environment's own seeded generator; their rewards are dropped, they count in `episode_frame_number` (so in
`game_frames` and a finished game's frames) and not towards the frame cap. It cannot draw from 1..30, so the
impala protocol passes M = 31 (0..30) and resets again, at once, every environment whose game drew 0 (the only
moment `episode_frame_number` is 0), until it draws 1..30: a uniform draw from 1..30 (`noop_redraws` counts
the redraws, 1 in 31 games). This happens inside `reset()` or the step that began the game, before anything is
emitted. One exception: after a game ended inside the forced NOOP that follows a life loss (above), the new
game's first agent step comes after one more forced NOOP step, 4 frames later.

Finished games are detected from ale-py's two frame counters: `frame_number` runs on across games while
`episode_frame_number` restarts, so their difference (the frame at which the game began) changes exactly when
a new game begins. This holds whatever a game's `lives()` does at game over, and it reports a finished game on
the step after its LAST.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections import deque
from collections.abc import Sequence

import dm_env
import numpy as np
from dm_env import specs

from impala_tf.envs.base import ACTION_SETS, BatchedEnv, BatchedTimeStep, EpisodeStats

PROTOCOLS = ("impala", "machado")
NUM_FULL_ACTIONS = 18  # ALE's Action enum; the shared action head of multi-task agents
FRAMES_PER_STEP = 4
OBSERVATION_SHAPE = (84, 84, 4)  # height, width, stacked frames (channels last, like every backend here)
MIN_ALE_PY = "0.12"

_FIRST, _MID, _LAST = (int(t) for t in (dm_env.StepType.FIRST, dm_env.StepType.MID, dm_env.StepType.LAST))


@dataclasses.dataclass(frozen=True)
class AtariProtocol:
    name: str
    sticky_action_prob: float
    max_noop_frames: int  # every game starts with 1..max_noop_frames NOOP frames, uniformly (0: none)
    life_loss_ends_episode: bool
    max_episode_frames: int = 108_000
    fire_reset: bool = False

    @property
    def ale_noop_max(self) -> int:
        """ale-py's `noop_max`: it draws 0..noop_max-1 frames; AtariBatchedEnv redraws the 0s (module docstring)."""
        return self.max_noop_frames + 1 if self.max_noop_frames else 0


_PROTOCOLS = {
    "impala": AtariProtocol(
        "impala", sticky_action_prob=0.0, max_noop_frames=30, life_loss_ends_episode=True
    ),
    "machado": AtariProtocol(
        "machado", sticky_action_prob=0.25, max_noop_frames=0, life_loss_ends_episode=False
    ),
}


def get_protocol(name: str) -> AtariProtocol:
    if name not in _PROTOCOLS:
        raise ValueError(f"unknown Atari protocol {name!r}; valid: {', '.join(PROTOCOLS)}")
    return _PROTOCOLS[name]


@functools.cache
def rom_ids() -> tuple[str, ...]:
    """The games whose ROMs the installed ale-py ships (its wheel carries them)."""
    from ale_py import roms

    return tuple(roms.get_all_rom_ids())


def check_rom(game: str) -> None:
    """Raises ValueError when the installed ale-py has no ROM called `game`, naming the version an Atari-57
    game needs."""
    if game in rom_ids():
        return
    import ale_py

    from impala_tf.reference import atari57_games

    if game in atari57_games():
        raise ValueError(
            f"Atari game {game!r} has no ROM in the installed ale-py {ale_py.__version__}; "
            f"it needs ale-py>={MIN_ALE_PY} (ROMs ship in its wheel)"
        )
    raise ValueError(f"unknown Atari game {game!r}; valid: {', '.join(sorted(rom_ids()))}")


@functools.cache
def game_action_set(game: str, action_set: str = "full") -> tuple[int, ...]:
    """The ALE actions (Action enum values, 0..17) a game exposes: `full` = its legal set, `minimal` = its
    minimal set. Index j of the tuple is what ale-py's vector env executes for action j."""
    if action_set not in ACTION_SETS:
        raise ValueError(f"unknown action set {action_set!r}; valid: {', '.join(ACTION_SETS)}")
    check_rom(game)
    from ale_py import ALEInterface, LoggerMode, roms

    ALEInterface.setLoggerMode(LoggerMode.Error)
    ale = ALEInterface()
    ale.loadROM(roms.get_rom_path(game))
    actions = ale.getLegalActionSet() if action_set == "full" else ale.getMinimalActionSet()
    return tuple(int(a.value) for a in actions)


def env_seeds(seed: int, num_envs: int) -> np.ndarray:
    """int64 [num_envs] in [1, 2**31 - 1): environment i's seed depends only on (seed, i). ale-py treats seeds
    <= 0 as 'unseeded', hence the offset."""
    return np.array(
        [np.random.SeedSequence([seed, i]).generate_state(1)[0] % (2**31 - 2) + 1 for i in range(num_envs)],
        dtype=np.int64,
    )


def default_num_threads(num_envs: int) -> int:
    return max(1, min(num_envs, os.cpu_count() or 1))


class _GameGroup:
    """The environments of one game: one AtariVectorEnv, and where its envs sit in the batch."""

    def __init__(self, vector_env, task_id: int, env_index: np.ndarray):
        self.vector_env = vector_env
        self.task_id = task_id
        self.env_index = env_index
        # Scatter/gather with a slice when the group's envs are contiguous: no fancy-index copies.
        contiguous = np.array_equal(env_index, np.arange(env_index[0], env_index[0] + len(env_index)))
        self.where: slice | np.ndarray = slice(env_index[0], env_index[-1] + 1) if contiguous else env_index
        self.paddle_strength = np.ones(len(env_index), np.float32)  # only paddle games read it


class AtariBatchedEnv(BatchedEnv):
    """N Atari environments of one or several games, stepped in lock step.

    Args:
      games: the suite's games (ale-py ROM ids); `legal_action_mask()` has one row per game.
      task_ids: int [N], environment i plays `games[task_ids[i]]`.
      seed: determines every environment's seed.
      protocol: "impala" or "machado" (see the module docstring).
      action_set: "full" (18 actions, each game's illegal ones masked and executed as NOOP) or "minimal"
        (a single game's minimal set).
      num_threads: C++ threads shared out over the games, at least one each (0 or None: one per
        environment, capped by the cores).
      max_episode_frames: frame cap of a game (default: the protocol's 108,000).

    Per environment, for the game in progress: `lives`, `game_returns` (raw score so far) and `game_frames`
    (emulator frames so far, no-op starts included). `noop_redraws`: games whose no-op start drew 0 frames and
    were reset again (see the module docstring).
    """

    def __init__(
        self,
        games: Sequence[str],
        task_ids: Sequence[int],
        seed: int,
        *,
        protocol: str = "impala",
        action_set: str = "full",
        num_threads: int | None = None,
        max_episode_frames: int | None = None,
    ):
        from ale_py.vector_env import AtariVectorEnv

        self.games = tuple(games)
        self.protocol = get_protocol(protocol)
        if action_set not in ACTION_SETS:
            raise ValueError(f"unknown action set {action_set!r}; valid: {', '.join(ACTION_SETS)}")
        if action_set == "minimal" and len(self.games) > 1:
            raise ValueError(
                "action_set='minimal' needs a single game; multi-task runs use action_set='full'"
            )
        if action_set == "minimal" and protocol == "machado":
            raise ValueError("the machado protocol uses the full action set; valid action_set: full")
        self.action_set = action_set
        self.task_ids = np.asarray(task_ids, dtype=np.int32)
        if self.task_ids.ndim != 1 or len(self.task_ids) == 0:
            raise ValueError(f"task_ids must be a non-empty list, got {task_ids!r}")
        if self.task_ids.min() < 0 or self.task_ids.max() >= len(self.games):
            raise ValueError(f"task_ids must lie in [0, {len(self.games)}), got {task_ids!r}")
        for game in self.games:
            check_rom(game)
        self.num_envs = len(self.task_ids)
        self.frames_per_step = FRAMES_PER_STEP
        cap = max_episode_frames or self.protocol.max_episode_frames
        total_threads = num_threads or default_num_threads(self.num_envs)

        self._groups: list[_GameGroup] = []
        for task in np.unique(self.task_ids):
            index = np.flatnonzero(self.task_ids == task)
            threads = max(1, min(len(index), round(total_threads * len(index) / self.num_envs)))
            vector_env = AtariVectorEnv(
                self.games[task],
                len(index),
                num_threads=threads,
                max_num_frames_per_episode=cap,
                repeat_action_probability=self.protocol.sticky_action_prob,
                full_action_space=action_set == "full",
                noop_max=self.protocol.ale_noop_max,
                episodic_life=False,
                life_loss_info=self.protocol.life_loss_ends_episode,
                reward_clipping=False,
                use_fire_reset=self.protocol.fire_reset,
                stack_num=1,  # stacked below, straight into the channels-last layout
            )
            self._groups.append(_GameGroup(vector_env, int(task), index))
        # A game's action set comes from its vector env, or (tasks no env plays) from a probe ALE.
        played = {
            g.task_id: tuple(int(a.value) for a in g.vector_env.ale.get_action_set()) for g in self._groups
        }
        self._action_sets = [
            played.get(t) or game_action_set(g, action_set) for t, g in enumerate(self.games)
        ]
        self._num_actions = NUM_FULL_ACTIONS if action_set == "full" else len(self._action_sets[0])
        # [num_tasks, A]: head action -> index into the game's action set; illegal actions run as NOOP.
        self._to_game_action = np.zeros((len(self.games), self._num_actions), np.int32)
        self._legal = np.zeros((len(self.games), self._num_actions), bool)
        for task, actions in enumerate(self._action_sets):
            noop = actions.index(0)
            if action_set == "full":
                for a in range(NUM_FULL_ACTIONS):
                    self._to_game_action[task, a] = actions.index(a) if a in actions else noop
                    self._legal[task, a] = a in actions
            else:
                self._to_game_action[task] = np.arange(len(actions))
                self._legal[task] = True
        self._noop = np.array([self._action_sets[t].index(0) for t in self.task_ids], np.int32)
        self._seeds = env_seeds(seed, self.num_envs)
        self._seeded = False

        n = self.num_envs
        self.lives = np.zeros(n, np.int32)
        self.game_returns = np.zeros(n, np.float64)  # raw score of the game in progress
        self.game_frames = np.zeros(n, np.int64)  # frames of the game in progress, no-op starts included
        self._game_start = np.zeros(n, np.int64)  # ale-py's running frame number when the game began
        self._after_last = np.zeros(n, bool)  # the previous emitted step was LAST: this one is FIRST
        self._pending_last = np.zeros(n, bool)  # the FIRST step ended the game or a life: emit a LAST now
        self._restarting = False  # any of the two above
        self._stack = np.zeros((n, *OBSERVATION_SHAPE), np.uint8)  # see _stacked_observation
        self._observation = np.zeros((n, *OBSERVATION_SHAPE), np.uint8)  # what the last step returned
        self._finished: deque[EpisodeStats] = deque(maxlen=100_000)
        self._in_flight = False
        self._redraw_noops = self.protocol.max_noop_frames > 0
        self.noop_redraws = 0

    def observation_spec(self) -> specs.BoundedArray:
        return specs.BoundedArray(OBSERVATION_SHAPE, np.uint8, 0, 255, name="observation")

    def action_spec(self) -> specs.DiscreteArray:
        return specs.DiscreteArray(self._num_actions, dtype=np.int32, name="action")

    def legal_action_mask(self) -> np.ndarray:
        return self._legal.copy()

    def reset(self) -> BatchedTimeStep:
        """Starts a new game in every environment (the first reset seeds them, later ones continue)."""
        if self._in_flight:
            self.step_wait()
        n = self.num_envs
        frames = np.empty((n, *OBSERVATION_SHAPE[:2]), np.uint8)
        lives, episode_frame, frame = (np.empty(n, np.int64) for _ in range(3))
        for group in self._groups:
            seeds = self._seeds[group.env_index] if not self._seeded else None
            obs, info = group.vector_env.reset(seed=seeds)
            w = group.where
            frames[w] = obs[:, 0]
            lives[w], episode_frame[w], frame[w] = (
                info["lives"],
                info["episode_frame_number"],
                info["frame_number"],
            )
        self._seeded = True
        if self._redraw_noops and not episode_frame.all():
            self._redraw_noop_starts(frames, lives, episode_frame, frame)
        self.lives, self.game_frames, self._game_start = lives, episode_frame, frame - episode_frame
        self.game_returns[:] = 0
        self._after_last[:] = False
        self._pending_last[:] = False
        self._restarting = False
        observation = self._stacked_observation(frames, np.ones(n, bool))
        self._observation = observation
        zeros = np.zeros(n, np.float32)
        return BatchedTimeStep(np.full(n, _FIRST, np.uint8), zeros, zeros.copy(), observation)

    def step(self, actions: np.ndarray) -> BatchedTimeStep:
        self.step_async(actions)
        return self.step_wait()

    def step_async(self, actions: np.ndarray) -> None:
        """Sends the actions to every game's C++ threads and returns; `step_wait` collects the step."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions must have shape ({self.num_envs},), got {actions.shape}")
        if actions.min() < 0 or actions.max() >= self._num_actions:
            raise ValueError(f"actions must lie in [0, {self._num_actions}), got {actions}")
        game_actions = self._to_game_action[self.task_ids, actions]
        if self._restarting:
            # The action at a LAST step is ignored: the FIRST after it comes from a NOOP (or ale-py's reset).
            restart = self._after_last | self._pending_last
            game_actions[restart] = self._noop[restart]
        for group in self._groups:
            # ale-py's own interface, past AtariVectorEnv.send's per-call checks and allocations.
            group.vector_env.ale.send(game_actions[group.where], group.paddle_strength)
        self._in_flight = True

    def step_wait(self) -> BatchedTimeStep:
        n = self.num_envs
        if len(self._groups) == 1:
            obs, reward, terminated, truncated, info = self._groups[0].vector_env.ale.recv()
            frames = obs[:, 0]
            lives, episode_frame, frame = info["lives"], info["episode_frame_number"], info["frame_number"]
        else:
            frames = np.empty((n, *OBSERVATION_SHAPE[:2]), np.uint8)
            reward, terminated, truncated = np.empty(n, np.int32), np.empty(n, bool), np.empty(n, bool)
            lives, episode_frame, frame = np.empty(n, np.int32), np.empty(n, np.int64), np.empty(n, np.int64)
            for group in self._groups:
                obs, r, term, trunc, info = group.vector_env.ale.recv()
                w = group.where
                frames[w] = obs[:, 0]
                reward[w], terminated[w], truncated[w] = r, term, trunc
                lives[w], episode_frame[w], frame[w] = (
                    info["lives"],
                    info["episode_frame_number"],
                    info["frame_number"],
                )
        self._in_flight = False
        if self._redraw_noops and not episode_frame.all():
            frames, lives, episode_frame, frame = (np.array(a) for a in (frames, lives, episode_frame, frame))
            self._redraw_noop_starts(frames, lives, episode_frame, frame)
        reward = reward.astype(np.float32)

        # Game bookkeeping, in raw score.
        game_start = frame - episode_frame
        new_game = game_start != self._game_start
        if new_game.any():
            for i in np.flatnonzero(new_game):
                self._finished.append(
                    EpisodeStats(
                        int(i), int(self.task_ids[i]), float(self.game_returns[i]), int(self.game_frames[i])
                    )
                )
            self.game_returns[new_game] = 0
        self.game_returns += reward
        self.game_frames, self._game_start, self.lives = episode_frame, game_start, lives
        observation = self._stacked_observation(frames, new_game)

        # Learning-episode labels.
        ended = terminated | truncated
        step_type = np.where(ended, np.uint8(_LAST), np.uint8(_MID))
        discount = np.where(terminated, np.float32(0.0), np.float32(1.0))
        first, pending = self._after_last, self._pending_last
        if self._restarting:
            restarting = first | pending
            step_type[first] = _FIRST
            discount[first] = 0.0
            reward[restarting] = 0.0
            # The episode ended inside its FIRST step: close it now with a self-loop on the FIRST's observation
            # that credits the agent's unexecuted action with nothing (module docstring).
            step_type[pending] = _LAST
            discount[pending] = 1.0
            if pending.any():
                observation = np.array(observation)
                observation[pending] = self._observation[pending]
            self._pending_last = first & ended
        self._after_last = step_type == _LAST
        self._restarting = bool(self._after_last.any() or self._pending_last.any())
        self._observation = observation
        return BatchedTimeStep(step_type, reward, discount, observation)

    def _redraw_noop_starts(
        self, frames: np.ndarray, lives: np.ndarray, episode_frame: np.ndarray, frame: np.ndarray
    ) -> None:
        """Resets again every environment whose game began with 0 no-op frames (`episode_frame` 0), until each
        drew 1..max_noop_frames; updates the four arrays of those environments in place."""
        redraw = episode_frame == 0
        while redraw.any():
            self.noop_redraws += int(redraw.sum())
            for group in self._groups:
                mask = redraw[group.env_index]
                if not mask.any():
                    continue
                obs, info = group.vector_env.reset(options={"reset_mask": mask})
                index = group.env_index[mask]
                frames[index] = obs[mask, 0]
                lives[index] = info["lives"][mask]
                episode_frame[index] = info["episode_frame_number"][mask]
                frame[index] = info["frame_number"][mask]
            redraw = episode_frame == 0

    def _stacked_observation(self, frames: np.ndarray, new_game: np.ndarray) -> np.ndarray:
        """Pushes frames uint8 [N, 84, 84] onto the frame stacks; returns uint8 [N, 84, 84, 4], oldest first.

        In the channels-last stacks of all N envs, seen as one flat byte run, channel c of pixel p sits at
        4p + c: dropping the oldest frame is a shift of the whole run by one byte (one memmove), and the new
        frame fills every fourth byte. This avoids transposing ale-py's [N, 4, 84, 84] stack, which costs
        several times more. A new game starts from zeros, as ale-py's own stack does.
        """
        stack = np.empty_like(self._stack)
        stack.reshape(-1)[:-1] = self._stack.reshape(-1)[1:]
        stack[..., 3] = frames
        if new_game.any():
            stack[new_game, ..., :3] = 0
        self._stack = stack
        return stack

    def pop_finished_episodes(self) -> list[EpisodeStats]:
        finished = list(self._finished)
        self._finished.clear()
        return finished

    def close(self) -> None:
        if self._in_flight:
            self.step_wait()
        for group in self._groups:
            group.vector_env.close()
        self._groups = []


def measure_env_fps(
    games: Sequence[str] = ("pong",),
    num_envs: int = 8,
    num_threads: int = 2,
    seconds: float = 5.0,
    *,
    mode: str = "sync",
    protocol: str = "impala",
    seed: int = 0,
) -> dict[str, float]:
    """Frames/s (agent steps x 4) with uniformly random actions: the raw AtariVectorEnv against this module's
    interface over the same games, envs and threads, timed in alternating slices so both see the same load.

    mode="sync" steps every env in lock step. mode="async" splits the envs into two halves and keeps one half
    stepping in C++ while Python handles the other: the raw side uses ale-py's own async batches
    (batch_size = N/2), the interface side two AtariBatchedEnvs with step_async / step_wait.
    """
    from ale_py.vector_env import AtariVectorEnv

    if mode not in ("sync", "async"):
        raise ValueError(f"unknown mode {mode!r}; valid: sync, async")
    if mode == "async" and num_envs % 2:
        raise ValueError(f"mode='async' needs an even num_envs, got {num_envs}")
    games = tuple(games)
    task_ids = [i % len(games) for i in range(num_envs)]
    settings = get_protocol(protocol)
    rng = np.random.default_rng(seed)

    def raw_envs(batch_fraction: int):
        envs = []
        for task, game in enumerate(games):
            n = task_ids.count(task)
            envs.append(
                AtariVectorEnv(
                    game,
                    n,
                    batch_size=n // batch_fraction,
                    num_threads=max(1, round(num_threads * n / num_envs)),
                    repeat_action_probability=settings.sticky_action_prob,
                    full_action_space=True,
                    noop_max=settings.ale_noop_max,
                    life_loss_info=settings.life_loss_ends_episode,
                    reward_clipping=False,
                    use_fire_reset=False,
                )
            )
        return envs

    if mode == "sync":
        raw = raw_envs(1)
        for env in raw:
            env.reset(seed=1 + seed)
        ours = [AtariBatchedEnv(games, task_ids, seed, protocol=protocol, num_threads=num_threads)]
        ours[0].reset()

        def raw_step():
            for env in raw:
                env.send(rng.integers(0, NUM_FULL_ACTIONS, env.batch_size, dtype=np.int32))
            for env in raw:
                env.recv()
            return num_envs

        def our_step():
            ours[0].step(rng.integers(0, NUM_FULL_ACTIONS, num_envs, dtype=np.int32))
            return num_envs

    else:
        raw = raw_envs(2)
        for env in raw:
            env.reset(seed=1 + seed)
            env.send(rng.integers(0, NUM_FULL_ACTIONS, env.batch_size, dtype=np.int32))
        half = num_envs // 2
        threads = max(1, num_threads // 2)  # the same thread budget as the raw side
        ours = [
            AtariBatchedEnv(games, task_ids[:half], seed, protocol=protocol, num_threads=threads),
            AtariBatchedEnv(games, task_ids[half:], seed + 1, protocol=protocol, num_threads=threads),
        ]
        for env in ours:
            env.reset()
            env.step_async(rng.integers(0, NUM_FULL_ACTIONS, half, dtype=np.int32))

        def raw_step():
            count = 0
            for env in raw:  # ale-py hands back whichever half finished first, then gets its next actions
                obs, *_ = env.recv()
                env.send(rng.integers(0, NUM_FULL_ACTIONS, env.batch_size, dtype=np.int32))
                count += len(obs)
            return count

        def our_step():
            for env in ours:
                env.step_wait()
                env.step_async(rng.integers(0, NUM_FULL_ACTIONS, half, dtype=np.int32))
            return num_envs

    # Short alternating slices: on a shared machine both sides see the same background load.
    timed = {"raw": [0, 0.0], "interface": [0, 0.0]}
    slices = max(10, round(seconds / 0.2))
    for _ in range(slices):
        for name, step in (("raw", raw_step), ("interface", our_step)):
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / (2 * slices):
                steps += step()
            timed[name][0] += steps
            timed[name][1] += time.perf_counter() - start
    if mode == "async":
        for env in raw:
            env.recv()
    for env in raw:
        env.close()
    for env in ours:
        env.close()
    raw_fps = timed["raw"][0] * FRAMES_PER_STEP / timed["raw"][1]
    interface_fps = timed["interface"][0] * FRAMES_PER_STEP / timed["interface"][1]
    return {
        "raw_fps": raw_fps,
        "interface_fps": interface_fps,
        "ratio": interface_fps / raw_fps,
        "num_envs": num_envs,
        "num_threads": num_threads,
        "mode": mode,
    }
