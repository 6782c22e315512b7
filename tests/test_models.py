"""Training, evaluation, registry, index and packaging end to end on the default-scale simulated
network (what `make bench-home` builds), through the command line a user drives, with the real
Feast store, MLflow, FAISS and BentoML. The quality bars are the issue's, at that scale."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from newsfeed.cli import app
from newsfeed.registry import RANKER, TWO_TOWER, Registry, RegistryError

pytestmark = pytest.mark.slow
runner = CliRunner()


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


FRESH_SEED = 29
"""The simulator seed these tests run on: no modelling choice was made on it, nor on how to make
them (the choices were made on seed 7's data before its test period, see
benchmarks/model_choices.py; seed 23 showed that a choice made on one window did not carry, and
so is spent)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Data -> features (applied, materialized) -> both models trained and registered -> index,
    at the default scale (2,000 users, 8,000 posts, 14 days) on a fresh seed."""
    home = tmp_path_factory.mktemp("models-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEWSFEED_HOME", str(home))
    mp.delenv("NEWSFEED_DATA_DIR", raising=False)
    mp.delenv("NEWSFEED_REGISTRY", raising=False)
    _ok(["data", "generate", "--seed", str(FRESH_SEED)])
    _ok(["features", "apply"])
    _ok(["features", "materialize"])
    outputs = {
        "two_tower": _ok(["train", "two-tower"]),
        "ranker": _ok(["train", "ranker"]),
        "index": _ok(["index", "build"]),
    }
    yield home, outputs
    mp.undo()


def test_training_prints_model_and_baseline_metrics(trained):
    _, out = trained
    for scorer in ("two_tower", "random", "most_popular", "most_recent"):
        assert scorer in out["two_tower"]
    for scorer in ("ranker", "random", "most_popular", "most_recent", "oracle"):
        assert scorer in out["ranker"]
    assert "version 1 (alias challenger)" in out["ranker"]
    assert "recall@100 against exact search 1.000" in out["index"]


def test_runs_log_params_metrics_lineage_and_register_challengers(trained):
    home, _ = trained
    registry = Registry.open(home)
    for name in (TWO_TOWER, RANKER):
        version = registry.version(name, "challenger")
        run = registry.client.get_run(version.run_id)
        assert run.data.tags["lineage.feature_service"] in ("two_tower", "ranker")
        assert len(run.data.tags["lineage.data_fingerprint"]) == 16
        assert run.data.tags["lineage.code_version"]
        assert version.tags["data_fingerprint"] == run.data.tags["lineage.data_fingerprint"]
        assert "batch_size" in run.data.params and "val_loss" in run.data.metrics


def test_ranker_quality_at_demo_scale(trained):
    """Every head learns, and the engagement score orders feeds close to the oracle's ordering
    (the true probabilities) and well past the most-popular and random baselines."""
    home, _ = trained
    registry = Registry.open(home)
    m = registry.client.get_run(registry.version(RANKER, "challenger").run_id).data.metrics
    from newsfeed.models.ranker import HEADS

    for head in HEADS:
        assert m[f"auc_{head}"] > 0.6, (head, m[f"auc_{head}"])
    # Measured 0.902 of the oracle (seeds 7/8/9: 0.902/0.902/0.899); the bar leaves room for noise.
    assert m["ranker.ndcg_at_10"] >= 0.89 * m["oracle.ndcg_at_10"], (m["ranker.ndcg_at_10"], m["oracle.ndcg_at_10"])
    assert m["ranker.ndcg_at_10"] > m["most_popular.ndcg_at_10"] + 0.04
    assert m["ranker.ndcg_at_10"] > m["random.ndcg_at_10"] + 0.08
    assert m["ranker.ndcg_at_10_vs_oracle"] > m["most_popular.ndcg_at_10_vs_oracle"] + 0.05
    # The feeds' true expected engagement, hides and blocks counted: random 0, oracle 1.
    assert m["oracle.engagement_vs_oracle"] == pytest.approx(1.0)
    assert abs(m["random.engagement_vs_oracle"]) < 0.05
    assert m["ranker.engagement_vs_oracle_low"] > m["most_popular.engagement_vs_oracle_high"]
    assert m["ranker.engagement_vs_oracle_low"] < m["ranker.engagement_vs_oracle"] < m["ranker.engagement_vs_oracle_high"]
    # The same of what users really did (any data): the oracle knows probabilities, not outcomes.
    assert m["ranker.engagement_vs_best_low"] > m["most_popular.engagement_vs_best_high"]
    assert m["ranker.engagement_vs_best"] < m["oracle.engagement_vs_best"] < 1.0
    # The most-popular baseline was tuned on the validation period, its grid logged.
    from newsfeed.models.evaluation import POPULARITY_PRIORS

    assert m["tuning.most_popular_prior_impressions"] in POPULARITY_PRIORS


def test_two_tower_retrieval_is_measured_on_the_serving_corpus_beside_tuned_baselines(trained):
    """Each test request is a query over the posts serving's ANN source searches at that time;
    the two-tower finds more than chance beyond noise, of what users engaged with and of the
    oracle's feed. On this data it does not beat popular posts (docs/models.md): its
    normalised dot product cannot carry a post's own quality, so popular and fresh posts
    are candidate sources of their own in serving."""
    home, _ = trained
    registry = Registry.open(home)
    m = registry.client.get_run(registry.version(TWO_TOWER, "challenger").run_id).data.metrics
    assert m["two_tower.recall_at_500_low"] > m["random.recall_at_500_high"], m
    assert m["two_tower.recall_at_100"] > m["random.recall_at_100"], m
    for k in (50, 100, 500):
        assert m[f"two_tower.oracle_recall_at_{k}_low"] > m[f"random.oracle_recall_at_{k}_high"], (k, m)
        assert m[f"oracle.oracle_recall_at_{k}"] == pytest.approx(1.0)
    for scorer in ("two_tower", "random", "most_popular", "most_recent", "oracle"):
        assert m[f"{scorer}.recall_at_50"] <= m[f"{scorer}.recall_at_100"] <= m[f"{scorer}.recall_at_500"]
    # Pairs no retriever can return are counted apart, not in the denominator.
    assert m["corpus.unretrievable_shown_before"] > 0 and m["corpus.unretrievable_older_than_horizon"] > 0
    assert 0 < m["corpus.unretrievable_share"] < 0.5
    from newsfeed.models.evaluation import POPULARITY_HALF_LIVES_DAYS

    assert m["tuning.most_popular_half_life_days"] in POPULARITY_HALF_LIVES_DAYS


def test_promote_list_and_evaluate_by_alias(trained):
    home, _ = trained
    assert "champion -> version 1" in _ok(["models", "promote", "ranker"])
    _ok(["models", "promote", "two-tower", "--version", "1"])
    listing = _ok(["models", "list"])
    assert "two-tower" in listing and "ranker" in listing and "champion" in listing
    registry = Registry.open(home)
    assert registry.aliases(RANKER) == registry.aliases(TWO_TOWER) == {"challenger": "1", "champion": "1"}
    evaluated = _ok(["evaluate", "--model", "champion"])
    assert "newsfeed-ranker v1" in evaluated and "oracle" in evaluated
    bad = runner.invoke(app, ["models", "promote", "ranker", "--version", "99"])
    assert bad.exit_code == 1 and "no version '99'" in bad.output


def test_gate_passes_a_retrain_under_another_seed_and_rejects_worse_rankers(trained):
    """Every check paired on the same feeds and requests: an A/A retrain of both models is
    noise (of the users drawn and of training), an under-trained ranker and a wrong weight
    table are losses beyond it."""
    from newsfeed.features.store import open_store
    from newsfeed.gate import decide
    from newsfeed.models import registered, runs
    from newsfeed.scoring import load_weights

    home, _ = trained
    for model in ("ranker", "two-tower"):
        _ok(["models", "promote", model, "--version", "1"])
    registry, store = Registry.open(home), open_store(home)
    data_dir = home / "data"
    champion_ranker, _, _ = registered.load_registered(registry, RANKER, "champion")

    def gate(challenger: runs.Challenger, metrics: dict):
        found = runs.champion_metrics(home, data_dir, store, registry, challenger=challenger)
        champions = {name: entry["metrics"] for name, entry in found.items()}
        return decide({TWO_TOWER: champions[TWO_TOWER], **metrics}, champions,
                      paired={name: entry.get("paired", {}) for name, entry in found.items()})

    def retrain(**update):
        train = runs.RANKER_TRAINING.model_copy(update=update)
        return runs.train_ranker(home, data_dir, store, registry, train=train, register=False, show_progress=False)

    ranker, two_tower = retrain(seed=8), runs.train_two_tower(
        home, data_dir, store, registry, train=runs.TWO_TOWER_TRAINING.model_copy(update={"seed": 8}),
        register=False, show_progress=False)
    a_a = gate(runs.Challenger(ranker.model, load_weights(), two_tower.model),
               {TWO_TOWER: two_tower.metrics, RANKER: ranker.metrics})
    assert a_a.passed, a_a.message()
    assert all(c.paired is not None for c in a_a.checks), a_a.message()  # guardrails too
    # Clearly under-trained: one epoch at a tenth of the learning rate. (One epoch at the full
    # rate without refit lost 0.097 on seed 7's data and 0.055 on this seed's: about the
    # tolerance, which training noise sets; see newsfeed/gate.py.)
    short = retrain(epochs=1, learning_rate=runs.RANKER_TRAINING.learning_rate / 10)
    one_epoch = gate(runs.Challenger(short.model, load_weights()), {RANKER: short.metrics})
    assert not one_epoch.passed and any(c.rule.primary for c in one_epoch.failures), one_epoch.message()
    wrong = {**load_weights(), "hide": 20.0, "block": 50.0}  # rewards what users hate
    champion_metrics = runs.champion_metrics(home, data_dir, store, registry)[RANKER]["metrics"]
    wrong_table = gate(runs.Challenger(champion_ranker, wrong), {RANKER: champion_metrics})
    [primary] = [c for c in wrong_table.checks if c.rule.primary]
    assert not primary.passed and primary.paired["high"] < -0.5, wrong_table.message()


LOAD_AND_SCORE = """
import json, sys
import numpy as np, pandas as pd
from newsfeed.registry import Registry
from newsfeed.models.registered import load_registered, load_index
home, frame_path, out = sys.argv[1:4]
registry = Registry.open(home)
ranker, weights, _ = load_registered(registry, "newsfeed-ranker", "challenger")
scores = ranker.predict(pd.read_parquet(frame_path))["p_click"].to_numpy()
index, version = load_index(registry, "challenger")
_, neighbours = index.search(np.eye(index.dim, dtype=np.float32)[:4], 10)
json.dump({"scores": scores.tolist(), "neighbours": neighbours.tolist(), "weights": weights}, open(out, "w"))
"""


def test_registered_models_and_index_load_by_alias_in_a_fresh_process(trained, tmp_path):
    home, _ = trained
    registry = Registry.open(home)
    from newsfeed.models.registered import load_index, load_registered

    frame = next(p for p in (home / "training").glob("ranker-*.parquet"))
    rows = pd.read_parquet(frame).sample(200, random_state=0)
    rows_path = tmp_path / "rows.parquet"
    rows.to_parquet(rows_path)
    out = tmp_path / "out.json"
    subprocess.run([sys.executable, "-c", LOAD_AND_SCORE, str(home), str(rows_path), str(out)], check=True)
    fresh = json.loads(out.read_text())
    ranker, weights, _ = load_registered(registry, RANKER, "challenger")
    assert np.allclose(fresh["scores"], ranker.predict(rows)["p_click"].to_numpy(), atol=1e-6)
    assert fresh["weights"] == weights and weights["block"] == -50
    index, _ = load_index(registry, "challenger")
    _, neighbours = index.search(np.eye(index.dim, dtype=np.float32)[:4], 10)
    assert fresh["neighbours"] == neighbours.tolist()


def test_an_index_never_pairs_with_another_model_version(trained):
    home, _ = trained
    registry = Registry.open(home)
    from newsfeed.models.registered import load_index

    version = registry.version(TWO_TOWER, "challenger")
    index_run = version.tags["index_run_id"]
    # A second two-tower version with no index of its own: the first one's index is not lent to it.
    registered = registry.client.create_model_version(TWO_TOWER, version.source, version.run_id)
    registry.client.set_model_version_tag(TWO_TOWER, registered.version, "index_run_id", index_run)
    with pytest.raises(RegistryError, match="was built by version"):
        load_index(registry, registered.version)


@pytest.fixture()
def postgres_registry(monkeypatch):
    """A fresh PostgreSQL database for MLflow's production backend, dropped afterwards."""
    import psycopg2

    name = f"nftest_mlflow_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {name}")
    monkeypatch.setenv("NEWSFEED_MLFLOW_URI", f"postgresql://postgres@127.0.0.1:5432/{name}")
    yield name
    admin.cursor().execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()


