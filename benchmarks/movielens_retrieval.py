"""Two-tower retrieval on real MovieLens 100K next to most-popular, ALS and BPR, in one run.

Protocol (issue 4): per user, the last 20% of their ratings by time are the test set;
relevant = a test rating >= 4; every film is ranked, films the user rated in training are
excluded; Recall@10 and NDCG@10 averaged over users with a relevant film.

Every method learns from the same training ratings (any rating is an implicit positive).
The two-tower model is the product's own (``newsfeed.models.two_tower``), with its
training loop; its inputs are built from the canonical tables the MovieLens adapter
writes, with the product's feature functions: the user tower reads the profile and the
films rated before (the ``user_history`` feature, here as of each rating rather than
daily snapshots: a MovieLens user often rates everything in one sitting, which a daily
snapshot would hide); the post tower reads the title's MiniLM embedding, genres and id.
The last 10% of each user's training ratings are its early-stopping validation set.

Baselines get the same validation split (issue 13): each setting of a small grid (``GRIDS``)
learns from the training ratings and is scored by Recall@10 on the validation ratings; the
best then learns from training + validation, as every baseline does, and is tested. The
two-tower's one setting picks its epoch count on the same validation ratings.

    python benchmarks/movielens_retrieval.py [--data ../shared/datasets/movielens-100k]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "movielens-100k"
RESULTS = ROOT / "benchmarks" / "results" / "movielens_retrieval.json"
KS = (10,)


def per_user_split(impressions: pd.DataFrame, test_fraction: float = 0.2, val_fraction: float = 0.1) -> pd.Series:
    """'train' / 'val' / 'test' per rating: each user's last ``test_fraction`` by time is test,
    the last ``val_fraction`` of what remains is validation."""
    frame = impressions.sort_values(["user_id", "ts", "impression_id"], kind="stable")
    rank = frame.groupby("user_id").cumcount().to_numpy()
    n = frame.groupby("user_id")["user_id"].transform("size").to_numpy()
    n_test = np.maximum(1, np.round(n * test_fraction)).astype(int)
    n_train = n - n_test
    n_val = np.round(n_train * val_fraction).astype(int)
    label = np.where(rank >= n_train, "test", np.where(rank >= n_train - n_val, "val", "train"))
    return pd.Series(label, index=frame.index).reindex(impressions.index)


def histories(frame: pd.DataFrame, length: int) -> list[list[int]]:
    """For each rating (rows sorted by user, then time): the user's previous ``length`` films, newest first."""
    users, posts = frame["user_id"].to_numpy(), frame["post_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    first = np.repeat(starts, np.diff(np.r_[starts, len(users)]))
    return [posts[max(f, j - length):j][::-1].tolist() for j, f in enumerate(first)]


def feature_frames(tables: dict, embed_cache: Path | None):
    """(user features by user_id, post features by post_id) with Feast's ``view__feature`` names."""
    from newsfeed.features import jobs

    users = jobs.user_profile(tables["users"]).drop(columns="event_timestamp").set_index("user_id")
    users.columns = [f"user_profile__{c}" for c in users.columns]
    posts = jobs.post_content(tables["posts"], jobs.topic_vocabulary(tables["posts"]), embed_cache)
    posts = posts.drop(columns="event_timestamp").set_index("post_id")
    posts.columns = [f"post_content__{c}" for c in posts.columns]
    posts["author_id"] = posts["post_content__written_by"]
    return users, posts


def model_frame(pairs: pd.DataFrame, users: pd.DataFrame, posts: pd.DataFrame, history: list[list[int]]) -> pd.DataFrame:
    frame = pd.concat([pairs[["user_id", "post_id"]].reset_index(drop=True),
                       users.reindex(pairs["user_id"].to_numpy()).reset_index(drop=True),
                       posts.reindex(pairs["post_id"].to_numpy()).reset_index(drop=True)], axis=1)
    frame["user_history__recent_post_ids"] = history
    return frame


def train_two_tower(ratings: pd.DataFrame, users: pd.DataFrame, posts: pd.DataFrame, config, train,
                    history_length: int):
    """(model, history): trained on the training ratings, early-stopped on the validation ones."""
    from newsfeed.models.training import fit, seed_everything
    from newsfeed.models.two_tower import TwoTower, full_corpus_recall, in_batch_loss, sampling_log_q, training_batch

    seen = ratings[ratings["split"] != "test"].sort_values(["user_id", "ts", "impression_id"], kind="stable")
    history = histories(seen, history_length)
    frame = model_frame(seen, users, posts, history)
    frame["split"] = seen["split"].to_numpy()
    fit_rows, val_rows = frame[frame["split"] == "train"], frame[frame["split"] == "val"]
    seed_everything(train.seed)
    model = TwoTower.from_frame(fit_rows, config)
    val_batch = training_batch(model, val_rows, sampling_log_q(val_rows["post_id"].to_numpy()))
    history_log = fit(model, in_batch_loss,
                      training_batch(model, fit_rows, sampling_log_q(fit_rows["post_id"].to_numpy())), val_batch,
                      train, "two-tower", show_progress=False, val_metric=lambda m: full_corpus_recall(m, val_batch))
    return model, history_log


def two_tower_scores(model, learned: pd.DataFrame, users: pd.DataFrame, posts: pd.DataFrame, eval_users: np.ndarray,
                     item_ids: np.ndarray, history_length: int) -> np.ndarray:
    """(users, films): each user embedded from the films rated in ``learned`` (their history then)."""
    learned = learned.sort_values(["user_id", "ts", "impression_id"], kind="stable")
    last = learned.groupby("user_id")["post_id"].apply(lambda s: s.to_numpy()[::-1][:history_length].tolist())
    user_frame = users.reindex(eval_users).reset_index().rename(columns={"index": "user_id"})
    user_frame["user_history__recent_post_ids"] = [last.get(u, []) for u in eval_users]
    post_frame = posts.reindex(item_ids).reset_index().rename(columns={"index": "post_id"})
    return model.embed_users(user_frame) @ model.embed_posts(post_frame).T


TWO_TOWER_GRID = {"post_bias": (False, True), "logq_correction": (True, False),
                  "history_pooling": ("mean", "position", "attention")}
"""The two-tower's grid, searched on the validation ratings like the baselines': a per-film
bias in the score (what most people like), the log-Q correction (which removes popularity
from what in-batch negatives teach), and how the user tower pools the films rated before,
newest first (their mean, a learned weight per place, or one self-attention layer)."""


def config(**settings):
    """The product's two-tower on MovieLens's columns: a film is old news to nobody, so its id
    is trained every step (no id dropout) and its age is no penalty (no recency term); the
    user is their profile and the films they rated."""
    from newsfeed.models.two_tower import TwoTowerConfig

    return TwoTowerConfig(
        user_inputs=["user_profile__age_bucket", "user_profile__gender", "user_history__recent_post_ids"],
        post_inputs=["post_content__topic_id", "post_content__hashtag_buckets", "post_content__text_embedding"],
        post_ids=["post_id"], id_dropout=0.0, dropout=0.2, recency=False, **settings)


def interaction_matrix(train: pd.DataFrame, user_index: pd.Index, item_index: pd.Index):
    from scipy.sparse import csr_matrix

    rows, cols = user_index.get_indexer(train["user_id"]), item_index.get_indexer(train["post_id"])
    return csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(user_index), len(item_index)))


