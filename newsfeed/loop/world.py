"""The simulated world going on past its dataset's end: who opens the app when, how they
react to what they are shown (the world's reaction model: the truth), which posts, users and
friendships appear, and the day interests drift.

What the loop will publish is drawn once, when it starts (users who sign up later, posts
written later, ties formed later, each with its time), so the world's arrays keep one size:
the reaction model only ever meets a post or tie after its time, and the loop publishes each
to the service when its time comes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data.simulator import DAY_NS, SimConfig, sample_reactions
from newsfeed.data.vocabulary import COMMON_WORDS, COUNTRIES, TOPICS
from newsfeed.data.world import WORLD_FILE, World
from newsfeed.schema import GENDERS, MEDIA_TYPES

FRIENDSHIP_DAYS = 120.0
"""A pair of users forms a tie at a rate that gives each of them half their ties in this long."""
SCROLL_SECONDS = 2
"""Between two posts of a page: reactions come a little apart."""


@dataclass
class Published:
    """What appears in the world at a time, in the service's contract (sorted by time)."""

    users: pd.DataFrame  # user_id, age, gender, country, language, timezone, signup_ns
    posts: pd.DataFrame  # post_id, author_id, text, hashtags, mentions, media_type, topic, created_ns
    friendships: pd.DataFrame  # user_id, friend_id, close_friend, family, formed_ns

    def due(self, t0: int, t1: int) -> dict[str, list[dict]]:
        """Items whose time is in [t0, t1), as API items (times left to the service's clock)."""
        out = {}
        for table, frame, column in (("users", self.users, "signup_ns"), ("posts", self.posts, "created_ns"),
                                     ("friendships", self.friendships, "formed_ns")):
            part = frame[(frame[column] >= t0) & (frame[column] < t1)].drop(columns=[column])
            out[table] = part.to_dict("records")
        return out


