"""Each modelling choice the defaults make, measured without the test period (issue 13).

A backtest over the days before the test period: the last ``WINDOWS`` periods before it,
back to back, each as long as the usual split's test share of the data before it. For each
window, every variant is trained afresh on the data before the window (the usual temporal
split of that data: training days, validation days for early stopping) and scored on the
window. One window alone picks what suits its moment: on the simulator the last one sits
just after the users' interests drift, where the shortest memory wins, and that choice did
not carry to the days after it. So the windows' feeds (or requests) are pooled and every
variant is compared paired against the default on all of them, with intervals resampling
users; a variant replaces the default only when the gate passes it and it is better beyond
noise. The ranker is scored by the feeds' true expected engagement (``engagement_vs_oracle``),
the two-tower by Recall@500 over the serving corpus, the interest estimator by the feeds it
orders on its own. The test period is never read, so tests can assert on it, and on a
simulator seed no choice was made on.

    .venv/bin/python benchmarks/model_choices.py [--only interest|interest_in_ranker|post_counters|ranker|continual|two_tower]   # after `make bench-home`
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "model_choices.json"
WINDOWS = 3
"""How many choice windows the backtest scores (at the demo scale: about 1.7, 1.5 and 1.3 days;
on the simulator one after its interest drift, one across it, one before)."""


@dataclass
class Fold:
    """One backtest window: the data before its end, split as usual, its "test" part the window."""

    data: object  # ModelData of the impressions before ``end``
    end: pd.Timestamp

    @property
    def start(self) -> pd.Timestamp:
        return self.data.bounds.test_start

    def label(self) -> str:
        return f"{self.start:%m-%d %H:%M} to {self.end:%m-%d %H:%M}"


def folds(data, windows: int = WINDOWS) -> list[Fold]:
    """The ``windows`` periods before ``data``'s test period, latest first."""
    from newsfeed.models.datasets import ModelData, SplitConfig, boundaries

    out, end = [], data.bounds.test_start
    for _ in range(windows):
        kept = data.impressions[pd.to_datetime(data.impressions["ts"], utc=True) < end]
        bounds = boundaries(kept["ts"], SplitConfig())
        out.append(Fold(ModelData(kept, data.posts, data.users, bounds, {**data.lineage, "split": bounds.to_dict()}),
                        end))
        end = bounds.test_start
    return out


def fold_parts(frame: pd.DataFrame, fold: Fold) -> dict[str, pd.DataFrame]:
    """A joined training set's rows before the fold's end, as train / val / test (the window)."""
    from newsfeed.models import datasets

    frame = datasets.with_split(frame[pd.to_datetime(frame["event_timestamp"], utc=True) < fold.end], fold.data)
    return {name: frame[frame["split"] == name] for name in ("train", "val", "test")}


HALF_LIVES_DAYS = (0.3, 0.6, 1.25, 2.5, 5.0, 10.0)
"""The ranker's recency half-lives tried. Shorter ones (0.075, 0.15 days) were tried on one
window and collapsed (too few rows keep any weight; hide and block AUC fell below 0.6)."""


def ranker_variants():
    from newsfeed.models.ranker import REACTION_CHAIN, RankerConfig
    from newsfeed.models.settings import RANKER_TRAINING
    from newsfeed.scoring import load_weights

    def train(**update):
        return RANKER_TRAINING.model_copy(update=update)
    default = RANKER_TRAINING.recency_half_life_days
    return {
        f"default: MMoE, refit, {default:g}-day half-life, Platt-calibrated heads": (RankerConfig(), RANKER_TRAINING),
        "no refit": (RankerConfig(), train(refit=False)),
        "no recency weighting": (RankerConfig(), train(recency_half_life_days=None)),
        **{f"half-life {days:g} days": (RankerConfig(), train(recency_half_life_days=days))
           for days in HALF_LIVES_DAYS if days != default},
        "shared-bottom": (RankerConfig(architecture="shared-bottom"), RANKER_TRAINING),
        "DCN-v2 cross, 2 layers": (RankerConfig(cross_layers=2), RANKER_TRAINING),
        "no calibration": (RankerConfig(calibration="none"), RANKER_TRAINING),
        "nested reaction heads (ESMM)": (RankerConfig(nested=REACTION_CHAIN), RANKER_TRAINING),
        "distilled from 3 trainings": (RankerConfig(), train(teachers=3)),
        "distilled from 2 trainings": (RankerConfig(), train(teachers=2)),
        "early stopping on engagement": (RankerConfig(), train(early_stopping="engagement")),
        "loss weights by engagement weight": (RankerConfig(loss_weights={
            **{h: 1 + abs(w) / 10 for h, w in load_weights().items()}, "skip": 1.0, "dwell": 0.5}), RANKER_TRAINING),
        "wider (512, 256)": (RankerConfig(hidden=[512, 256]), RANKER_TRAINING),
        "learning rate 1e-3": (RankerConfig(), train(learning_rate=1e-3)),
        "learning rate 4e-3": (RankerConfig(), train(learning_rate=4e-3)),
        "learning rate 8e-3": (RankerConfig(), train(learning_rate=8e-3)),
        "dropout 0.3": (RankerConfig(dropout=0.3), RANKER_TRAINING),
        "no id embeddings": (RankerConfig(ids=[]), RANKER_TRAINING),
        "id dropout 0.8": (RankerConfig(id_dropout=0.8), RANKER_TRAINING),
    }


