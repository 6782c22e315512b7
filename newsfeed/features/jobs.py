"""Feature jobs: the offline feature tables, computed from the canonical data.

Point-in-time rule: a row stamped T aggregates only what happened strictly before
T. Aggregates are snapshots at UTC midnights (a row at midnight D holds everything
up to the end of day D-1; a post's counters are snapshot every
``catalog.POST_SNAPSHOT_HOURS`` instead), so a training impression joined to the latest row at or
before its own time never sees its own reactions or anything later.

Every table is computed per entity (user, post, or user-author pair) with
vectorised numpy/pandas and no cross-entity state, so a job can be split by
entity-key hash across workers (e.g. Ray Data ``groupby(key).map_groups``) when one
machine is not enough; see :func:`partition`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from newsfeed.features import catalog, hashing, text
from newsfeed.schema import REACTIONS

HOUR_NS = 3_600 * 10**9
DAY_NS = 24 * HOUR_NS
AGE_BUCKETS = (18, 25, 35, 45, 55, 65)  # bucket i: age < AGE_BUCKETS[i]; last: 65+
OTHER_TOPIC = "other"
MAX_TOPICS = 31


@dataclass
class FeatureJobResult:
    tables: dict[str, pd.DataFrame]
    topics: list[str]
    start: pd.Timestamp
    end: pd.Timestamp
    seconds: dict[str, float] = field(default_factory=dict)


def _ns(ts: pd.Series) -> np.ndarray:
    return ts.astype("datetime64[ns, UTC]").array.asi8


def _stamp(ns: np.ndarray) -> pd.DatetimeIndex:
    return pd.to_datetime(ns, utc=True)


def topic_vocabulary(posts: pd.DataFrame, max_topics: int = MAX_TOPICS) -> list[str]:
    """The most common topics (ties by name), plus 'other' for the rest and unseen ones."""
    counts = posts["topic"].value_counts()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max_topics]
    return sorted(t for t, _ in ordered if t != OTHER_TOPIC) + [OTHER_TOPIC]


def topic_ids(topics: pd.Series, vocabulary: list[str]) -> np.ndarray:
    ids = pd.Index(vocabulary).get_indexer(topics)
    return np.where(ids < 0, len(vocabulary) - 1, ids).astype(np.int64)


def age_bucket(age: pd.Series) -> np.ndarray:
    values = age.astype("Float64").to_numpy(np.float64, na_value=np.nan)
    buckets = np.searchsorted(np.array(AGE_BUCKETS), values, side="right").astype(np.int64)
    return np.where(np.isnan(values), -1, buckets)


def _rate(count: np.ndarray, impressions: np.ndarray) -> np.ndarray:
    # +1 keeps a single lucky impression from reading as a 100% rate; clip guards sources
    # whose events have no logged impression (e.g. MIND's click history).
    return np.clip(count / (impressions + 1.0), 0.0, 1.0).astype(np.float32)


def user_profile(users: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": users["user_id"].to_numpy(np.int64),
        catalog.TIMESTAMP: users["signup_ts"].to_numpy(),
        "age_bucket": age_bucket(users["age"]),
        **{c: users[c].fillna("unknown").astype(str).to_numpy() for c in ("gender", "country", "language", "timezone")},
    })


def post_content(posts: pd.DataFrame, vocabulary: list[str], embed_cache: Path | None) -> pd.DataFrame:
    return pd.DataFrame({
        "post_id": posts["post_id"].to_numpy(np.int64),
        catalog.TIMESTAMP: posts["created_ts"].to_numpy(),
        "written_by": posts["author_id"].astype("Int64").fillna(-1).to_numpy(np.int64),
        "topic": posts["topic"].astype(str).to_numpy(),
        "topic_id": topic_ids(posts["topic"], vocabulary),
        "hashtag_buckets": hashing.bucket_lists(posts["hashtags"]),
        "media_type": posts["media_type"].astype(str).to_numpy(),
        "created_unix": _ns(posts["created_ts"]) // 10**9,
        "mentions": [list(map(int, m)) for m in posts["mentions"]],
        "text_embedding": list(text.post_embeddings(posts, embed_cache)),
    })


def _day_index(ts_ns: np.ndarray, origin_ns: int) -> np.ndarray:
    return (ts_ns - origin_ns) // DAY_NS


def user_engagement(impressions: pd.DataFrame, events: pd.DataFrame, post_topics: pd.Series,
                    n_topics: int, origin_ns: int, n_days: int) -> pd.DataFrame:
    """Dense daily snapshots per user from their first active day; windows by cumulative sums."""
    kinds = ("impression", *REACTIONS, "dwell_sum", "dwell_n")
    users, inverse = np.unique(np.concatenate([impressions["user_id"].to_numpy(np.int64),
                                               events["user_id"].to_numpy(np.int64)]), return_inverse=True)
    n_imp = len(impressions)
    u_imp, u_ev = inverse[:n_imp], inverse[n_imp:]
    d_imp = _day_index(_ns(impressions["ts"]), origin_ns)
    d_ev = _day_index(_ns(events["ts"]), origin_ns)
    kind_ev = pd.Index(kinds).get_indexer(events["event_type"])
    value_ev = np.ones(len(events))
    is_dwell = (events["event_type"] == "dwell").to_numpy()
    kind_ev[is_dwell] = kinds.index("dwell_sum")
    value_ev[is_dwell] = events["value"].to_numpy()[is_dwell]
    # dwell_n: one more entry per dwell event
    u_all = np.concatenate([u_imp, u_ev, u_ev[is_dwell]])
    d_all = np.concatenate([d_imp, d_ev, d_ev[is_dwell]])
    k_all = np.concatenate([np.zeros(n_imp, np.int64), kind_ev, np.full(is_dwell.sum(), kinds.index("dwell_n"))])
    v_all = np.concatenate([np.ones(n_imp), value_ev, np.ones(is_dwell.sum())])
    keep = (d_all >= 0) & (d_all < n_days) & (k_all >= 0)
    n_u, n_k = len(users), len(kinds)
    flat = (u_all[keep] * n_days + d_all[keep]) * n_k + k_all[keep]
    daily = np.bincount(flat, weights=v_all[keep], minlength=n_u * n_days * n_k).reshape(n_u, n_days, n_k)
    cum = np.concatenate([np.zeros((n_u, 1, n_k)), daily.cumsum(axis=1)], axis=1)  # cum[:, j] = days < j

    # Topic interest: positive reactions per (user, day, topic), trailing 30 days, normalised.
    daily_t = _daily_topic_positives(events, u_ev, d_ev, post_topics, n_topics, n_u, n_days)
    cum_t = np.concatenate([np.zeros((n_u, 1, n_topics)), daily_t.cumsum(axis=1)], axis=1)

    rate = decayed_topic_rate(daily_t, impressions, inverse[:n_imp], d_imp, post_topics, n_topics, n_days)

    first_day = np.full(n_u, n_days, np.int64)
    np.minimum.at(first_day, u_all[keep], d_all[keep])
    # Snapshot j is stamped at the end of day j and covers days <= j; a user has none before
    # their first active day (the join then gives missing values: nothing known yet).
    snap = np.arange(n_days)
    mask = snap[None, :] >= first_day[:, None]
    uu, col = np.nonzero(mask)
    jj = snap[col]
    out: dict[str, np.ndarray] = {
        "user_id": users[uu],
        catalog.TIMESTAMP: _stamp(origin_ns + (jj + 1) * DAY_NS),
    }
    for name, w in catalog.WINDOWS.items():
        lo = np.maximum(jj + 1 - w, 0)
        win = cum[uu, jj + 1] - cum[uu, lo]
        impressions_w = win[:, 0]
        out[f"impression_count_{name}"] = impressions_w.astype(np.int64)
        for i, r in enumerate(REACTIONS, start=1):
            out[f"{r}_count_{name}"] = win[:, i].astype(np.int64)
            out[f"{r}_rate_{name}"] = _rate(win[:, i], impressions_w)
        dwell_n = win[:, kinds.index("dwell_n")]
        out[f"dwell_mean_{name}"] = np.where(dwell_n > 0, win[:, kinds.index("dwell_sum")] / np.maximum(dwell_n, 1),
                                             0.0).astype(np.float32)
    frame = pd.DataFrame(out)
    for column, window in (("topic_interest", "30d"), ("topic_interest_7d", "7d")):
        lo = np.maximum(jj + 1 - catalog.WINDOWS[window], 0)
        interest = (cum_t[uu, jj + 1] - cum_t[uu, lo]).astype(np.float32)
        total = interest.sum(axis=1, keepdims=True)
        frame[column] = list(np.divide(interest, total, out=np.zeros_like(interest), where=total > 0))
    frame["topic_interest_rate"] = list(rate[uu, jj + 1])
    return frame


def _daily_topic_positives(events: pd.DataFrame, user_index: np.ndarray, day: np.ndarray, post_topics: pd.Series,
                           n_topics: int, n_users: int, n_days: int) -> np.ndarray:
    """(users, n_days, topics): positive reactions per user, day and topic of the post."""
    positive = events["event_type"].isin(catalog.POSITIVE_REACTIONS).to_numpy()
    topic = post_topics.reindex(events["post_id"].to_numpy()).fillna(n_topics - 1).to_numpy(np.int64)
    ok = positive & (day >= 0) & (day < n_days)
    flat = (user_index[ok] * n_days + day[ok]) * n_topics + topic[ok]
    return np.bincount(flat, minlength=n_users * n_days * n_topics).reshape(n_users, n_days, n_topics)


def topic_rates(impressions: pd.DataFrame, events: pd.DataFrame, post_topics: pd.Series, n_topics: int,
                origin_ns: int, n_days: int, half_life_days: float = catalog.INTEREST_HALF_LIFE_DAYS,
                prior_impressions: float = catalog.INTEREST_PRIOR_IMPRESSIONS,
                trend_half_life_days: float | None = catalog.INTEREST_TREND_HALF_LIFE_DAYS,
                ) -> tuple[np.ndarray, np.ndarray]:
    """(user ids, ``decayed_topic_rate``) straight from the logs, for any estimator setting:
    how ``benchmarks/model_choices.py`` compares settings without rebuilding the features."""
    users, inverse = np.unique(np.concatenate([impressions["user_id"].to_numpy(np.int64),
                                               events["user_id"].to_numpy(np.int64)]), return_inverse=True)
    n_imp = len(impressions)
    d_imp, d_ev = _day_index(_ns(impressions["ts"]), origin_ns), _day_index(_ns(events["ts"]), origin_ns)
    positives = _daily_topic_positives(events, inverse[n_imp:], d_ev, post_topics, n_topics, len(users), n_days)
    return users, decayed_topic_rate(positives, impressions, inverse[:n_imp], d_imp, post_topics, n_topics, n_days,
                                     half_life_days, prior_impressions, trend_half_life_days)


def decayed_topic_rate(positives: np.ndarray, impressions: pd.DataFrame, user_index: np.ndarray,
                       day: np.ndarray, post_topics: pd.Series, n_topics: int, n_days: int,
                       half_life_days: float = catalog.INTEREST_HALF_LIFE_DAYS,
                       prior_impressions: float = catalog.INTEREST_PRIOR_IMPRESSIONS,
                       trend_half_life_days: float | None = catalog.INTEREST_TREND_HALF_LIFE_DAYS) -> np.ndarray:
    """(users, n_days + 1, topics): entry j covers days < j. Per topic, positive reactions per
    impression with both counts decayed by day (``half_life_days``), shrunk by
    ``prior_impressions`` towards the user's overall rate times the topic's trend, normalised
    to sum 1. A rate, not a share of clicks: a topic the feed showed often but the user passed
    over counts against it. The trend is everyone's rate on the topic against everyone's rate,
    decayed faster (``trend_half_life_days``; None: no trend, every topic alike): a user has a
    few impressions per topic, so the prior carries most of the estimate, and what everyone
    has lately engaged with is a better guess for a topic the user has barely seen than the
    user's average."""
    n_u = positives.shape[0]
    topic = post_topics.reindex(impressions["post_id"].to_numpy()).fillna(n_topics - 1).to_numpy(np.int64)
    ok = (day >= 0) & (day < n_days)
    flat = (user_index[ok] * n_days + day[ok]) * n_topics + topic[ok]
    shown = np.bincount(flat, minlength=n_u * n_days * n_topics).reshape(n_u, n_days, n_topics)
    keep = 0.5 ** (1.0 / half_life_days)
    pos, imp = np.zeros((n_u, n_days + 1, n_topics)), np.zeros((n_u, n_days + 1, n_topics))
    for j in range(n_days):
        pos[:, j + 1] = keep * pos[:, j] + positives[:, j]
        imp[:, j + 1] = keep * imp[:, j] + shown[:, j]
    overall = (pos.sum(axis=2, keepdims=True) + 0.1) / (imp.sum(axis=2, keepdims=True) + 1.0)
    rate = (pos + prior_impressions * overall * topic_trend(positives, shown, trend_half_life_days))
    rate /= imp + prior_impressions
    return (rate / rate.sum(axis=2, keepdims=True)).astype(np.float32)


