# The README's two commands, `make demo` and `make test`, work on a fresh clone:
# each creates .venv and installs the pinned dependencies first (`make install`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export NEWSFEED_HOME ?= $(CURDIR)/.newsfeed
export HF_HUB_OFFLINE := 1

.PHONY: install demo test bench bench-home lock clean k8s-serve-config

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

# The platform's main job, end to end: train, serve, and the closed loop (drift, retrain,
# canary, verdict) on a fresh demo home; every process it starts, it stops (newsfeed/cli/demo.py).
demo: install
	$(BIN)/newsfeed demo

test: install
	$(BIN)/python -m pytest

# The benchmarks read a home at the default scale (2,000 users, 8,000 posts; the demo's is
# smaller and the loop changes it): made once by `make bench-home`.
BENCH_HOME ?= $(CURDIR)/.newsfeed-bench

bench-home: install
	test -d $(BENCH_HOME)/mlflow || { NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/newsfeed data generate && \
	  NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/newsfeed pipeline run; }

bench: bench-home
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/generate_speed.py
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/offline_side.py
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/feature_store.py
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/training_speed.py
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/movielens_retrieval.py
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/model_choices.py  # the benchmark home
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/feed_quality.py  # the benchmark home
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/prerank.py  # the benchmark home
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/serving_load.py
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/shared_state.py  # the benchmark home
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/live_content.py  # the benchmark home (copied)
	NEWSFEED_HOME=$(BENCH_HOME) $(BIN)/python benchmarks/ope_open_bandit.py  # reads ../shared/datasets/open-bandit

# Re-pin the dependency tree after changing pyproject.toml.
lock: install
	{ echo "# The whole dependency tree, pinned (pip freeze of a working install, Python 3.11)."; \
	  echo "# Regenerate with: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -E '^(newsfeed|pip|setuptools)=='; } > requirements.lock

# The Serve config each Kubernetes overlay embeds in its RayService (tests fail when it is stale).
k8s-serve-config: install
	for env in local prod; do \
	  $(BIN)/newsfeed serve $$(cat k8s/overlays/$$env/serve-build-args) build -o k8s/overlays/$$env/serve-config.yaml; \
	done

clean:
	rm -rf $(NEWSFEED_HOME)