def factor_scores(model, matrix) -> np.ndarray:
    model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors) @ np.asarray(model.item_factors).T


GRIDS = {
    "most_popular": {"half_life_days": (7, 30, 90, 0), "counts": ("ratings", "likes")},
    "als": {"factors": (16, 32, 64), "regularization": (0.2, 1.0, 5.0), "alpha": (0.5, 1.0, 2.0)},
    "bpr": {"factors": (32, 64, 128, 256), "learning_rate": (0.001, 0.003, 0.01), "regularization": (0.0001, 0.001, 0.01)},
}
"""Each baseline's grid, searched on the validation ratings. Most popular: how fast a rating's
weight halves with its age at the newest rating it learns from (0: never), and whether every
rating counts or only likes (>= 4). ALS and BPR: a first grid (ALS factors 32-128,
regularization 0.01-0.2, alpha 1-5; BPR factors 32-128, learning rate 0.01-0.05,
regularization 0.001-0.01) was widened where its best setting sat on an edge. Fixed: ALS 20
iterations, BPR 200."""
DAY_NS = 86_400 * 10**9


def popularity(learn: pd.DataFrame, item_index: pd.Index, half_life_days: float, counts: str) -> np.ndarray:
    """Per film: its ratings (or likes) in ``learn``, each weighted 2^-(age / half-life)."""
    rows = learn if counts == "ratings" else learn[learn["like"] == 1]
    ns = pd.to_datetime(rows["ts"], utc=True).astype("datetime64[ns, UTC]").array.asi8
    age_days = (ns.max() - ns) / DAY_NS if len(ns) else ns
    weight = np.exp2(-age_days / half_life_days) if half_life_days else np.ones(len(rows))
    return np.bincount(item_index.get_indexer(rows["post_id"]), weight, minlength=len(item_index))