def topic_trend(positives: np.ndarray, shown: np.ndarray, half_life_days: float | None) -> np.ndarray:
    """(1, n_days + 1, topics): entry j covers days < j. Each topic's positive reactions per
    impression across all users, decayed by day (``half_life_days``), over the same for all
    topics together: above 1, a topic engaged with more than the average one. Topics nobody
    has seen yet, and every topic when ``half_life_days`` is None, are 1."""
    n_days, n_topics = positives.shape[1:]
    out = np.ones((1, n_days + 1, n_topics))
    if half_life_days is None:
        return out
    keep = 0.5 ** (1.0 / half_life_days)
    pos, imp = np.zeros(n_topics), np.zeros(n_topics)
    for j, (day_pos, day_shown) in enumerate(zip(positives.sum(axis=0), shown.sum(axis=0))):
        pos, imp = keep * pos + day_pos, keep * imp + day_shown
        overall = pos.sum() / max(imp.sum(), 1e-12)
        if overall > 0:
            # A topic shown a handful of times is shrunk towards 1 by 10 impressions' worth.
            out[0, j + 1] = (pos + 10.0 * overall) / (imp + 10.0) / overall
    return out


def user_history(events: pd.DataFrame, authors: pd.Series, origin_ns: int, n_days: int) -> pd.DataFrame:
    """At the end of each day a user engaged: their last HISTORY_LENGTH distinct engaged posts,
    newest first, and those posts' authors (``authors``: post_id -> author_id)."""
    positive = events[events["event_type"].isin(catalog.POSITIVE_REACTIONS)]
    frame = pd.DataFrame({"user_id": positive["user_id"].to_numpy(np.int64),
                          "post_id": positive["post_id"].to_numpy(np.int64), "ns": _ns(positive["ts"])})
    frame["day"] = _day_index(frame["ns"].to_numpy(), origin_ns)
    frame = frame[(frame["day"] >= 0) & (frame["day"] < n_days)]
    # A click then a like on one post is one engaged post, dated by its first reaction.
    frame = frame.sort_values(["user_id", "ns"], kind="stable").drop_duplicates(["user_id", "post_id"])
    users, posts, days = (frame[c].to_numpy() for c in ("user_id", "post_id", "day"))
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], np.int64)
    # The last row of each (user, day): the history as of that day's end is the rows before it.
    ends = np.flatnonzero(np.r_[(users[1:] != users[:-1]) | (days[1:] != days[:-1]), True]) if len(users) else starts
    first = starts[np.searchsorted(starts, ends, side="right") - 1]
    lo = np.maximum(first, ends + 1 - catalog.HISTORY_LENGTH)
    stamps = origin_ns + (days[ends] + 1) * DAY_NS
    post_authors = authors.reindex(posts).fillna(-1).to_numpy(np.int64)
    out = pd.DataFrame({"user_id": users[ends].astype(np.int64), catalog.TIMESTAMP: _stamp(stamps),
                        "recent_post_ids": [posts[a:b + 1][::-1].tolist() for a, b in zip(lo, ends)],
                        "recent_author_ids": [post_authors[a:b + 1][::-1].tolist() for a, b in zip(lo, ends)]})
    return out.sort_values(["user_id", catalog.TIMESTAMP], kind="stable").reset_index(drop=True)