def test_production_registry_on_postgres_registers_and_loads_back(trained, postgres_registry, tmp_path):
    home, _ = trained
    out = _ok(["train", "ranker", "--epochs", "1", "--registry", "production"])
    assert "version 1 (alias challenger)" in out
    registry = Registry.open(home, "production")
    assert registry.tracking_uri.endswith(postgres_registry)
    from newsfeed.models.registered import load_registered

    model, weights, version = load_registered(registry, RANKER, "challenger")
    assert version.tags["feature_service"] == "ranker" and weights["share"] == 20
    frame = next(p for p in (home / "training").glob("ranker-*.parquet"))
    rows = pd.read_parquet(frame).head(50)
    assert model.predict(rows)["p_click"].between(0, 1).all()
    # The embedded registry is untouched: still one ranker version there.
    assert [str(v.version) for v in Registry.open(home).versions(RANKER)] == ["1"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_package_builds_a_bento_that_serves_the_registered_ranker(trained, tmp_path):
    """`newsfeed package` as a user runs it; then the Bento itself is served by `bentoml serve`
    and must score like the registered model, honour weight overrides and refuse bad input."""
    import os
    import time
    import urllib.request
    from pathlib import Path

    home, _ = trained
    env = {**os.environ, "NEWSFEED_HOME": str(home), "BENTOML_HOME": str(tmp_path / "bentoml")}
    bin_dir = Path(sys.executable).parent
    done = subprocess.run([str(bin_dir / "newsfeed"), "package", "--model", "challenger", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "newsfeed-ranker version 1" in done.stdout
    containerfile = (tmp_path / "out" / "Containerfile").read_text()
    assert "FROM python:3.11" in containerfile and "requirements.txt" in containerfile
    import re

    tag = re.search(r"built Bento newsfeed-ranker:(\w+)", done.stdout).group(1)
    bento_dir = tmp_path / "bentoml" / "bentos" / "newsfeed-ranker" / tag
    assert "torch==2.13.0" in (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "mlflow_version: '1'" in (bento_dir / "bento.yaml").read_text()

    port = _free_port()
    server = subprocess.Popen([str(bin_dir / "bentoml"), "serve", f"newsfeed-ranker:{tag}",
                               "--port", str(port), "--host", "127.0.0.1"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the Bento did not become ready"
                time.sleep(0.5)
        frame = next(p for p in (home / "training").glob("ranker-*.parquet"))
        rows = pd.read_parquet(frame).sample(20, random_state=1)
        body = json.loads(rows.to_json(orient="records"))
        url = f"http://127.0.0.1:{port}/score"
        status, scored = _post(url, {"rows": body})
        assert status == 200, scored
        registry = Registry.open(home)
        from newsfeed.models.registered import load_registered
        from newsfeed.scoring import engagement_score

        model, weights, _ = load_registered(registry, RANKER, "challenger")
        expected = model.predict(rows)
        assert np.allclose([r["p_click"] for r in scored], expected["p_click"], atol=1e-5)
        assert np.allclose([r["engagement"] for r in scored], engagement_score(expected, weights), atol=1e-4)
        # An experiment arm's weights override the registered table for that request only.
        status, shared = _post(url, {"rows": body, "weights": {"share": 200}})
        assert status == 200
        assert np.allclose([r["engagement"] for r in shared],
                           engagement_score(expected, {**weights, "share": 200}), atol=1e-4)
        status, error = _post(url, {"rows": body, "weights": {"love": 3}})
        assert status == 400 and "love" in error
        status, error = _post(url, {"rows": [{"user_id": 1, "post_id": 2}]})
        assert status == 400 and "lacks columns" in error
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