def two_tower_variants():
    from newsfeed.features import catalog
    from newsfeed.models.settings import TWO_TOWER_TRAINING
    from newsfeed.models.two_tower import USER_INPUTS, TwoTowerConfig

    every_user_feature = [f"{view}__{c}" for view in ("user_profile", "user_engagement", "user_history")
                          for c in catalog.TABLES[view].columns]
    return {
        "default: interests and history, post bias, recency, no log-Q, no refit": (TwoTowerConfig(),
                                                                                   TWO_TOWER_TRAINING),
        "refit": (TwoTowerConfig(), TWO_TOWER_TRAINING.model_copy(update={"refit": True})),
        "every user feature": (TwoTowerConfig(user_inputs=every_user_feature), TWO_TOWER_TRAINING),
        "history only": (TwoTowerConfig(user_inputs=[c for c in USER_INPUTS if c.startswith("user_history")]),
                         TWO_TOWER_TRAINING),
        "interest shares only (no rate)": (TwoTowerConfig(
            user_inputs=[c for c in USER_INPUTS if c != "user_engagement__topic_interest_rate"]), TWO_TOWER_TRAINING),
        "log-Q correction": (TwoTowerConfig(logq_correction=True), TWO_TOWER_TRAINING),
        "no post bias": (TwoTowerConfig(post_bias=False), TWO_TOWER_TRAINING),
        "no recency": (TwoTowerConfig(recency=False), TWO_TOWER_TRAINING),
        "the match alone, log-Q corrected (the earlier default)": (TwoTowerConfig(
            post_bias=False, recency=False, logq_correction=True), TWO_TOWER_TRAINING),
        "sequence: history pooled by a learned weight per place": (TwoTowerConfig(history_pooling="position"),
                                                                    TWO_TOWER_TRAINING),
        "sequence: history through one self-attention layer": (TwoTowerConfig(history_pooling="attention"),
                                                               TWO_TOWER_TRAINING),
        "mixed negatives: one uniformly drawn post per row beside the batch's": (
            TwoTowerConfig(mixed_negatives=True), TWO_TOWER_TRAINING),
        "mixed negatives, log-Q corrected for the mixture": (
            TwoTowerConfig(mixed_negatives=True, logq_correction=True), TWO_TOWER_TRAINING),
    }


def gate_against_default(metrics: dict, default_metrics: dict, paired: dict, model: str):
    """The promotion gate's decision on a variant against the default, paired, for one model."""
    from newsfeed.gate import decide
    from newsfeed.registry import RANKER, TWO_TOWER

    other = TWO_TOWER if model == RANKER else RANKER  # no champion: not compared
    return decide({model: metrics, other: {}}, {model: default_metrics}, paired={model: paired})


def chosen(rows: dict) -> str:
    """The default, unless some variant the gate passes is better beyond noise (the low end
    of its paired difference above zero): then the best of those. A gain inside the noise
    is no reason to change what every later figure rests on."""
    default = next(iter(rows))
    better = [name for name, row in rows.items() if row.get("gate", "pass") == "pass" and row["paired"]["low"] > 0]
    return max(better, key=lambda name: rows[name]["measure"]) if better else default


def variant_row(value, paired: dict, per_window: list[float], **extra) -> dict:
    """A variant's pooled measure (an Interval), its paired difference from the default
    (difference, low, high) and its measure on each window."""
    return {"measure": value.value, "low": value.low, "high": value.high,
            "paired": {k: paired[k] for k in ("difference", "low", "high")}, "windows": per_window, **extra}


def selected(variants: dict, wanted: list[str] | None) -> dict:
    """The default (first) and the variants whose name contains one of ``wanted`` (all: None)."""
    default = next(iter(variants))
    return {name: v for name, v in variants.items()
            if name == default or wanted is None or any(w.lower() in name.lower() for w in wanted)}