def factor_model(method: str, seed: int, **params):
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking

    if method == "als":
        return AlternatingLeastSquares(iterations=20, random_state=seed, **params)
    return BayesianPersonalizedRanking(iterations=200, random_state=seed, **params)


@dataclass
class Judged:
    """What a scorer learns from and is judged on: the ratings it may learn from (and their
    interaction matrix), each user's films to exclude (rated there) and to find (rated >= 4 later)."""

    learn: pd.DataFrame
    matrix: object
    item_index: pd.Index
    seen: list[np.ndarray]
    relevant: list[np.ndarray]


def judged(learn: pd.DataFrame, later: pd.DataFrame, user_index: pd.Index, item_index: pd.Index) -> Judged:
    empty = np.array([], np.int64)
    relevant_by_user = later[later["like"] == 1].groupby("user_id")["post_id"].unique()
    seen_by_user = learn.groupby("user_id")["post_id"].unique()
    return Judged(learn, interaction_matrix(learn, user_index, item_index), item_index,
                  [np.asarray(seen_by_user.get(u, empty), np.int64) for u in user_index],
                  [np.asarray(relevant_by_user.get(u, empty), np.int64) for u in user_index])


def baseline_scores(method: str, split: Judged, seed: int, **params) -> np.ndarray:
    """(users, films) scores of a baseline learning from ``split``'s ratings with ``params``."""
    if method == "most_popular":
        # Ties broken by a tiny random term so equal counts do not favour low ids.
        jitter = np.random.default_rng(seed).random(len(split.item_index)) * 1e-6
        return np.broadcast_to(popularity(split.learn, split.item_index, **params) + jitter,
                               (len(split.seen), len(split.item_index)))
    return factor_scores(factor_model(method, seed, **params), split.matrix)


def accuracy(scores: np.ndarray, split: Judged, item_ids: np.ndarray) -> dict[str, float]:
    from newsfeed import metrics
    from newsfeed.models.evaluation import top_k

    ranked = top_k(np.asarray(scores), split.seen, item_ids, max(KS))
    return {"recall@10": metrics.recall_at_k(ranked, split.relevant, KS)[10],
            "ndcg@10": metrics.ndcg_of_ranked(ranked, split.relevant, 10)}


def tune(method: str, validation: Judged, item_ids: np.ndarray, seed: int) -> tuple[dict, list[dict]]:
    """(best setting, every setting with its validation Recall@10 and NDCG@10)."""
    names, values = zip(*GRIDS[method].items())
    tried = []
    for combination in itertools.product(*values):
        params = dict(zip(names, combination))
        scores = baseline_scores(method, validation, seed, **params)
        tried.append({**params, **{f"val_{k}": v for k, v in accuracy(scores, validation, item_ids).items()}})
    best = max(tried, key=lambda row: row["val_recall@10"])
    return {name: best[name] for name in names}, tried


