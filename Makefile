# The README's two commands, `make demo` and `make test`, work on a fresh clone:
# each creates .venv and installs the pinned dependencies first (`make install`).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_PORT ?= 8000
export NEWSFEED_HOME ?= $(CURDIR)/.newsfeed
export HF_HUB_OFFLINE := 1

.PHONY: install demo test bench lock clean k8s-serve-config

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

demo: install
	$(BIN)/newsfeed data generate
	$(BIN)/newsfeed data summary
	$(BIN)/newsfeed pipeline run
	$(BIN)/newsfeed features get --user-id 7 --post-id 7990 --post-id 7995 --post-id 120
	$(BIN)/newsfeed models list
	@# The feed on Ray Serve: start it, show one user's feed through the HTTP API, stop it.
	$(BIN)/newsfeed serve --port $(DEMO_PORT) & server=$$!; \
	  $(BIN)/newsfeed feed 7 --limit 10 --url http://127.0.0.1:$(DEMO_PORT) --wait 300; status=$$?; \
	  kill -INT $$server; wait $$server; exit $$status
	@# Monitoring: drift between the champion's training data and the last day (decide, start nothing),
	@# then a simulated A/B test of the two arms with its report.
	$(BIN)/newsfeed drift report --dry-run
	$(BIN)/newsfeed experiment set --arm champion=50 --arm challenger=50
	$(BIN)/newsfeed experiment simulate --out $(NEWSFEED_HOME)/ab-test --quality champion=0.5 --quality challenger=0.8
	$(BIN)/newsfeed experiment report --data-dir $(NEWSFEED_HOME)/ab-test --html $(NEWSFEED_HOME)/ab-test/report.html

test: install
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/generate_speed.py
	$(BIN)/python benchmarks/offline_side.py
	$(BIN)/python benchmarks/feature_store.py
	$(BIN)/python benchmarks/training_speed.py
	$(BIN)/python benchmarks/movielens_retrieval.py
	$(BIN)/python benchmarks/model_choices.py  # reads the demo's home: after make demo
	$(BIN)/python benchmarks/feed_quality.py  # the demo's home too
	$(BIN)/python benchmarks/serving_load.py
	$(BIN)/python benchmarks/shared_state.py  # the demo's home too
	$(BIN)/python benchmarks/live_content.py  # the demo's home too (copied)
	$(BIN)/python benchmarks/ope_open_bandit.py  # reads ../shared/datasets/open-bandit

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