class RankerJudge:
    """Scores rankers on the pooled feeds of backtest windows by their true expected engagement,
    each paired against the first it scored (the default) and gated against it."""

    def __init__(self, parts: list[dict], data_dir: Path):
        from newsfeed.data.world import World
        from newsfeed.models import evaluation
        from newsfeed.scoring import load_weights

        self.weights, self.world = load_weights(), World.of_dataset(data_dir)
        self.feeds = pd.concat([p["test"] for p in parts], ignore_index=True)  # disjoint windows: ids stay unique
        self.groups = self.feeds["request_id"].to_numpy()
        self.oracle = evaluation.oracle_engagement(self.world, self.feeds, self.weights)
        self.window_of = np.repeat(np.arange(len(parts)), [len(p["test"]) for p in parts])
        self.primary = f"ranker.{evaluation.ENGAGEMENT}"
        self.default: dict | None = None

    def row(self, scores: list[np.ndarray], heads: list[pd.DataFrame], **extra) -> dict:
        """A variant's row from its engagement scores and head predictions, window by window."""
        from newsfeed import metrics as measures
        from newsfeed.data.world import examine_probability
        from newsfeed.models import evaluation, runs
        from newsfeed.registry import RANKER

        scores, heads = np.concatenate(scores), pd.concat(heads, ignore_index=True)
        report = {"heads": evaluation.head_metrics(self.feeds, heads),
                  "ranking": evaluation.ranking_report(self.feeds, {"ranker": scores, "oracle": self.oracle},
                                                       self.weights),
                  "tuning": {}}
        metrics = runs.ranker_metrics(report)
        self.default = self.default or {"scores": scores, "heads": heads, "metrics": metrics}
        paired = {**evaluation.paired_ranking(self.feeds, scores, self.default["scores"], self.weights, self.world),
                  **evaluation.paired_heads(self.feeds, heads, self.default["heads"])}
        decision = gate_against_default(metrics, self.default["metrics"], paired, RANKER)
        per_window = [measures.normalised_slate_value(self.groups[self.window_of == w], self.oracle[self.window_of == w],
                                                      scores[self.window_of == w], examine_probability).value
                      for w in range(self.window_of.max() + 1)]
        p = self.primary
        value = measures.Interval(metrics[p], metrics[f"{p}_low"], metrics[f"{p}_high"], len(self.feeds))
        return variant_row(value, paired[p], per_window, auc_hide=metrics["auc_hide"], auc_block=metrics["auc_block"],
                           gate="pass" if decision.passed else ", ".join(c.rule.metric for c in decision.failures),
                           **extra)


def progress_line(kind: str, name: str, row: dict) -> str:
    p = row["paired"]
    return (f"  {kind} {name}: {row['measure']:.4f} (windows {', '.join(f'{v:.3f}' for v in row['windows'])}), "
            f"vs default {p['difference']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}], gate {row['gate']} "
            f"({row['seconds']:.0f} s)")


def trained_row(judge: RankerJudge, parts: list[dict], config=None, train=None) -> dict:
    """A ranker (``config``, ``train``; default the defaults) trained on each window's rows
    before it and scored by ``judge`` on the windows' feeds, with its epochs and seconds."""
    from newsfeed.models import runs
    from newsfeed.models.ranker import RankerConfig
    from newsfeed.models.settings import RANKER_TRAINING
    from newsfeed.scoring import engagement_score

    t0 = time.perf_counter()
    scores, heads, epochs = [], [], []
    for fold in parts:
        model, history = runs.fit_ranker(config or RankerConfig(), train or RANKER_TRAINING, fold["train"],
                                         fold["val"], judge.weights, show_progress=False)
        scores.append(engagement_score(model.predict(fold["test"]), judge.weights))
        heads.append(model.predict(fold["test"], logged_position=True))
        epochs.append(history.best_epoch + 1)
    return judge.row(scores, heads, epochs="/".join(map(str, epochs)), seconds=time.perf_counter() - t0)


def choose_ranker(home: Path, data_dir: Path, store, data, console: Console, wanted: list[str] | None = None) -> dict:
    """Every ranker variant trained for each window, its feeds pooled, gated against the default."""
    from newsfeed.models import datasets

    frame = datasets.impression_set(home, store, data, "ranker")
    backtest = folds(data)
    parts = [fold_parts(frame, fold) for fold in backtest]
    judge = RankerJudge(parts, data_dir)
    rows = {}
    for name, (config, train) in selected(ranker_variants(), wanted).items():
        rows[name] = trained_row(judge, parts, config, train)
        console.print(progress_line("ranker", name, rows[name]))
    return {"windows": [fold.label() for fold in backtest], "rows": len(judge.feeds), "measure": judge.primary,
            "variants": rows, "chosen": chosen(rows)}


POST_SNAPSHOT_HOURS = (24, 6, 3, 1)
"""How often a post's reactions so far are snapshot offline (``catalog.POST_SNAPSHOT_HOURS``)."""