class LiveWorld:
    """A dataset's world from its end on: ``world`` (the truth, grown with what the loop will
    publish), each user's activity, and the random stream the loop's behaviour comes from."""

    def __init__(self, world: World, tables: dict[str, pd.DataFrame], start_ns: int, days: float, seed: int):
        self.rng = np.random.default_rng(seed)
        self.config = SimConfig.model_validate(world.meta.get("config", {}))
        self.start_ns, self.end_ns = int(start_ns), int(start_ns + days * DAY_NS)
        impressions = tables["impressions"]
        first, last = impressions["ts"].min(), impressions["ts"].max()
        span_days = max((last - first).total_seconds() / 86_400, 1.0)
        sessions = impressions.groupby("user_id")["request_id"].nunique()
        n = world.n_users
        # Sessions per day of each user, as the data shows them; users with none (new ones) get the mean.
        rate = np.zeros(n)
        rate[sessions.index.to_numpy()] = sessions.to_numpy() / span_days
        rate[rate == 0] = rate[rate > 0].mean() if (rate > 0).any() else self.config.sessions_per_day
        self.signup_ns = np.full(n, np.iinfo(np.int64).min)
        signups = tables["users"].set_index("user_id")["signup_ts"]
        self.signup_ns[signups.index.to_numpy()] = pd.to_datetime(signups, utc=True).astype("int64").to_numpy()
        self.posts_per_day = len(tables["posts"]) / (self.config.days + 2)
        # Post ids are positions in the world's arrays. After an earlier loop every post it drew
        # is in the data too; one it stopped before publishing lives on in the world only.
        known = int(tables["posts"]["post_id"].max()) + 1
        if known > len(world.post_author):
            raise ValueError(f"the data has posts up to id {known - 1} that its world ({len(world.post_author)} posts) "
                             "does not know: not this dataset's world")
        self.first_new_post = len(world.post_author)
        self.world, self.rate = world, rate
        self.published = self._grow(tables, days)

    @classmethod
    def of_dataset(cls, data_dir: Path, start_ns: int, days: float, seed: int) -> "LiveWorld":
        from newsfeed.data.io import read_dataset

        world = World.of_dataset(data_dir)
        if world is None:
            raise FileNotFoundError(f"{data_dir}: not a simulated dataset (no {WORLD_FILE} to draw reactions from)")
        return cls(world, read_dataset(data_dir, ("users", "posts", "impressions")), start_ns, days, seed)

    # -- what the loop will publish ------------------------------------------------------------------

    def _grow(self, tables: dict[str, pd.DataFrame], days: float) -> Published:
        users = self._new_users(days)
        friendships = self._new_friendships(days)
        posts = self._new_posts(days, tables)
        return Published(users, posts, friendships)

    def _new_users(self, days: float) -> pd.DataFrame:
        c, w, rng = self.config, self.world, self.rng
        k = int(rng.poisson(c.users * c.new_user_fraction / c.days * days))
        old_n, n = w.n_users, w.n_users + k
        interest = rng.dirichlet(np.full(len(w.topics), 0.25), size=k).astype(np.float32)
        signup = self.start_ns + (rng.random(k) * (self.end_ns - self.start_ns)).astype(np.int64)
        self.world = replace(
            w, interest_before=np.vstack([w.interest_before, interest]),
            interest_after=np.vstack([w.interest_after, interest]),
            reactivity=np.concatenate([w.reactivity, rng.normal(0.0, 0.35, k)]),
            passive=np.concatenate([w.passive, rng.random(k) < c.passive_fraction]),
            author_popularity=np.concatenate([w.author_popularity, rng.normal(0.0, 0.8, k)]),
            friend_key=_rekey(w.friend_key, old_n, n), mention_key=_rekey(w.mention_key, old_n, n))
        self.rate = np.concatenate([self.rate, np.full(k, self.rate.mean())])
        self.signup_ns = np.concatenate([self.signup_ns, signup])
        countries = np.array(list(COUNTRIES))
        weights = np.array([v[0] for v in COUNTRIES.values()])
        country = rng.choice(countries, size=k, p=weights / weights.sum())
        return pd.DataFrame({
            "user_id": np.arange(old_n, n, dtype=np.int64),
            "age": np.clip(np.round(rng.normal(33, 12, k)), 13, 80).astype(int),
            "gender": rng.choice(np.array(GENDERS), size=k, p=[0.49, 0.49, 0.02]),
            "country": country, "language": [COUNTRIES[x][1] for x in country],
            "timezone": [COUNTRIES[x][2] for x in country], "signup_ns": signup}).sort_values("signup_ns")

    def _new_friendships(self, days: float) -> pd.DataFrame:
        w, rng, n = self.world, self.rng, self.world.n_users
        existing = len(w.friend_key) // 2
        k = int(rng.poisson(max(existing, n) / FRIENDSHIP_DAYS * days))
        a, b = rng.integers(0, n, k), rng.integers(0, n, k)
        formed = np.maximum(self.start_ns + (rng.random(k) * (self.end_ns - self.start_ns)).astype(np.int64),
                            np.maximum(self.signup_ns[a], self.signup_ns[b]) + 3_600 * 10**9)
        keep = (a != b) & (formed < self.end_ns) & ~np.isin(a.astype(np.int64) * n + b, w.friend_key)
        a, b, formed = a[keep], b[keep], formed[keep]
        _, first = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_index=True)
        a, b, formed = a[first], b[first], formed[first]
        close, family = rng.random(len(a)) < 0.12, rng.random(len(a)) < 0.05
        key = np.concatenate([w.friend_key, a * n + b, b * n + a])
        order = np.argsort(key, kind="stable")
        self.world = replace(
            w, friend_key=key[order],
            friend_formed_ns=np.concatenate([w.friend_formed_ns, formed, formed])[order],
            friend_close=np.concatenate([w.friend_close, close, close])[order],
            friend_family=np.concatenate([w.friend_family, family, family])[order])
        return pd.DataFrame({"user_id": a, "friend_id": b, "close_friend": close, "family": family,
                             "formed_ns": formed}).sort_values("formed_ns")

    def _new_posts(self, days: float, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
        c, w, rng = self.config, self.world, self.rng
        m = int(rng.poisson(self.posts_per_day * days))
        created = np.sort(self.start_ns + (rng.random(m) * (self.end_ns - self.start_ns)).astype(np.int64))
        weight = np.exp(w.author_popularity) * self.rate
        author = rng.choice(w.n_users, size=m, p=weight / weight.sum())
        late = self.signup_ns[author] > created  # nobody writes before signing up
        settled = np.flatnonzero(self.signup_ns < self.start_ns)
        author[late] = rng.choice(settled, size=late.sum(), p=weight[settled] / weight[settled].sum())
        main = self._main_topics()
        drawn = (w.interest_before[author].cumsum(1) < rng.random((m, 1))).sum(1).clip(max=len(w.topics) - 1)
        topic = np.where(rng.random(m) < 0.8, main[author], drawn).astype(np.int16)
        media = rng.choice(len(MEDIA_TYPES), size=m, p=[0.4, 0.35, 0.15, 0.1]).astype(np.int8)
        ids = np.arange(self.first_new_post, self.first_new_post + m, dtype=np.int64)
        self.world = replace(
            w, post_author=np.concatenate([w.post_author, author]), post_topic=np.concatenate([w.post_topic, topic]),
            post_quality=np.concatenate([w.post_quality, rng.normal(0.0, 0.5, m)]),
            post_viral=np.concatenate([w.post_viral, rng.random(m) < c.viral_fraction]),
            post_media=np.concatenate([w.post_media, media]),
            post_created_ns=np.concatenate([w.post_created_ns, created]))
        names = list(TOPICS)
        texts, tags = [], []
        for t in topic:
            words, hashtags = TOPICS[names[t]]
            chosen = [*rng.choice(words, size=rng.integers(4, 9)), *rng.choice(COMMON_WORDS, size=rng.integers(2, 6))]
            texts.append(" ".join(rng.permutation(chosen)))
            tags.append(sorted(set(rng.choice(hashtags, size=rng.choice(4, p=[0.3, 0.4, 0.2, 0.1])).tolist())))
        return pd.DataFrame({"post_id": ids, "author_id": author.astype(np.int64), "text": texts, "hashtags": tags,
                             "mentions": [[] for _ in range(m)], "media_type": np.array(MEDIA_TYPES)[media],
                             "topic": np.array(names)[topic], "created_ns": created})

    def _main_topics(self) -> np.ndarray:
        """Each user's main topic as an author: the one most of their posts so far are on (as the
        dataset drew it), else a draw from their interests (new and silent users)."""
        w, k = self.world, len(self.world.topics)
        counts = np.zeros((w.n_users, k))
        np.add.at(counts, (w.post_author, w.post_topic.astype(np.int64)), 1)
        drawn = (w.interest_before.cumsum(1) < self.rng.random((w.n_users, 1))).sum(1).clip(max=k - 1)
        return np.where(counts.sum(1) > 0, counts.argmax(1), drawn)

    # -- behaviour ---------------------------------------------------------------------------------

    def sessions(self, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
        """(user, time) of every app opening in [t0, t1), in time order: a Poisson count per
        user at their rate, for users signed up by then."""
        active = np.flatnonzero(self.signup_ns < t0)
        counts = self.rng.poisson(self.rate[active] * (t1 - t0) / DAY_NS)
        users = np.repeat(active, counts)
        when = t0 + (self.rng.random(len(users)) * (t1 - t0)).astype(np.int64)
        order = np.argsort(when, kind="stable")
        return users[order], when[order]

    def react(self, user: int, posts: np.ndarray, ts_ns: int, first_position: int = 0) -> dict:
        """Reactions to one page (labels per reaction, dwell) drawn from the true model, and the
        page's true expected engagement per post under ``weights`` (for the loop's accounting)."""
        posts = np.asarray(posts, np.int64)
        n = len(posts)
        positions = first_position + np.arange(n)
        when = ts_ns + np.arange(n, dtype=np.int64) * SCROLL_SECONDS * 10**9
        labels, dwell, probs = sample_reactions(self.world, self.rng, np.full(n, user), posts, when, positions)
        return {"labels": labels, "dwell": dwell, "probabilities": probs}

    def drift(self, at_ns: int, strength: float) -> list[str]:
        """From ``at_ns`` on, every user's interests move ``strength`` of the way towards a mix
        of three topics that start trending; returns their names."""
        w, rng = self.world, self.rng
        k = len(w.topics)
        now = w.interest_after if at_ns >= w.drift_ns else w.interest_before
        trending = rng.choice(k, size=3, replace=False)
        alpha = np.full(k, 0.1)
        alpha[trending] = 2.0
        after = (1 - strength) * now + strength * rng.dirichlet(alpha, size=w.n_users)
        self.world = replace(w, interest_before=now, interest_after=after.astype(np.float32), drift_ns=int(at_ns))
        return [w.topics[i] for i in trending]

    def save(self, data_dir: Path) -> Path:
        """The grown world as the dataset's truth (written whole, then renamed): what the next
        training run's evaluation scores against."""
        path = Path(data_dir) / WORLD_FILE
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.npz")
        self.world.save(tmp)
        os.replace(tmp, path)
        return path


def _rekey(key: np.ndarray, old_n: int, n: int) -> np.ndarray:
    """Pair keys ``a * old_n + b`` as ``a * n + b`` (order kept: a then b)."""
    return (key // old_n) * n + key % old_n if old_n != n else key


def items(frame_rows: list[dict]) -> list[dict]:
    """Rows as JSON-ready API items (numpy scalars to Python)."""
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()} for row in frame_rows]

