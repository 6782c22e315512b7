"""The pipeline's distill step: a pre-ranker distilled from a registered ranker version on the
lists serving would hand it, judged on other users, and registered with that version.

The service opens the home as a replica would (its window slid, at its clock's now) and an
arm names the new two-tower and ranker versions. The student learns from ``users`` users'
lists (their merged candidates plus random unseen posts, scored by the ranker) and is judged
on a third as many others: the share of the ranker's top 10 that a cut of every unseen post
keeps, the student's beside the two-tower's, and each cut's cost. It is logged as a run of
``EXPERIMENT`` and the ranker version is tagged with that run (``registry.PRERANK_TAG``):
replicas pick it up with the version (``ModelCache``), arms use it with
``sources.prerank: distilled``.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from newsfeed.feed import distilled
from newsfeed.feed.arms import Arm
from newsfeed.feed.prerank_eval import Judge

EXPERIMENT = "newsfeed-prerank-distill"
TOP = 10
POOL = "every unseen post"  # the list the figures come from (prerank_eval.Judge.compare)
EXTRA = 300  # random unseen posts added to each training list
DISTILL = distilled.DistillConfig(epochs=10)


@dataclass
class DistillResult:
    ranker_version: str
    run_id: str
    train_users: int
    test_users: int
    kept: dict[str, dict[str, float]]  # cut -> budget -> share of the ranker's top 10 kept
    ms: dict[str, float]  # cut (and "ranker") -> median ms per request
    seconds: dict[str, float]  # lists, distill, judge


def split_users(users: np.ndarray, train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``train`` users to learn from (at most 3/4 of them) and a third as many others to judge on."""
    shuffled = np.random.default_rng(seed).permutation(users)
    n_train = min(train, len(users) * 3 // 4)
    n_test = min(max(train // 3, 10), len(users) - n_train)
    return np.sort(shuffled[:n_train]), np.sort(shuffled[n_train:n_train + n_test])


def distill_registered(service, registry, two_tower: str, ranker: str, users: int = 300, seed: int = 0,
                       config: distilled.DistillConfig = DISTILL) -> DistillResult:
    """Distil a pre-ranker from ranker version ``ranker`` (served beside two-tower ``two_tower``)
    on ``service``'s home, judge it, and register it with the version."""
    import mlflow

    from newsfeed.registry import PRERANK_TAG, RANKER

    t0 = time.perf_counter()
    service.slide_window()
    arm = Arm(name="distill", share=100, two_tower=two_tower, ranker=ranker)
    _, versions, notes = service.pipeline(arm)
    if notes:  # the champions would serve in its place: not the ranker to distil from
        raise RuntimeError("; ".join(notes))
    judge = Judge.of(service, arm)
    train, test = split_users(judge.users(), users, seed)
    if len(train) < 10 or len(test) < 10:
        raise ValueError(f"too few users to distil a pre-ranker from: {len(judge.users())} (need 14 or more)")
    lists = [judge.teacher_list(int(u), extra=EXTRA, seed=seed + int(u)) for u in train]
    t1 = time.perf_counter()
    student = distilled.distill(judge.fast, lists, config)
    t2 = time.perf_counter()
    budgets = sorted({50, judge.prerank.budget})
    report = judge.compare(distilled.DistilledPreRanker(student, judge.fast), test, budgets, TOP)
    t3 = time.perf_counter()
    pool = report["pools"][POOL]
    kept = {cut: {b: v["kept"] for b, v in row["kept"].items()} for cut, row in pool["cuts"].items()}
    ms = {**{cut: row["ms"] for cut, row in pool["cuts"].items()}, "ranker": pool["ranker_ms"]}
    seconds = {"lists": t1 - t0, "distill": t2 - t1, "judge": t3 - t2}
    version = versions["ranker"]
    with mlflow.start_run(experiment_id=registry.experiment_id(EXPERIMENT)) as run:
        mlflow.set_tags({"model_name": RANKER, "model_version": version,
                         "two_tower_version": versions["two_tower"]})
        mlflow.log_params({"train_users": len(train), "test_users": len(test), "extra": EXTRA, "top": TOP,
                           **{f"distill.{k}": v for k, v in asdict(config).items()}})
        mlflow.log_metrics({f"kept_at_{b}.{cut.replace('-', '_')}": v for cut, row in kept.items()
                            for b, v in row.items()})
        mlflow.log_metrics({f"ms.{cut.replace('-', '_')}": v for cut, v in ms.items()})
        mlflow.log_metrics({f"seconds.{k}": v for k, v in seconds.items()})
        mlflow.log_metric("posts_per_user", pool["posts_per_user"])
        mlflow.log_dict(report, "prerank.json")
        with tempfile.TemporaryDirectory() as tmp:
            mlflow.log_artifacts(str(distilled.save(student, Path(tmp) / "prerank")), "prerank")
    registry.client.set_model_version_tag(RANKER, version, PRERANK_TAG, run.info.run_id)
    return DistillResult(version, run.info.run_id, len(train), len(test), kept, ms, seconds)