def _cumulative(frame: pd.DataFrame, keys: list[str], kinds: tuple[str, ...]) -> pd.DataFrame:
    """Running totals per key at the end of each period the key was active (sparse)."""
    counts = frame.groupby([*keys, "period", "kind"], sort=False).size().unstack("kind", fill_value=0)
    counts = counts.reindex(columns=list(kinds), fill_value=0).sort_index()
    running = counts.groupby(level=keys, sort=False).cumsum()
    return running.reset_index()


def _tagged(frame: pd.DataFrame, kind: str | pd.Series, origin_ns: int, keys: tuple[str, ...],
            period_ns: int = DAY_NS) -> pd.DataFrame:
    """Rows keyed by ``keys`` with their kind and the index of their period since ``origin_ns``
    (a day unless ``period_ns`` says otherwise)."""
    return pd.DataFrame({
        **{k: frame[k].to_numpy(np.int64) for k in keys},
        "period": (_ns(frame["ts"]) - origin_ns) // period_ns,
        "kind": kind if isinstance(kind, str) else kind.to_numpy(),
    })


def post_engagement(impressions: pd.DataFrame, events: pd.DataFrame, origin_ns: int, n_days: int,
                    period_ns: int = catalog.POST_SNAPSHOT_HOURS * HOUR_NS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(post_engagement, post_engagement_live): running totals at the end of each active
    period (``catalog.POST_SNAPSHOT_HOURS`` by default: an hour)."""
    kinds = ("impression", *REACTIONS)
    reactions = events[events["event_type"].isin(REACTIONS)]
    tagged = pd.concat([
        _tagged(impressions, "impression", origin_ns, keys=("post_id",), period_ns=period_ns),
        _tagged(reactions, reactions["event_type"], origin_ns, keys=("post_id",), period_ns=period_ns),
    ], ignore_index=True)
    tagged = tagged[(tagged["period"] >= 0) & (tagged["period"] < n_days * DAY_NS // period_ns)]
    running = _cumulative(tagged, ["post_id"], kinds)
    stamp = _stamp(origin_ns + (running["period"].to_numpy() + 1) * period_ns)
    imp = running["impression"].to_numpy(np.float64)
    scaled = pd.DataFrame({"post_id": running["post_id"].to_numpy(np.int64), catalog.TIMESTAMP: stamp,
                           "impressions_log1p": np.log1p(imp).astype(np.float32)})
    live = scaled[["post_id", catalog.TIMESTAMP]].copy()
    for r in REACTIONS:
        count = running[r].to_numpy(np.float64)
        scaled[f"{r}_log1p"] = np.log1p(count).astype(np.float32)
        live[f"{r}_count"] = count.astype(np.int64)
    for r in REACTIONS:
        scaled[f"{r}_rate"] = _rate(running[r].to_numpy(np.float64), imp)
    return scaled, live


def user_author_affinity(impressions: pd.DataFrame, events: pd.DataFrame, friendships: pd.DataFrame,
                         authors: pd.Series, origin_ns: int, n_days: int) -> pd.DataFrame:
    """Rows at the end of each day a related pair interacted and when a friendship formed."""
    kinds = ("impression", *catalog.AFFINITY_REACTIONS)
    reactions = events[events["event_type"].isin(catalog.AFFINITY_REACTIONS)]
    tagged = pd.concat([
        _tagged(impressions, "impression", origin_ns, keys=("user_id", "post_id")),
        _tagged(reactions, reactions["event_type"], origin_ns, keys=("user_id", "post_id")),
    ], ignore_index=True)
    tagged["author_id"] = authors.reindex(tagged["post_id"].to_numpy()).to_numpy()
    tagged = tagged[tagged["author_id"].notna() & (tagged["period"] >= 0) & (tagged["period"] < n_days)]
    tagged["author_id"] = tagged["author_id"].astype(np.int64)
    running = _cumulative(tagged.drop(columns="post_id"), ["user_id", "author_id"], kinds)
    running[catalog.TIMESTAMP] = _stamp(origin_ns + (running["period"].to_numpy() + 1) * DAY_NS)
    running = running.drop(columns="period")

    # Both directions of every friendship; the first-formed wins if a pair is listed twice.
    both = pd.concat([
        friendships,
        friendships.rename(columns={"user_id": "friend_id", "friend_id": "user_id"}),
    ], ignore_index=True).sort_values("formed_ts").drop_duplicates(["user_id", "friend_id"])
    friends = pd.DataFrame({
        "user_id": both["user_id"].to_numpy(np.int64), "author_id": both["friend_id"].to_numpy(np.int64),
        "formed_ns": _ns(both["formed_ts"]), "close_friend": both["close_friend"].to_numpy(np.int64),
        "family": both["family"].to_numpy(np.int64),
    })
    # Friendships formed after the last snapshot wait for the next run, like everything else.
    friends = friends[friends["formed_ns"] <= origin_ns + n_days * DAY_NS]
    formed = friends[["user_id", "author_id"]].assign(**{catalog.TIMESTAMP: _stamp(friends["formed_ns"].to_numpy())})
    # A friendship row carries the interaction totals as of its formation.
    formed = pd.merge_asof(
        formed.sort_values(catalog.TIMESTAMP), running.sort_values(catalog.TIMESTAMP),
        on=catalog.TIMESTAMP, by=["user_id", "author_id"], direction="backward", allow_exact_matches=True,
    )
    rows = pd.concat([running, formed], ignore_index=True)
    rows[list(kinds)] = rows[list(kinds)].fillna(0)
    rows = rows.merge(friends, on=["user_id", "author_id"], how="left")
    is_friend = rows["formed_ns"].notna() & (rows["formed_ns"] <= _ns(rows[catalog.TIMESTAMP]))
    imp = rows["impression"].to_numpy(np.float64)
    out = pd.DataFrame({
        "user_id": rows["user_id"].to_numpy(np.int64),
        "author_id": rows["author_id"].to_numpy(np.int64),
        catalog.TIMESTAMP: rows[catalog.TIMESTAMP].to_numpy(),
        "impression_count": imp.astype(np.int64),
        **{f"{r}_rate": _rate(rows[r].to_numpy(np.float64), imp) for r in catalog.AFFINITY_REACTIONS},
        "friends_since_unix": np.where(is_friend, rows["formed_ns"].fillna(0).to_numpy() // 10**9, -1).astype(np.int64),
        "close_friend": np.where(is_friend, rows["close_friend"].fillna(0), 0).astype(np.int64),
        "family": np.where(is_friend, rows["family"].fillna(0), 0).astype(np.int64),
    })
    # A pair gets rows only once it is a relationship: the user reacted to the author, or they
    # became friends. Seen-only pairs (four in five at demo scale, most seen once) read as
    # missing, offline and online alike, so the online store holds the pairs that tell something.
    related = is_friend.to_numpy() | (rows[list(catalog.AFFINITY_REACTIONS)].to_numpy().sum(axis=1) > 0)
    out = out[related]
    return out.sort_values(["user_id", "author_id", catalog.TIMESTAMP], kind="stable").reset_index(drop=True)


def compute(tables: dict[str, pd.DataFrame], events: pd.DataFrame, as_of: pd.Timestamp | None = None,
            embed_cache: Path | None = None, progress: Callable[[str], None] = lambda step: None
            ) -> FeatureJobResult:
    """All feature tables from the canonical ``tables`` and the full event log ``events``.

    ``as_of`` (default: now) caps the snapshots: none is stamped after it.
    """
    users, posts = tables["users"], tables["posts"]
    impressions, friendships = tables["impressions"], tables["friendships"]
    as_of_ns = pd.Timestamp(as_of if as_of is not None else pd.Timestamp.now(tz="UTC")).value
    activity = np.concatenate([_ns(impressions["ts"]), _ns(events["ts"])])
    if len(activity) == 0:
        raise ValueError("no impressions and no events: nothing to aggregate")
    origin_ns = int(activity.min() // DAY_NS * DAY_NS)
    last_day = int((min(activity.max(), as_of_ns) - origin_ns) // DAY_NS)
    # Snapshot j is stamped at origin + (j+1) days; keep those not after as_of.
    n_days = int(min(last_day + 1, (as_of_ns - origin_ns) // DAY_NS))
    if n_days < 1:
        raise ValueError("no complete day of activity before as_of: nothing to snapshot")
    vocabulary = topic_vocabulary(posts)
    post_topics = pd.Series(topic_ids(posts["topic"], vocabulary), index=posts["post_id"].to_numpy())
    authors = pd.Series(posts["author_id"].astype("Int64").to_numpy(), index=posts["post_id"].to_numpy())
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], pd.DataFrame | tuple]):
        progress(name)
        t0 = time.perf_counter()
        result = fn()
        seconds[name] = time.perf_counter() - t0
        return result

    out: dict[str, pd.DataFrame] = {
        "user_profile": timed("user_profile", lambda: user_profile(users)),
        "post_content": timed("post_content", lambda: post_content(posts, vocabulary, embed_cache)),
        "user_engagement": timed("user_engagement", lambda: user_engagement(
            impressions, events, post_topics, len(vocabulary), origin_ns, n_days)),
    }
    out["user_history"] = timed("user_history", lambda: user_history(events, authors, origin_ns, n_days))
    out["post_engagement"], out["post_engagement_live"] = timed(
        "post_engagement", lambda: post_engagement(impressions, events, origin_ns, n_days))
    out["user_author_affinity"] = timed("user_author_affinity", lambda: user_author_affinity(
        impressions, events, friendships, authors, origin_ns, n_days))
    for name, frame in out.items():
        _check_columns(name, frame)
    stamps = pd.concat([f[catalog.TIMESTAMP] for f in out.values()])
    return FeatureJobResult(out, vocabulary, stamps.min(), stamps.max(), seconds)


def _check_columns(name: str, frame: pd.DataFrame) -> None:
    spec = catalog.TABLES[name]
    expected = [*spec.keys, catalog.TIMESTAMP, *spec.columns]
    if list(frame.columns) != expected:
        raise AssertionError(f"{name}: job produced {list(frame.columns)}, catalog says {expected}")


_ARROW = {"int64": pa.int64(), "float32": pa.float32(), "string": pa.string(),
          "int64_list": pa.list_(pa.int64()), "float32_list": pa.list_(pa.float32())}


def arrow_schema(name: str) -> pa.Schema:
    spec = catalog.TABLES[name]
    return pa.schema([*(pa.field(k, pa.int64()) for k in spec.keys), pa.field(catalog.TIMESTAMP, pa.timestamp("ns", "UTC")),
                      *(pa.field(c, _ARROW[t]) for c, t in spec.columns.items())])


def to_arrow(name: str, frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, schema=arrow_schema(name), preserve_index=False)


def partition(frame: pd.DataFrame, key: str, n: int) -> list[pd.DataFrame]:
    """Split rows by a stable hash of ``key`` into ``n`` disjoint entity partitions.

    Every job above is a function of one entity's rows, so running it on each
    partition and concatenating gives the same table: the unit of work for Ray Data
    (or any executor) when the data outgrows one machine.
    """
    codes = pd.util.hash_array(frame[key].to_numpy()) % n
    return [frame[codes == i] for i in range(n)]
