"""The two-tower model on real MovieLens 100K under the issue's protocol (per-user temporal
80/20, relevant = rating >= 4, seen films excluded), beside baselines trained in the same run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.shared_data]
BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "movielens_retrieval.py"


def test_two_tower_beats_popularity_and_bpr_on_movielens(shared_datasets):
    spec = importlib.util.spec_from_file_location("movielens_retrieval", BENCHMARK)
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    result = benchmark.run(shared_datasets / "movielens-100k", ablation=False)
    report = result["report"]
    assert result["users"] == 943 and result["items"] == 1682
    assert 75_000 < result["train_ratings"] < 85_000  # each user's last 20% held out
    # Measured: two-tower 0.140, ALS 0.140, BPR 0.087, most popular 0.073 (Recall@10).
    assert report["two_tower"]["recall@10"] > 1.4 * report["most_popular"]["recall@10"]
    assert report["two_tower"]["recall@10"] > 1.2 * report["bpr"]["recall@10"]
    assert report["two_tower"]["ndcg@10"] > report["most_popular"]["ndcg@10"]
    assert report["als"]["recall@10"] > report["most_popular"]["recall@10"]  # the baselines are real ones