def feature_days(impressions: pd.DataFrame, events: pd.DataFrame) -> tuple[int, int]:
    """(origin, days) of the feature job's daily grid over these logs, as ``jobs.compute`` lays it."""
    from newsfeed.features import jobs

    activity = pd.to_datetime(pd.concat([impressions["ts"], events["ts"]]), utc=True).astype("datetime64[ns, UTC]")
    origin_ns = int(activity.array.asi8.min() // jobs.DAY_NS * jobs.DAY_NS)
    return origin_ns, int((activity.array.asi8.max() - origin_ns) // jobs.DAY_NS) + 1


def with_post_counters(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], period_hours: int) -> pd.DataFrame:
    """``frame`` with its post counters (``post_engagement__*``, ``post_engagement_live__*``)
    joined point-in-time from snapshots every ``period_hours``, as the feature job would make
    them: each row reads the latest snapshot stamped at or before its time, or none."""
    from newsfeed.features import catalog, jobs

    impressions, events = tables["impressions"], tables["events"]
    origin_ns, n_days = feature_days(impressions, events)
    out = frame.copy()
    out["_row"] = np.arange(len(out))
    out["_ts"] = pd.to_datetime(out[catalog.TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    out = out.sort_values("_ts", kind="stable")
    for view, table in zip(("post_engagement", "post_engagement_live"),
                           jobs.post_engagement(impressions, events, origin_ns, n_days, period_hours * jobs.HOUR_NS)):
        columns = [c for c in table.columns if c not in ("post_id", catalog.TIMESTAMP)]
        snapshots = table.rename(columns={c: f"{view}__{c}" for c in columns})
        snapshots["_ts"] = pd.to_datetime(snapshots.pop(catalog.TIMESTAMP), utc=True).astype("datetime64[ns, UTC]")
        out = pd.merge_asof(out.drop(columns=[f"{view}__{c}" for c in columns]), snapshots.sort_values("_ts"),
                            on="_ts", by="post_id", direction="backward", allow_exact_matches=True)
    return out.sort_values("_row").drop(columns=["_row", "_ts"]).set_index(frame.index)[frame.columns]


def choose_post_counters(home: Path, data_dir: Path, store, data, console: Console) -> dict:
    """How often post counters are snapshot offline for training: the default ranker trained
    with its post counters joined from snapshots every 24, 6, 3 or 1 hours, paired against the
    current setting. Every variant is scored on the windows with the freshest counters (the
    finest period), as serving reads them (kept current by pushed events): scored on its own
    period's counters, a coarser period would also be judged on staler information than
    serving has. A check first: at the current setting the join here must reproduce the
    feature store's values."""
    from newsfeed.data.io import read_dataset
    from newsfeed.features import catalog
    from newsfeed.models import datasets

    frame = datasets.impression_set(home, store, data, "ranker")
    tables = read_dataset(data_dir, ("impressions", "events"))
    counters = [c for c in frame.columns if c.startswith(("post_engagement__", "post_engagement_live__"))]
    rebuilt = with_post_counters(frame, tables, catalog.POST_SNAPSHOT_HOURS)
    pd.testing.assert_frame_equal(rebuilt[counters].astype("float64"), frame[counters].astype("float64"),
                                  check_dtype=False)
    backtest = folds(data)
    served = [fold_parts(with_post_counters(frame, tables, min(POST_SNAPSHOT_HOURS)), fold)["test"]
              for fold in backtest]
    judge = None
    rows = {}
    periods = (catalog.POST_SNAPSHOT_HOURS, *(h for h in POST_SNAPSHOT_HOURS if h != catalog.POST_SNAPSHOT_HOURS))
    for hours in periods:
        parts = [fold_parts(frame if hours == catalog.POST_SNAPSHOT_HOURS else with_post_counters(frame, tables, hours),
                            fold) for fold in backtest]
        parts = [{**part, "test": test} for part, test in zip(parts, served)]
        judge = judge or RankerJudge(parts, data_dir)
        name = f"post counters every {hours} h" + (" (the default)" if hours == catalog.POST_SNAPSHOT_HOURS else "")
        rows[name] = trained_row(judge, parts)
        console.print(progress_line("post counters", name, rows[name]))
    return {"windows": [fold.label() for fold in backtest], "rows": len(judge.feeds), "measure": judge.primary,
            "variants": rows, "chosen": chosen(rows)}


INTEREST_WITH_TREND = (8.0, 20.0, 0.25)
"""The best setting with the topics' trend on ``--only interest`` (half-life, prior, trend half-life)."""


def with_topic_interest(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], posts: pd.DataFrame,
                        setting: tuple) -> pd.DataFrame:
    """``frame`` with the user's topic-interest rate (the vector and the request feature read at
    the post's topic) as the feature job would make it with ``setting`` (half-life, prior,
    trend half-life): each row reads the snapshot of the day before its own, as the join does;
    rows the join found no snapshot for stay missing."""
    from newsfeed.features import catalog, jobs, request_time

    impressions, events = tables["impressions"], tables["events"]
    origin_ns, n_days = feature_days(impressions, events)
    vocabulary = jobs.topic_vocabulary(posts)
    post_topics = pd.Series(jobs.topic_ids(posts["topic"], vocabulary), index=posts["post_id"].to_numpy())
    user_ids, rate = jobs.topic_rates(impressions, events, post_topics, len(vocabulary), origin_ns, n_days, *setting)
    row_ns = pd.to_datetime(frame[catalog.TIMESTAMP], utc=True).astype("datetime64[ns, UTC]").array.asi8
    day = np.clip((row_ns - origin_ns) // jobs.DAY_NS, 0, n_days)
    vectors = rate[np.searchsorted(user_ids, frame["user_id"].to_numpy()).clip(max=len(user_ids) - 1), day]
    known = frame["user_engagement__topic_interest_rate"].notna().to_numpy()
    out = frame.copy()
    out["user_engagement__topic_interest_rate"] = pd.Series(
        [v if k else None for v, k in zip(vectors, known)], index=frame.index, dtype=object)
    out["request_features__topic_affinity_rate"] = request_time.topic_affinity(
        out["user_engagement__topic_interest_rate"], frame["post_content__topic_id"])
    return out


def choose_interest_in_ranker(home: Path, data_dir: Path, store, data, console: Console) -> dict:
    """topic_interest_rate's estimator as the ranker reads it: the default ranker trained and
    scored with the user's topic-interest rate as the current setting makes it and as the best
    setting with the topics' trend makes it, paired. A check first: at the current setting the
    rebuilt columns must reproduce the feature store's values."""
    from newsfeed.data.io import read_dataset
    from newsfeed.features import catalog
    from newsfeed.models import datasets

    frame = datasets.impression_set(home, store, data, "ranker")
    tables = read_dataset(data_dir, ("impressions", "events"))
    current = (catalog.INTEREST_HALF_LIFE_DAYS, catalog.INTEREST_PRIOR_IMPRESSIONS,
               catalog.INTEREST_TREND_HALF_LIFE_DAYS)
    rebuilt = with_topic_interest(frame, tables, data.posts, current)
    known = frame["user_engagement__topic_interest_rate"].notna().to_numpy()
    stacked = {name: np.stack(f["user_engagement__topic_interest_rate"].to_numpy()[known])
               for name, f in (("rebuilt", rebuilt), ("stored", frame))}
    np.testing.assert_allclose(stacked["rebuilt"], stacked["stored"], rtol=1e-5)
    np.testing.assert_allclose(rebuilt["request_features__topic_affinity_rate"].to_numpy(np.float64),
                               frame["request_features__topic_affinity_rate"].to_numpy(np.float64), rtol=1e-5)
    backtest = folds(data)
    judge, rows = None, {}
    for setting in (current, INTEREST_WITH_TREND):
        parts = [fold_parts(frame if setting == current else with_topic_interest(frame, tables, data.posts, setting),
                            fold) for fold in backtest]
        judge = judge or RankerJudge(parts, data_dir)
        name = interest_setting_name(*setting) + (" (the default)" if setting == current else "")
        rows[name] = trained_row(judge, parts)
        console.print(progress_line("interest in the ranker", name, rows[name]))
    return {"windows": [fold.label() for fold in backtest], "rows": len(judge.feeds), "measure": judge.primary,
            "variants": rows, "chosen": chosen(rows)}


FINE_TUNE_GRID = ((1, 2e-4), (3, 2e-4), (1, 5e-4), (2, 5e-4), (1, 1e-3), (2, 1e-3), (3, 1e-3), (1, 2e-3), (2, 2e-3),
                  (3, 2e-3), (1, 4e-3), (2, 4e-3))
"""Fine-tuning recipes tried: (passes over the days since, learning rate)."""


def continual_variants():
    """Fine-tuning recipes by name, the default (``RANKER_FINE_TUNING``) first."""
    from newsfeed.models.settings import RANKER_FINE_TUNING as default

    def name(epochs: int, rate: float) -> str:
        return f"fine-tuned: {epochs} pass{'es' if epochs > 1 else ''} at {rate:.0e}"
    grid = [g for g in FINE_TUNE_GRID if g != (default.epochs, default.learning_rate)]
    return {f"{name(default.epochs, default.learning_rate)} (the fine-tune default)": default,
            **{name(e, r): default.model_copy(update={"epochs": e, "learning_rate": r}) for e, r in grid}}


def choose_continual(home: Path, data_dir: Path, store, data, console: Console,
                     wanted: list[str] | None = None) -> dict:
    """Continual training against training afresh (``newsfeed.models.continual``). For each
    window, the ranker trained afresh on everything before it (the default recipe) is the
    default; the one trained afresh for the window after is the champion it replaces (trained
    through that window's start, a window's length of days ago), scored as it is, and
    fine-tuned on the days since by each recipe. "Fine-tuned in a chain" never restarts: the
    oldest champion fine-tuned window after window. Each row's seconds are its training
    time per window."""
    from newsfeed.models import continual, datasets, runs
    from newsfeed.models.ranker import RankerConfig
    from newsfeed.models.settings import RANKER_FINE_TUNING, RANKER_TRAINING
    from newsfeed.scoring import engagement_score

    frame = datasets.impression_set(home, store, data, "ranker")
    backtest = folds(data, WINDOWS + 1)  # the oldest only trains the first champion
    parts = [fold_parts(frame, fold) for fold in backtest]
    scored = range(WINDOWS)
    judge = RankerJudge(parts[:WINDOWS], data_dir)
    since = [parts[w + 1]["test"] for w in scored]  # the champion's days since: the window before

    def predictions(models) -> tuple[list, list]:
        return ([engagement_score(m.predict(parts[w]["test"]), judge.weights) for w, m in zip(scored, models)],
                [m.predict(parts[w]["test"], logged_position=True) for w, m in zip(scored, models)])

    fresh, fresh_seconds = [], []
    for w, fold in enumerate(parts):
        t0 = time.perf_counter()
        fresh.append(runs.fit_ranker(RankerConfig(), RANKER_TRAINING, fold["train"], fold["val"], judge.weights,
                                     show_progress=False)[0])
        fresh_seconds.append(time.perf_counter() - t0)
        console.print(f"  trained afresh for window {w + 1}: {fresh_seconds[-1]:.0f} s, "
                      f"{len(fold['train']) + len(fold['val']):,} rows")
    rows = {}

    def add(name: str, models, seconds: list[float], trained_rows: list[int]) -> None:
        rows[name] = judge.row(*predictions(models), seconds=float(np.mean(seconds)),
                               rows_trained=int(np.mean(trained_rows)))
        console.print(progress_line("continual", name, rows[name]))

    add("default: trained afresh", fresh[:WINDOWS], fresh_seconds[:WINDOWS],
        [len(parts[w]["train"]) + len(parts[w]["val"]) for w in scored])
    add("the champion as it is (no retraining)", fresh[1:], [0.0] * WINDOWS, [0] * WINDOWS)
    for name, recipe in selected(continual_variants(), wanted).items():
        models, seconds = [], []
        for w in scored:
            t0 = time.perf_counter()
            models.append(continual.fine_tune(fresh[w + 1], since[w], recipe, show_progress=False)[0])
            seconds.append(time.perf_counter() - t0)
        add(name, models, seconds, [len(s) for s in since])
    chain, seconds, model = [], [], fresh[WINDOWS]
    for w in reversed(scored):  # oldest window first: each fine-tune starts from the last
        t0 = time.perf_counter()
        model = continual.fine_tune(model, since[w], RANKER_FINE_TUNING, show_progress=False)[0]
        seconds.append(time.perf_counter() - t0)
        chain.insert(0, model)
    add(f"fine-tuned in a chain from window {WINDOWS + 1}'s champion, never afresh", chain, seconds,
        [len(s) for s in since])
    return {"windows": [fold.label() for fold in backtest[:WINDOWS]], "rows": len(judge.feeds),
            "measure": judge.primary, "variants": rows, "chosen": chosen(rows)}


def choose_two_tower(home: Path, store, data, console: Console, wanted: list[str] | None = None) -> dict:
    """Every two-tower variant trained for each window, its requests over the serving corpus
    pooled, gated against the default (its guardrail, Recall@500, paired)."""
    from newsfeed import metrics as measures
    from newsfeed.index import FRESHNESS_HORIZON_DAYS
    from newsfeed.models import datasets, evaluation, runs
    from newsfeed.models.two_tower import POST_VIEWS, USER_VIEWS, TwoTower, full_corpus_recall, in_batch_loss
    from newsfeed.registry import TWO_TOWER

    positives = datasets.impression_set(home, store, data, "two_tower", positives_only=True)
    backtest = folds(data)
    parts = [fold_parts(positives, fold) for fold in backtest]
    searches = [datasets.retrieval_set(home, store, fold.data, USER_VIEWS, POST_VIEWS, FRESHNESS_HORIZON_DAYS)
                for fold in backtest]
    users = np.concatenate([rs.queries.answerable_users for rs in searches])
    ks = (100, 500)
    measure = "two_tower.recall_at_500"
    rows, default = {}, None
    for name, (config, train) in selected(two_tower_variants(), wanted).items():
        t0 = time.perf_counter()
        hits, epochs = {k: [] for k in ks}, []
        for fold, rs in zip(parts, searches):
            model, history = runs.fit_and_refit(
                functools.partial(TwoTower.from_frame, config=config), in_batch_loss, runs._two_tower_batch,
                fold["train"], fold["val"], train, name, show_progress=False, val_metric=full_corpus_recall)
            post_ids = rs.posts["post_id"].to_numpy(np.int64)
            ranked = evaluation.retrieved(evaluation.two_tower_scores(rs, model), rs.created_ns, rs.queries, post_ids,
                                          rs.horizon_days, max(ks))
            for k in ks:
                hits[k].append(evaluation.hits(ranked, rs.queries, k))
            epochs.append(history.best_epoch + 1)
        hits = {k: np.concatenate(v) for k, v in hits.items()}
        recall = {k: measures.mean_interval(hits[k], users) for k in ks}
        metrics = {f"two_tower.recall_at_{k}": recall[k].value for k in ks}
        default = default or {"hits": hits, "metrics": metrics}
        paired = {f"two_tower.recall_at_{k}": measures.mean_interval(hits[k] - default["hits"][k], users) for k in ks}
        paired = {m: {"difference": d.value, "low": d.low, "high": d.high} for m, d in paired.items()}
        decision = gate_against_default(metrics, default["metrics"], paired, TWO_TOWER)
        bounds = np.cumsum([0, *(len(rs.queries.answerable_users) for rs in searches)])
        per_window = [float(hits[500][a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:])]
        rows[name] = variant_row(recall[500], paired[measure], per_window, **{"recall@100": recall[100].value},
                                 gate="pass" if decision.passed else "fail", epochs="/".join(map(str, epochs)),
                                 seconds=time.perf_counter() - t0)
        console.print(f"  two-tower {name}: {rows[name]['measure']:.4f} ({rows[name]['seconds']:.0f} s)")
    return {"windows": [fold.label() for fold in backtest], "queries": len(users), "measure": measure,
            "variants": rows, "chosen": chosen(rows)}


INTEREST_HALF_LIVES_DAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 1e6)
INTEREST_PRIORS = (1.0, 5.0, 20.0, 100.0)
INTEREST_TREND_HALF_LIVES_DAYS = (0.25, 0.5, 1.0, 2.0, 4.0)
"""topic_interest_rate's settings tried (a 1e6-day half-life: no decay): every half-life and
prior shrunk towards the user's own rate (no trend), and the longer half-lives with each
trend's half-life."""


def interest_settings(default: tuple) -> list[tuple[float, float, float | None]]:
    """(half-life, prior, trend half-life) of every setting tried, the default first."""
    plain = itertools.product(INTEREST_HALF_LIVES_DAYS, INTEREST_PRIORS, [None])
    trended = itertools.product([h for h in INTEREST_HALF_LIVES_DAYS if h >= 2.0], INTEREST_PRIORS[1:],
                                INTEREST_TREND_HALF_LIVES_DAYS)
    return [default, *(s for s in (*plain, *trended) if s != default)]


def interest_setting_name(half_life: float, prior: float, trend: float | None) -> str:
    name = f"half-life {half_life:g} d, prior {prior:g}" if half_life < 1e5 else f"no decay, prior {prior:g}"
    return name + (f", trend half-life {trend:g} d" if trend is not None else ", no trend")


def choose_interest_estimator(data_dir: Path, data, console: Console) -> dict:
    """topic_interest_rate's decay and shrinkage (``catalog.INTEREST_*``), a feature both models
    read: each setting's estimate, from the logs before each request's day, orders the windows'
    feeds by the user's estimated interest in each post's topic, scored by the feeds' true
    expected engagement (``engagement_vs_oracle``) and paired against the default. Nothing is
    trained, so one pass over the logs before the test period serves every window."""
    from newsfeed import metrics
    from newsfeed.data.io import read_dataset
    from newsfeed.data.world import World, examine_probability
    from newsfeed.features import catalog, jobs
    from newsfeed.models import evaluation
    from newsfeed.scoring import load_weights

    backtest = folds(data)
    cut, first = data.bounds.test_start, backtest[-1].start
    events = read_dataset(data_dir, ("events",))["events"]
    events = events[pd.to_datetime(events["ts"], utc=True) < cut]
    impressions = data.impressions[pd.to_datetime(data.impressions["ts"], utc=True) < cut]
    vocabulary = jobs.topic_vocabulary(data.posts)
    post_topics = pd.Series(jobs.topic_ids(data.posts["topic"], vocabulary), index=data.posts["post_id"].to_numpy())
    ns = {name: pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]").array.asi8
          for name, frame in (("impressions", impressions), ("events", events))}
    origin_ns = int(min(ns["impressions"].min(), ns["events"].min()) // jobs.DAY_NS * jobs.DAY_NS)  # as the job's
    n_days = int((cut.value - origin_ns) // jobs.DAY_NS) + 1
    in_windows = ns["impressions"] >= first.value
    feeds = impressions[in_windows]
    feed_day = (ns["impressions"][in_windows] - origin_ns) // jobs.DAY_NS
    feed_topic = post_topics.reindex(feeds["post_id"].to_numpy()).fillna(len(vocabulary) - 1).to_numpy(np.int64)
    groups, users = feeds["request_id"].to_numpy(), feeds["user_id"].to_numpy()
    window_of = np.searchsorted([fold.start.value for fold in reversed(backtest)], ns["impressions"][in_windows],
                                side="right") - 1
    oracle = evaluation.oracle_engagement(World.of_dataset(data_dir), feeds.rename(columns={"ts": catalog.TIMESTAMP}),
                                          load_weights())
    default_setting = (catalog.INTEREST_HALF_LIFE_DAYS, catalog.INTEREST_PRIOR_IMPRESSIONS,
                       catalog.INTEREST_TREND_HALF_LIFE_DAYS)
    scores = {}
    for setting in interest_settings(default_setting):
        user_ids, rate = jobs.topic_rates(impressions, events, post_topics, len(vocabulary), origin_ns, n_days, *setting)
        scores[setting] = rate[np.searchsorted(user_ids, users), feed_day, feed_topic]
    rows = {}
    for (half_life, prior, trend), score in scores.items():
        value = metrics.normalised_slate_value(groups, oracle, score, examine_probability, clusters=users)
        paired = metrics.paired_slate_difference(groups, oracle, score, scores[default_setting], examine_probability,
                                                 clusters=users)
        per_window = [metrics.normalised_slate_value(groups[window_of == w], oracle[window_of == w],
                                                     score[window_of == w], examine_probability).value
                      for w in reversed(range(len(backtest)))]  # latest first, as the folds
        name = interest_setting_name(half_life, prior, trend)
        rows[f"default: {name}" if (half_life, prior, trend) == default_setting else name] = variant_row(
            value, {"difference": paired.value, "low": paired.low, "high": paired.high}, per_window,
            half_life_days=half_life, prior_impressions=prior, trend_half_life_days=trend)
    console.print(f"  interest estimator: {chosen(rows)}")
    return {"windows": [fold.label() for fold in backtest], "rows": len(feeds),
            "measure": "engagement_vs_oracle of feeds ordered by the estimate alone", "variants": rows,
            "chosen": chosen(rows)}


def table(title: str, result: dict) -> Table:
    out = Table(title=title, caption=f"chosen: {result['chosen']} ({result['measure']}; a variant replaces the "
                                     "default only when better beyond noise)")
    first = next(iter(result["variants"].values()))
    extra = [c for c in ("auc_hide", "auc_block", "recall@100", "gate", "epochs", "rows_trained", "seconds")
             if c in first]
    windows = " / ".join(f"w{i + 1}" for i in range(len(result["windows"])))
    for column in ("variant", "pooled [95% CI]", "vs default, paired [95% CI]", windows, *extra):
        out.add_column(column, justify="left" if column in ("variant", "gate") else "right")
    for name, row in result["variants"].items():
        p = row["paired"]
        out.add_row(name, f"{row['measure']:.4f} [{row['low']:.3f}, {row['high']:.3f}]",
                    f"{p['difference']:+.4f} [{p['low']:+.4f}, {p['high']:+.4f}]",
                    " / ".join(f"{v:.3f}" for v in row["windows"]),
                    *(f"{row[c]:.0f}" if c == "seconds" else f"{row[c]:,}" if c == "rows_trained" else f"{row[c]:.4f}" if isinstance(row[c], float)
                      else str(row[c]) for c in extra))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("interest", "interest_in_ranker", "post_counters", "ranker", "continual",
                                           "two_tower"),
                        default=None)
    parser.add_argument("--variants", nargs="+", default=None, metavar="TEXT",
                        help="only the variants whose name contains one of these (and the default); their rows "
                             "are merged into the earlier results")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from newsfeed.config import Paths
    from newsfeed.features.store import open_store
    from newsfeed.models import datasets

    paths = Paths.resolve(None, None)
    try:
        data = datasets.load(paths.home, paths.data_dir)
    except FileNotFoundError as err:
        raise SystemExit(f"{err} (this benchmark reads the benchmark home: run `make bench-home` first)") from None
    store = open_store(paths.home)
    console = Console(width=180)
    # Parts run alone (--only) update the results of the others.
    result = json.loads(args.out.read_text()) if (args.only or args.variants) and args.out.exists() else {}
    steps = {"interest": ("topic_interest_rate settings: feeds ordered by the estimate alone",
                          lambda: choose_interest_estimator(paths.data_dir, data, console)),
             "interest_in_ranker": ("topic_interest_rate's estimator as the ranker reads it: the default ranker",
                                    lambda: choose_interest_in_ranker(paths.home, paths.data_dir, store, data, console)),
             "post_counters": ("how often post counters are snapshot offline: the default ranker",
                               lambda: choose_post_counters(paths.home, paths.data_dir, store, data, console)),
             "ranker": ("ranker choices", lambda: choose_ranker(paths.home, paths.data_dir, store, data, console,
                                                                args.variants)),
             "continual": ("continual training: the champion fine-tuned on the days since, against afresh",
                           lambda: choose_continual(paths.home, paths.data_dir, store, data, console, args.variants)),
             "two_tower": ("two-tower choices, serving corpus", lambda: choose_two_tower(paths.home, store, data,
                                                                                         console, args.variants))}
    for name, (title, run) in steps.items():
        if args.only in (None, name):
            fresh = run()
            if args.variants and name in result:  # a partial run: its rows join the earlier ones
                fresh["variants"] = {**result[name]["variants"], **fresh["variants"]}
                fresh["chosen"] = chosen(fresh["variants"])
            result[name] = fresh
            console.print(table(f"{title}; windows (w1 latest): {', '.join(result[name]['windows'])}", result[name]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
