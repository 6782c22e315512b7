"""How much of the oracle a ranker could reach with each topic-interest estimate: the
simulator's world with every latent known exactly (post quality, virality, author
popularity, friendships, reactivity) except the users' topic interests, which are replaced
by an estimate; the test period's logged feeds ordered by that world's expected engagement,
scored against the true world's (0 = random order, 1 = the oracle's).

    .venv/bin/python benchmarks/interest_ceiling.py [--data-dir .newsfeed-bench/data]

Rows: no interest at all (every user alike); the feature job's ``topic_interest_rate`` at
the catalog's setting and with the topics' trend (``model_choices.INTEREST_WITH_TREND``), each
calibrated to the world's
scale by a least-squares fit on the rows themselves (so an upper bound for that estimate);
and everyone's true average interest (what a perfect trend alone would give). Needs only
simulated data (``newsfeed data generate``), a few seconds.
"""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd

from model_choices import INTEREST_WITH_TREND, feature_days  # this folder is the script's first import path
from newsfeed.data.world import World


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(".newsfeed-bench/data"))
    parser.add_argument("--test-days", type=float, default=2.0)
    args = parser.parse_args()
    if args.test_days <= 0:
        parser.error("--test-days must be > 0")
    from newsfeed import metrics
    from newsfeed.data.io import read_dataset
    from newsfeed.data.world import examine_probability
    from newsfeed.features import catalog, jobs
    from newsfeed.scoring import load_weights

    world = World.of_dataset(args.data_dir)
    if world is None:
        parser.error(f"{args.data_dir}: not simulated data (no world); run `newsfeed data generate`")
    tables = read_dataset(args.data_dir, ("impressions", "events", "posts"))
    impressions, events, posts = tables["impressions"], tables["events"], tables["posts"]
    shown_ns = pd.to_datetime(impressions["ts"], utc=True).astype("datetime64[ns, UTC]").array.asi8
    origin_ns, n_days = feature_days(impressions, events)
    test = shown_ns >= shown_ns.max() - int(args.test_days * jobs.DAY_NS)
    users = impressions["user_id"].to_numpy()[test]
    post_ids = impressions["post_id"].to_numpy()[test]
    ts = shown_ns[test]
    groups = impressions["request_id"].to_numpy()[test]
    zero = np.zeros(len(users), np.int64)
    weights = load_weights()
    oracle = world.engagement(users, post_ids, ts, zero, weights)
    k = len(world.topics)
    true_affinity = np.log((world.interest(users, post_ids, ts) + 0.02) * k)

    def value(interest: np.ndarray) -> float:
        """The feeds ordered by the world's engagement with ``interest`` in place of the truth."""
        known = WorldWithInterest(**{f.name: getattr(world, f.name) for f in fields(World)})
        known.replaced = interest
        scores = known.engagement(users, post_ids, ts, zero, weights)
        return metrics.normalised_slate_value(groups, oracle, scores, examine_probability, clusters=users).value

    def calibrated(estimate: np.ndarray) -> np.ndarray:
        """The interest whose affinity is the least-squares fit of the truth's on log(estimate)."""
        design = np.c_[np.ones(len(estimate)), np.log(np.clip(estimate, 1e-6, None) * k)]
        fitted = design @ np.linalg.lstsq(design, true_affinity, rcond=None)[0]
        return np.exp(fitted) / k - 0.02

    vocabulary = jobs.topic_vocabulary(posts)
    post_topics = pd.Series(jobs.topic_ids(posts["topic"], vocabulary), index=posts["post_id"].to_numpy())
    feature_topic = post_topics.reindex(post_ids).fillna(len(vocabulary) - 1).to_numpy(np.int64)
    day = (ts - origin_ns) // jobs.DAY_NS  # each row reads the snapshot of the day before its own
    rows = {"no interest (every user and topic alike)": np.full(len(users), 1.0 / k)}
    current = (catalog.INTEREST_HALF_LIFE_DAYS, catalog.INTEREST_PRIOR_IMPRESSIONS,
               catalog.INTEREST_TREND_HALF_LIFE_DAYS)
    for name, setting in ((f"topic_interest_rate as it is {current}", current),
                          (f"topic_interest_rate with the trend {INTEREST_WITH_TREND}", INTEREST_WITH_TREND)):
        user_ids, rate = jobs.topic_rates(impressions, events, post_topics, len(vocabulary), origin_ns, n_days,
                                          *setting)
        estimate = rate[np.searchsorted(user_ids, users).clip(max=len(user_ids) - 1), day, feature_topic]
        rows[name] = calibrated(estimate)
    rows["everyone's true average interest at the row's time"] = _average_interest(world, post_ids, ts)
    print(f"{args.data_dir}: {len(users):,} test impressions, {len(np.unique(users)):,} users")
    for name, interest in rows.items():
        print(f"  {name:60s} {value(interest):.3f}")
    print(f"  {'the true interests (the oracle)':60s} {value(world.interest(users, post_ids, ts)):.3f}")


def _average_interest(world, post_ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
    topic = world.post_topic[post_ids]
    before, after = world.interest_before.mean(axis=0), world.interest_after.mean(axis=0)
    return np.where(ts < world.drift_ns, before[topic], after[topic])


class WorldWithInterest(World):
    """The world with its users' interest in each row's post given (``replaced``, one per row)."""

    replaced: np.ndarray | None = None

    def interest(self, users, posts, ts_ns):
        return self.replaced


if __name__ == "__main__":
    main()