def run(data: Path, epochs: int = 30, history_length: int = 50, seed: int = 7, embed_cache: Path | None = None,
        two_tower_grid: dict[str, tuple] = TWO_TOWER_GRID) -> dict:
    """Every method on the same split; the two-tower tries ``two_tower_grid`` (each setting
    trained in full: the grid is most of the run's time)."""
    from threadpoolctl import threadpool_limits

    from newsfeed.data.adapters import import_dataset
    from newsfeed.models.training import TrainConfig

    tables = import_dataset("movielens", data)
    ratings = tables["impressions"].copy()
    ratings["split"] = per_user_split(ratings)
    train_all = ratings[ratings["split"] != "test"]  # what the baselines learn from
    user_index = pd.Index(np.sort(ratings["user_id"].unique()))
    item_index = pd.Index(np.sort(tables["posts"]["post_id"].unique()))
    item_ids = item_index.to_numpy(np.int64)
    test = judged(train_all, ratings[ratings["split"] == "test"], user_index, item_index)
    validation = judged(ratings[ratings["split"] == "train"], ratings[ratings["split"] == "val"],
                        user_index, item_index)

    scorers: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    settings: dict[str, dict] = {}
    grids: dict[str, list[dict]] = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        scorers[name] = fn()
        seconds[name] = time.perf_counter() - t0

    with threadpool_limits(1, "blas"):  # implicit's own threads; BLAS threads on top only contend
        for method in GRIDS:
            def tuned(method=method):
                settings[method], grids[method] = tune(method, validation, item_ids, seed)
                return baseline_scores(method, test, seed, **settings[method])
            timed(method, tuned)
    users, posts = feature_frames(tables, embed_cache)
    train = TrainConfig(epochs=epochs, batch_size=512, learning_rate=1e-3, patience=2, seed=seed)
    logs = {}

    def two_tower():
        """Every setting of the grid trained and scored on the validation ratings; the best one's
        model then scores the test users, embedded from everything they rated before it."""
        names, values = zip(*two_tower_grid.items())
        tried, models = [], []
        for combination in itertools.product(*values):
            params = dict(zip(names, combination))
            model, log = train_two_tower(ratings, users, posts, config(history_length=history_length, **params), train,
                                         history_length)
            scores = two_tower_scores(model, ratings[ratings["split"] == "train"], users, posts,
                                      user_index.to_numpy(), item_ids, history_length)
            tried.append({**params, **{f"val_{k}": v for k, v in accuracy(scores, validation, item_ids).items()},
                          "epochs": len(log.val_loss)})
            models.append((model, log))
        best = max(range(len(tried)), key=lambda i: tried[i]["val_recall@10"])
        settings["two_tower"], grids["two_tower"] = {n: tried[best][n] for n in names if n in tried[best]}, tried
        model, logs["two_tower"] = models[best]
        return two_tower_scores(model, train_all, users, posts, user_index.to_numpy(), item_ids, history_length)
    timed("two_tower", two_tower)

    report = {name: {**accuracy(scores, test, item_ids), "seconds": seconds[name]} for name, scores in scorers.items()}
    return {
        "dataset": str(data), "users": len(user_index), "items": len(item_index),
        "train_ratings": len(train_all), "test_users_with_relevant": int(sum(len(r) > 0 for r in test.relevant)),
        "epochs_run": {n: len(h.val_loss) for n, h in logs.items()},
        "settings": settings, "grids": grids,
        "report": report,
        "two_tower_vs_als_recall": report["two_tower"]["recall@10"] / report["als"]["recall@10"],
    }


def shown(value) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--history", type=int, default=50, help="films in the user tower's history")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not (args.data / "u.data").exists():
        raise SystemExit(f"MovieLens 100K not found at {args.data} (../shared/datasets beside the repo)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console
    from rich.table import Table

    result = run(args.data, args.epochs, args.history)
    console = Console(width=150)
    for method, tried in result["grids"].items():
        grid = Table(title=f"{method}: its grid on the validation ratings (trained on the rest), best first")
        names = list({**GRIDS, "two_tower": TWO_TOWER_GRID}[method])
        for column in (*names, "val Recall@10", "val NDCG@10"):
            grid.add_column(column, justify="right")
        for row in sorted(tried, key=lambda r: -r["val_recall@10"]):
            grid.add_row(*(shown(row[n]) for n in names), f"{row['val_recall@10']:.4f}", f"{row['val_ndcg@10']:.4f}")
        console.print(grid)
    table = Table(title=f"MovieLens 100K, per-user temporal 80/20, relevant = rating >= 4 "
                        f"({result['test_users_with_relevant']} users)")
    for column in ("method", "setting (chosen on validation)", "Recall@10", "NDCG@10", "x ALS (recall)", "seconds"):
        table.add_column(column, justify="left" if column.startswith(("method", "setting")) else "right")
    als = result["report"]["als"]["recall@10"]
    epochs = result["epochs_run"]
    for name, row in result["report"].items():
        setting = ", ".join(f"{k} {shown(v)}" for k, v in result["settings"][name].items())
        if name in epochs:
            setting += f"{', ' if setting else ''}{epochs[name]} epochs run (patience 2)"
        table.add_row(name, setting, f"{row['recall@10']:.4f}", f"{row['ndcg@10']:.4f}",
                      f"{row['recall@10'] / als:.2f}", f"{row['seconds']:.1f}")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
