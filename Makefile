# impala-tf: every target sets up .venv first (once; re-run only when pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make setup EXTRAS=gpu,ray,test` on a CUDA machine installs tensorflow[and-cuda] instead of tensorflow-cpu.
EXTRAS ?= cpu,ray,test
export TF_CPP_MIN_LOG_LEVEL ?= 2
# The main job: a Breakout expert (the paper's protocol, minimal action set, shallow network, 5M frames), its
# evaluation, the leaderboard beside the paper's rows and a one-line verdict (16 min measured on 2 cores, 5.3K frames/s).
RUN_DIR ?= runs/breakout_shallow
RUN_SUITE ?= atari_tuning6
RUN_FLAGS ?= --games=breakout --action_set=minimal --total_frames=5000000

.PHONY: setup test run bench bench-ray bench-quick lint format regression leaderboards reproduce soak test-tf-agents clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

regression: setup
	$(PY) -m pytest -q -m slow --timeout=3600  # about 2.7 h on 2 cores: Breakout alone is ~30 min

run: setup
	$(PY) -m suites.$(RUN_SUITE) --logdir=$(RUN_DIR) $(RUN_FLAGS)
	$(PY) -m impala_tf.evaluate --logdir=$(RUN_DIR)
	$(PY) -m impala_tf.leaderboard --suite=$(RUN_SUITE) --runs=$(RUN_DIR) --out=$(RUN_DIR)/leaderboard
	$(PY) -m impala_tf.verdict --logdir=$(RUN_DIR)
	@echo "run directory:  $(RUN_DIR)  (episodes.csv, eval_scores.csv, checkpoints/, tensorboard/)"
	@echo "leaderboard:    $(RUN_DIR)/leaderboard/README.md  and  report.html"

# Re-run a committed experiment from scratch (`make reproduce` alone lists them with time estimates).
EXPERIMENT ?=
reproduce: setup
	$(PY) -m experiments.reproduce $(if $(EXPERIMENT),--experiment=$(EXPERIMENT),--list)

bench: setup
	$(PY) -m bench.run_bench

bench-ray: setup
	$(PY) -m bench.ray_bench

bench-quick: setup
	$(PY) -m bench.run_bench --quick

lint: setup
	$(VENV)/bin/ruff check impala_tf suites tests bench experiments
	$(VENV)/bin/ruff format --check impala_tf suites tests bench experiments

format: setup
	$(VENV)/bin/ruff check --fix impala_tf suites tests bench experiments
	$(VENV)/bin/ruff format impala_tf suites tests bench experiments

# tf-agents 0.19 needs TensorFlow 2.15: its adapters live in their own venv, built from requirements/tf-agents.txt
# with this package installed --no-deps (about 2 minutes with a warm pip cache). The test exports policies with
# the core venv's TensorFlow and runs them under tf-agents, as a user would.
TFA_VENV := .venv-tf-agents
TFA_STAMP := $(TFA_VENV)/.installed

$(TFA_STAMP): requirements/tf-agents.txt pyproject.toml
	rm -rf $(TFA_VENV)
	$(PYTHON) -m venv $(TFA_VENV)
	$(TFA_VENV)/bin/python -m pip install -q --upgrade pip
	$(TFA_VENV)/bin/python -m pip install -q -r requirements/tf-agents.txt
	$(TFA_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $(TFA_STAMP)

test-tf-agents: setup $(TFA_STAMP)
	TF_USE_LEGACY_KERAS=1 IMPALA_TF_EXPORT_PYTHON=$(CURDIR)/$(PY) $(TFA_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/tf_agents

# Single-game MinAtar experts of the sweep, 5 games x 3 seeds each: the suite's default (V-trace lambda 0.5,
# batches of 8, three quarters of each replayed) and the two defaults before it (no replay; batches of 32).
comma := ,
minatar_sweep_runs = $(subst $() ,$(comma),$(strip $(foreach game,asterix breakout freeway seaquest space_invaders,$(foreach seed,1 2 3,leaderboards/inputs/minatar_sweep/$(1)_$(game)_s$(seed)))))
MINATAR_DEFAULT_EXPERTS := $(call minatar_sweep_runs,lambda0.5_batch8_replay0.75)
MINATAR_BATCH8_EXPERTS := $(call minatar_sweep_runs,lambda0.5_batch8)
MINATAR_BATCH32_EXPERTS := $(call minatar_sweep_runs,lambda0.5)

leaderboards: setup
	$(PY) -m impala_tf.leaderboard --suite=atari57 --reference=impala_paper,machado_repro --out=leaderboards/atari57
	$(PY) -m impala_tf.transfer experts --suite=atari57 --multitask=impala_deep_multitask --experts=impala_deep_experts --out=leaderboards/atari57
	$(PY) -m impala_tf.leaderboard --suite=minatar --runs=leaderboards/inputs/minatar/multitask,leaderboards/inputs/minatar_experts,leaderboards/inputs/minatar_multitask,leaderboards/inputs/minatar_multitask_batch8,$(MINATAR_DEFAULT_EXPERTS),$(MINATAR_BATCH8_EXPERTS),$(MINATAR_BATCH32_EXPERTS),leaderboards/inputs/minatar_pbt/pbt --scores=leaderboards/inputs/minatar/published_scores.csv --normaliser=leaderboards/inputs/minatar/normaliser.csv --reference=none --out=leaderboards/minatar
	$(PY) -m impala_tf.transfer experts --suite=minatar --normaliser=leaderboards/inputs/minatar/normaliser.csv --multitask=leaderboards/inputs/minatar_multitask --experts=leaderboards/inputs/minatar_experts --out=leaderboards/minatar
	$(PY) -m impala_tf.transfer experts --suite=minatar --normaliser=leaderboards/inputs/minatar/normaliser.csv --multitask=leaderboards/inputs/minatar_multitask_batch8 --experts=$(MINATAR_BATCH8_EXPERTS) --name=transfer_vs_experts_batch8 --out=leaderboards/minatar
	$(PY) -m experiments.transfer_matrix --notrain --suite=minatar --games=breakout,space_invaders,asterix --frames=500000 --seeds=1,2 --train_args=--learning_rate=0.002 --eval_episodes=20 --workdir=leaderboards/inputs/minatar/transfer --out=leaderboards/minatar
	$(PY) -m experiments.minatar_popart report --workdir=leaderboards/inputs/minatar/popart --normaliser=leaderboards/inputs/minatar/normaliser.csv --out=leaderboards/minatar
	$(PY) -m impala_tf.leaderboard --suite=atari5 --runs=leaderboards/inputs/atari5/runs --out=leaderboards/atari5
	$(PY) -m impala_tf.leaderboard --suite=atari_tuning6 --runs=leaderboards/inputs/atari_tuning6,leaderboards/inputs/atari_tuning6_batch8,leaderboards/inputs/atari_tuning6_replay,leaderboards/inputs/atari_tuning6_replay75 --out=leaderboards/atari_tuning6
	$(PY) -m experiments.ablation report --inputs=leaderboards/inputs/ablation --out=leaderboards/ablation
	$(PY) -m experiments.minatar_sweep report --inputs=leaderboards/inputs/minatar_sweep --out=leaderboards/minatar
	$(PY) -m experiments.pbt_minatar report --inputs=leaderboards/inputs/minatar_pbt --out=leaderboards/minatar

SOAK_MINUTES ?= 30
soak: setup
	$(PY) -m bench.soak --minutes=$(SOAK_MINUTES)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
