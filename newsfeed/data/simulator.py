"""A social-network simulator with ground truth: the project's default data.

Deterministic by seed. It samples a latent :class:`~newsfeed.data.world.World`
(users with topic interests that drift, authors of varying popularity,
friendships with close-friend and family ties, posts with topics, hashtags,
text, virality and mentions, arriving over time), then feed sessions served by
a logging policy that mixes friends' posts, popular posts and fresh posts, and
samples every impression's reactions from the world's reaction model. Each
impression also stores its true reaction probabilities (``p_click`` ...).
All sampling is vectorised: a million impressions take seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from newsfeed.data.events import events_from_impressions
from newsfeed.data.io import write_dataset
from newsfeed.data.vocabulary import COMMON_WORDS, COUNTRIES, TOPICS
from newsfeed.data.world import HOUR_NS, WORLD_FILE, World
from newsfeed.schema import GENDERS, MEDIA_TYPES, REACTIONS, conform

DAY_NS = 24 * HOUR_NS
LOGGING_VARIANT = "logging"
LOGGING_MODEL = "simulator-logging-policy"


class SimConfig(BaseModel):
    """Scale and behaviour of a simulated network. Defaults are the demo scale."""

    model_config = ConfigDict(allow_inf_nan=False)

    seed: int = 7
    users: int = Field(2_000, ge=10)
    posts: int = Field(8_000, ge=10)
    days: int = Field(14, ge=1)
    start: datetime = datetime(2026, 10, 1, tzinfo=timezone.utc)
    sessions_per_day: float = Field(0.8, gt=0, le=100, description="mean feed sessions per user per day")
    feed_size: int = Field(10, ge=1, description="posts shown per session")
    mean_friends: float = Field(16.0, ge=0)
    passive_fraction: float = Field(0.25, ge=0, le=1, description="users who rarely react")
    new_user_fraction: float = Field(0.1, ge=0, le=1, description="users who sign up during the period")
    viral_fraction: float = Field(0.01, ge=0, le=1)
    drift_day: float | None = Field(None, description="day interests drift; default two thirds in; <0 disables")
    drift_strength: float = Field(0.6, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "SimConfig":
        if self.start.tzinfo is None:
            self.start = self.start.replace(tzinfo=timezone.utc)
        if self.drift_day is None:
            self.drift_day = self.days * 2 / 3
        return self

    @classmethod
    def at_scale(cls, scale: float, seed: int = 7) -> "SimConfig":
        """The demo network (2,000 users, 8,000 posts, 14 days) with ``scale`` times the users and posts."""
        demo = cls()
        return cls(seed=seed, users=max(10, round(demo.users * scale)), posts=max(10, round(demo.posts * scale)))

    @property
    def start_ns(self) -> int:
        return pd.Timestamp(self.start).value

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.days * DAY_NS

    @property
    def drift_ns(self) -> int:
        if self.drift_day is None or self.drift_day < 0:
            return np.iinfo(np.int64).max
        return self.start_ns + int(self.drift_day * DAY_NS)


Progress = Callable[[str], None]


def generate(config: SimConfig, progress: Progress = lambda step: None) -> tuple[dict[str, pd.DataFrame], World]:
    """Sample a world and its canonical tables (users, posts, friendships, impressions, events)."""
    rng = np.random.default_rng(config.seed)
    progress("users")
    users, latent = _users(config, rng)
    progress("friendships")
    friends = _friendships(config, rng, users["signup_ns"], users["country"])
    progress("posts")
    posts = _posts(config, rng, users, latent, friends)
    world = World(
        topics=list(TOPICS),
        drift_ns=config.drift_ns,
        interest_before=latent["interest_before"],
        interest_after=latent["interest_after"],
        reactivity=latent["reactivity"],
        passive=latent["passive"],
        author_popularity=latent["author_popularity"],
        post_author=posts["author"],
        post_topic=posts["topic"],
        post_quality=posts["quality"],
        post_viral=posts["viral"],
        post_media=posts["media"],
        post_created_ns=posts["created_ns"],
        mention_key=np.sort(posts["mention_post"] * config.users + posts["mention_user"]),
        friend_key=friends["key"],
        friend_formed_ns=friends["formed_ns"],
        friend_close=friends["close"],
        friend_family=friends["family"],
        meta={"config": config.model_dump(mode="json")},
    )
    progress("impressions")
    impressions = _impressions(config, rng, world, latent["activity"], users["signup_ns"], friends)
    progress("events")
    tables = {
        "users": _users_table(users),
        "posts": _posts_table(rng, posts),
        "friendships": _friendships_table(friends),
        "impressions": impressions,
        "events": events_from_impressions(impressions, delay_seconds=rng.uniform(1, 30, size=len(impressions))),
    }
    return {name: conform(name, df) for name, df in tables.items()}, world


def simulate_to(out: Path, config: SimConfig, progress: Progress = lambda step: None) -> dict:
    """Simulate a network and write its canonical tables and its world (the ground truth) to
    ``out``; return the dataset manifest."""
    tables, world = generate(config, progress)
    progress("writing parquet")
    manifest = write_dataset(out, tables, source="simulator", config=config.model_dump(mode="json"))
    world.save(Path(out) / WORLD_FILE)
    return manifest


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (rows, k) probability matrix (inverse CDF, vectorised)."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs))[:, None] * cdf[:, -1:]
    return (cdf < u).sum(axis=1).clip(max=probs.shape[1] - 1)


def _users(config: SimConfig, rng: np.random.Generator) -> tuple[dict, dict]:
    n, k = config.users, len(TOPICS)
    country_names = np.array(list(COUNTRIES))
    weights = np.array([c[0] for c in COUNTRIES.values()])
    new = rng.random(n) < config.new_user_fraction
    signup_ns = np.where(
        new,
        config.start_ns + (rng.random(n) * 0.9 * config.days * DAY_NS).astype(np.int64),
        config.start_ns - (DAY_NS + rng.random(n) * 3 * 365 * DAY_NS).astype(np.int64),
    )
    interest_before = rng.dirichlet(np.full(k, 0.25), size=n)
    # Drift: everyone moves part of their attention towards a few topics that start trending.
    trending = rng.choice(k, size=3, replace=False)
    alpha = np.full(k, 0.1)
    alpha[trending] = 2.0
    interest_after = (1 - config.drift_strength) * interest_before + config.drift_strength * rng.dirichlet(
        alpha, size=n
    )
    activity = rng.lognormal(0.0, 0.6, size=n)
    users = {
        "age": np.clip(np.round(rng.normal(33, 12, size=n)), 13, 80).astype(np.int64),
        "gender": rng.choice(np.array(GENDERS), size=n, p=[0.49, 0.49, 0.02]),
        "country": rng.choice(country_names, size=n, p=weights / weights.sum()),
        "signup_ns": signup_ns,
    }
    latent = {
        "interest_before": interest_before.astype(np.float32),
        "interest_after": interest_after.astype(np.float32),
        "main_topic": _categorical(rng, interest_before),
        "activity": activity / activity.mean(),
        "passive": rng.random(n) < config.passive_fraction,
        "reactivity": rng.normal(0.0, 0.35, size=n),
        "author_popularity": rng.normal(0.0, 0.8, size=n),
        "trending": trending,
    }
    return users, latent


def _friendships(config: SimConfig, rng: np.random.Generator, signup_ns: np.ndarray, country: np.ndarray) -> dict:
    """Undirected ties, stored in both directions, sorted by key."""
    n = config.users
    edges = int(n * config.mean_friends / 2)
    sociability = rng.lognormal(0.0, 0.7, size=n)
    p = sociability / sociability.sum()
    u = rng.choice(n, size=edges, p=p)
    v = rng.choice(n, size=edges, p=p)
    # Homophily: half the ties join two people of the same country.
    local = rng.random(edges) < 0.5
    code = np.unique(country, return_inverse=True)[1]
    order = np.argsort(code, kind="stable")
    first = np.searchsorted(code[order], code)
    size = np.bincount(code)[code]
    lu = u[local]
    v[local] = order[first[lu] + (rng.random(local.sum()) * size[lu]).astype(np.int64)]
    lo, hi = np.minimum(u, v), np.maximum(u, v)
    keep = lo != hi
    pair = np.unique(lo[keep].astype(np.int64) * n + hi[keep])
    lo, hi = pair // n, pair % n
    formed = np.maximum(signup_ns[lo], signup_ns[hi]) + rng.exponential(120 * DAY_NS, size=len(pair)).astype(
        np.int64
    )
    keep = formed < config.end_ns
    lo, hi, formed = lo[keep], hi[keep], formed[keep]
    close = rng.random(len(lo)) < 0.12
    family = rng.random(len(lo)) < 0.05
    src, dst = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    key = src * n + dst
    order = np.argsort(key)
    return {
        "key": key[order],
        "user": src[order],
        "friend": dst[order],
        "formed_ns": np.concatenate([formed, formed])[order],
        "close": np.concatenate([close, close])[order],
        "family": np.concatenate([family, family])[order],
        "ptr": np.searchsorted(src[order], np.arange(n + 1)),  # CSR: user's ties are ptr[u]:ptr[u+1]
    }


def _posts(config: SimConfig, rng: np.random.Generator, users: dict, latent: dict, friends: dict) -> dict:
    m, k = config.posts, len(TOPICS)
    # A tenth of the posts predate the period so the first feeds have something to show.
    early = rng.random(m) < 0.1
    created = np.where(
        early,
        config.start_ns - (rng.random(m) * 2 * DAY_NS).astype(np.int64),
        config.start_ns + (rng.random(m) * config.days * DAY_NS).astype(np.int64),
    )
    created.sort()
    weight = np.exp(latent["author_popularity"]) * latent["activity"]
    author = rng.choice(config.users, size=m, p=weight / weight.sum())
    # Nobody posts before signing up: such posts go to users who had signed up by then.
    established = np.flatnonzero(users["signup_ns"] < config.start_ns - 2 * DAY_NS)
    too_early = users["signup_ns"][author] > created
    w = weight[established]
    author[too_early] = rng.choice(established, size=too_early.sum(), p=w / w.sum())
    on_main = rng.random(m) < 0.8
    topic = np.where(
        on_main, latent["main_topic"][author], _categorical(rng, latent["interest_before"][author])
    ).astype(np.int16)
    # Some posts mention one of the author's friends.
    deg = friends["ptr"][author + 1] - friends["ptr"][author]
    mentions = (rng.random(m) < 0.15) & (deg > 0)
    pick = friends["ptr"][author[mentions]] + (rng.random(mentions.sum()) * deg[mentions]).astype(np.int64)
    return {
        "author": author.astype(np.int64),
        "topic": topic,
        "quality": rng.normal(0.0, 0.5, size=m),
        "viral": rng.random(m) < config.viral_fraction,
        "media": rng.choice(len(MEDIA_TYPES), size=m, p=[0.4, 0.35, 0.15, 0.1]).astype(np.int8),
        "created_ns": created,
        "mention_post": np.flatnonzero(mentions).astype(np.int64),
        "mention_user": friends["friend"][pick].astype(np.int64),
    }


def _impressions(
    config: SimConfig,
    rng: np.random.Generator,
    world: World,
    activity: np.ndarray,
    signup_ns: np.ndarray,
    friends: dict,
) -> pd.DataFrame:
    n = config.users
    created = world.post_created_ns
    # Sessions: active users open the feed more often; new users only after signing up.
    active_from = np.maximum(signup_ns, config.start_ns)
    span = config.end_ns - active_from
    n_sess = rng.poisson(activity * config.sessions_per_day * span / DAY_NS)
    sess_user = np.repeat(np.arange(n), n_sess)
    sess_ts = active_from[sess_user] + (rng.random(len(sess_user)) * span[sess_user]).astype(np.int64)
    order = np.argsort(sess_ts, kind="stable")
    sess_user, sess_ts = sess_user[order], sess_ts[order]

    # Each session fills feed_size slots from three sources (the logging policy).
    L = config.feed_size
    slot_sess = np.repeat(np.arange(len(sess_user)), L)
    user, ts = sess_user[slot_sess], sess_ts[slot_sess]
    n_avail = np.searchsorted(created, ts, side="right")  # posts published by then
    source = rng.choice(3, size=len(slot_sess), p=[0.35, 0.25, 0.40])  # friends, popular, fresh
    per_day = len(created) / (config.days + 2)
    post = n_avail - 1 - rng.exponential(1.5 * per_day, size=len(ts)).astype(np.int64)

    popular = source == 1
    appeal = np.exp(0.8 * world.author_popularity[world.post_author] + world.post_quality + 1.5 * world.post_viral)
    cum = np.concatenate([[0.0], np.cumsum(appeal)])
    lo = np.searchsorted(created, ts[popular] - 3 * DAY_NS)
    hi = n_avail[popular]
    u = cum[lo] + rng.random(popular.sum()) * (cum[hi] - cum[lo])
    post[popular] = np.searchsorted(cum, u, side="right") - 1

    from_friend = source == 0
    post[from_friend] = _friend_posts(rng, world, friends, user[from_friend], ts[from_friend], post[from_friend])

    keep = (post >= 0) & (post < n_avail) & (world.post_author[post.clip(0)] != user)
    slot_sess, user, ts, post = slot_sess[keep], user[keep], ts[keep], post[keep]
    # One post at most once per session; the logging policy orders the rest at random.
    _, first = np.unique(slot_sess.astype(np.int64) * len(created) + post, return_index=True)
    first.sort()
    slot_sess, user, ts, post = slot_sess[first], user[first], ts[first], post[first]
    order = np.lexsort((rng.random(len(slot_sess)), slot_sess))
    slot_sess, user, ts, post = slot_sess[order], user[order], ts[order], post[order]
    start_of_sess = np.searchsorted(slot_sess, slot_sess)
    position = (np.arange(len(slot_sess)) - start_of_sess).astype(np.int32)
    ts = ts + position.astype(np.int64) * 2 * 10**9  # a couple of seconds of scrolling per post

    labels, dwell, probs = sample_reactions(world, rng, user, post, ts, position)
    frame = pd.DataFrame(
        {
            "impression_id": np.arange(len(user), dtype=np.int64),
            "request_id": slot_sess.astype(np.int64),
            "user_id": user.astype(np.int64),
            "post_id": post.astype(np.int64),
            "ts": pd.to_datetime(ts, utc=True),
            "position": position,
            "variant": LOGGING_VARIANT,
            "model_version": LOGGING_MODEL,
            **labels,
            "dwell_seconds": dwell,
            "skip": (dwell < 0.5).astype(np.int8),
            **probs,
        }
    )
    return frame


def _friend_posts(rng, world: World, friends: dict, user, ts, fallback) -> np.ndarray:
    """A recent post by a random friend (tie formed by then), else the fallback post."""
    deg = friends["ptr"][user + 1] - friends["ptr"][user]
    has = deg > 0
    tie = friends["ptr"][user] + (rng.random(len(user)) * np.maximum(deg, 1)).astype(np.int64)
    tie = tie.clip(max=len(friends["friend"]) - 1)
    has &= friends["formed_ns"][tie] <= ts
    friend = friends["friend"][tie]
    # Posts sorted by (author, time): a friend's posts up to ts are one contiguous run.
    created_s = world.post_created_ns // 10**9
    base = created_s.min()
    span = int(created_s.max() - base + 1)
    key = world.post_author.astype(np.int64) * span + (created_s - base)
    by_author = np.argsort(key, kind="stable")
    key_sorted = key[by_author]
    first = np.searchsorted(key_sorted, friend * span)
    end = np.searchsorted(key_sorted, friend * span + np.clip(ts // 10**9 - base, -1, span - 1), side="right")
    count = end - first
    has &= count > 0
    back = np.minimum(rng.exponential(2.0, size=len(user)).astype(np.int64), np.maximum(count - 1, 0))
    pick = by_author[np.clip(end - 1 - back, 0, len(by_author) - 1)]
    return np.where(has, pick, fallback)


def sample_reactions(world: World, rng: np.random.Generator, user, post, ts, position):
    """Sample labels and dwell from the reaction model; return them with the true probabilities."""
    model = world.reaction_model(user, post, ts, position)
    n = len(user)
    p_click = model.examine * model.click_given_examine
    click = rng.random(n) < p_click
    # Among non-clicks, was the post looked at? P(examined | no click) = (e - c) / (1 - c).
    examined = click | (rng.random(n) < (model.examine - p_click) / np.maximum(1.0 - p_click, 1e-12))
    labels = {"click": click}
    for r, q in model.given_click.items():
        labels[r] = click & (rng.random(n) < q)
    labels["hide"] = examined & ~click & (rng.random(n) < model.hide_given_examined_no_click)
    labels["block"] = labels["hide"] & (rng.random(n) < model.block_given_hide)
    branch_mu = np.where(click, model.dwell_mu["click"], np.where(examined, model.dwell_mu["seen"], model.dwell_mu["unseen"]))
    sigma = np.where(
        click, model.dwell_sigma["click"], np.where(examined, model.dwell_sigma["seen"], model.dwell_sigma["unseen"])
    )
    dwell = np.round(np.exp(branch_mu + sigma * rng.standard_normal(n)), 3)
    labels = {r: labels[r].astype(np.int8) for r in REACTIONS}
    return labels, dwell, model.probabilities()


def _users_table(users: dict) -> pd.DataFrame:
    country = users["country"]
    return pd.DataFrame(
        {
            "user_id": np.arange(len(country), dtype=np.int64),
            "age": users["age"],
            "gender": users["gender"],
            "country": country,
            "language": [COUNTRIES[c][1] for c in country],
            "timezone": [COUNTRIES[c][2] for c in country],
            "signup_ts": pd.to_datetime(users["signup_ns"], utc=True),
        }
    )


def _posts_table(rng: np.random.Generator, posts: dict) -> pd.DataFrame:
    topic_names = list(TOPICS)
    m = len(posts["author"])
    n_topic_words = rng.integers(4, 9, size=m)
    n_common = rng.integers(2, 6, size=m)
    n_tags = rng.choice(4, size=m, p=[0.3, 0.4, 0.2, 0.1])
    mentions: list[list[int]] = [[] for _ in range(m)]
    for p, u in zip(posts["mention_post"], posts["mention_user"]):
        mentions[p].append(int(u))
    texts, tags = [], []
    for i in range(m):
        words, hashtags = TOPICS[topic_names[posts["topic"][i]]]
        chosen = list(rng.choice(words, size=n_topic_words[i])) + list(rng.choice(COMMON_WORDS, size=n_common[i]))
        rng.shuffle(chosen)
        texts.append(" ".join(chosen))
        tags.append(sorted(set(rng.choice(hashtags, size=n_tags[i]).tolist())))
    return pd.DataFrame(
        {
            "post_id": np.arange(m, dtype=np.int64),
            "author_id": posts["author"],
            "text": texts,
            "hashtags": tags,
            "mentions": mentions,
            "media_type": np.array(MEDIA_TYPES)[posts["media"]],
            "topic": np.array(topic_names)[posts["topic"]],
            "created_ts": pd.to_datetime(posts["created_ns"], utc=True),
        }
    )


def _friendships_table(friends: dict) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": friends["user"],
            "friend_id": friends["friend"],
            "formed_ts": pd.to_datetime(friends["formed_ns"], utc=True),
            "close_friend": friends["close"],
            "family": friends["family"],
        }
    )
