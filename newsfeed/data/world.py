"""The simulator's latent world and its reaction model: the ground truth.

One function, :meth:`World.reaction_model`, says how likely a user is to react
to a post at a time and feed position. The simulator samples labels from it,
and any ranking can later be scored against it (the oracle), for logged
impressions or for pairs never shown. Everything is vectorised over pairs.

How engagement arises (logit scale unless said otherwise):
relevance = topic interest (which drifts after the drift day) + author
popularity + post quality + virality + friendship (stronger for close friends
and family, only once the friendship exists) + being mentioned - staleness.
A user examines position k with probability (1 + k)^-0.5 (position bias);
an examined post is clicked with sigmoid(relevance + user reactivity);
likes, comments, shares and friend requests follow a click; hides follow an
examined non-click, blocks follow a hide. Passive users rarely react.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
from scipy.special import expit, ndtr

from newsfeed.schema import MEDIA_TYPES, REACTIONS, SKIP_DWELL_SECONDS

WORLD_FILE = Path("truth") / "world.npz"
"""Where a simulated dataset keeps its world, relative to the data dir."""
HOUR_NS = 3_600 * 10**9
PASSIVE_PENALTY = 2.2
LOG_SKIP = float(np.log(SKIP_DWELL_SECONDS))
# Per media type (text, image, video, link): effect on likes and on log dwell.
MEDIA_LIKE = np.array([0.0, 0.4, 0.2, -0.3])
MEDIA_DWELL = np.array([0.0, -0.2, 0.8, 0.3])


def examine_probability(positions: np.ndarray) -> np.ndarray:
    """P(a user looks at feed position k) = (1 + k)^-0.5, the position bias. Every reaction
    scales with it, so a post's expected engagement at k is this times its engagement at 0."""
    return (1.0 + np.asarray(positions, np.float64)) ** -0.5


@dataclass
class ReactionModel:
    """Probabilities for a batch of (user, post, time, position) pairs."""

    examine: np.ndarray  # P(the user looks at the post), position bias
    click_given_examine: np.ndarray
    given_click: dict[str, np.ndarray]  # like, comment, share, friend_request
    hide_given_examined_no_click: np.ndarray
    block_given_hide: np.ndarray
    dwell_mu: dict[str, np.ndarray]  # log-normal location per branch
    dwell_sigma: dict[str, float]

    def probabilities(self) -> dict[str, np.ndarray]:
        """Marginal probability of each reaction and of a skip, named p_<label>."""
        click = self.examine * self.click_given_examine
        hide = (self.examine - click) * self.hide_given_examined_no_click
        p = {"p_click": click}
        for r, q in self.given_click.items():
            p[f"p_{r}"] = click * q
        p["p_hide"] = hide
        p["p_block"] = hide * self.block_given_hide
        p["p_skip"] = (
            click * self._skip("click") + (self.examine - click) * self._skip("seen")
            + (1.0 - self.examine) * self._skip("unseen")
        )
        return {f"p_{r}": p[f"p_{r}"] for r in (*REACTIONS, "skip")}

    def _skip(self, branch: str) -> np.ndarray:
        return ndtr((LOG_SKIP - self.dwell_mu[branch]) / self.dwell_sigma[branch])


@dataclass
class World:
    """Latent state of a simulated social network, indexed by user_id and post_id."""

    topics: list[str]
    drift_ns: int  # interests switch from `before` to `after` at this time
    interest_before: np.ndarray  # (users, topics), rows sum to 1
    interest_after: np.ndarray
    reactivity: np.ndarray  # (users,) logit offset
    passive: np.ndarray  # (users,) bool
    author_popularity: np.ndarray  # (users,) log scale
    post_author: np.ndarray  # (posts,)
    post_topic: np.ndarray  # (posts,) index into topics
    post_quality: np.ndarray
    post_viral: np.ndarray  # bool
    post_media: np.ndarray  # index into MEDIA_TYPES
    post_created_ns: np.ndarray
    mention_key: np.ndarray  # sorted post_id * n_users + user_id
    friend_key: np.ndarray  # sorted user_id * n_users + friend_id, both directions
    friend_formed_ns: np.ndarray
    friend_close: np.ndarray
    friend_family: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.reactivity)

    def interest(self, users: np.ndarray, posts: np.ndarray, ts_ns: np.ndarray) -> np.ndarray:
        """Each user's interest in the post's topic at that time (after drift where it applies)."""
        topic = self.post_topic[posts]
        before = self.interest_before[users, topic]
        after = self.interest_after[users, topic]
        return np.where(ts_ns < self.drift_ns, before, after)

    def friendship(self, users: np.ndarray, authors: np.ndarray, ts_ns: np.ndarray):
        """(is_friend, close_friend, family) as of each time: a friendship formed later does not count."""
        key = users.astype(np.int64) * self.n_users + authors
        i = np.searchsorted(self.friend_key, key).clip(max=len(self.friend_key) - 1)
        found = (self.friend_key[i] == key) & (self.friend_formed_ns[i] <= ts_ns)
        return found, found & self.friend_close[i], found & self.friend_family[i]

    def mentioned(self, users: np.ndarray, posts: np.ndarray) -> np.ndarray:
        if len(self.mention_key) == 0:
            return np.zeros(len(users), dtype=bool)
        key = posts.astype(np.int64) * self.n_users + users
        i = np.searchsorted(self.mention_key, key).clip(max=len(self.mention_key) - 1)
        return self.mention_key[i] == key

    def reaction_model(
        self, users: np.ndarray, posts: np.ndarray, ts_ns: np.ndarray, positions: np.ndarray
    ) -> ReactionModel:
        users, posts = np.asarray(users, np.int64), np.asarray(posts, np.int64)
        ts_ns, positions = np.asarray(ts_ns, np.int64), np.asarray(positions)
        authors = self.post_author[posts]
        k = len(self.topics)
        topic_affinity = np.log((self.interest(users, posts, ts_ns) + 0.02) * k)
        friend, close, family = self.friendship(users, authors, ts_ns)
        age_h = np.maximum(ts_ns - self.post_created_ns[posts], 0) / HOUR_NS
        viral = self.post_viral[posts]
        media = self.post_media[posts]
        relevance = (
            1.0 * topic_affinity
            + 0.4 * self.author_popularity[authors]
            + self.post_quality[posts]
            + 1.3 * viral
            + 1.0 * friend + 0.9 * close + 0.6 * family
            + 2.0 * self.mentioned(users, posts)
            - 0.45 * np.log1p(age_h / 6.0)
        )
        passive = PASSIVE_PENALTY * self.passive[users]
        not_self = authors != users
        return ReactionModel(
            examine=examine_probability(positions),
            click_given_examine=expit(-1.3 + relevance + self.reactivity[users] - passive),
            given_click={
                "like": expit(-1.0 + 0.7 * relevance + MEDIA_LIKE[media] - passive),
                "comment": expit(-3.0 + 0.6 * relevance + 1.0 * friend - passive),
                "share": expit(-3.4 + 0.5 * relevance + 1.5 * viral - passive),
                "friend_request": expit(-3.5 + 0.5 * topic_affinity + 0.6 * self.author_popularity[authors])
                * (~friend & not_self),
            },
            hide_given_examined_no_click=expit(-3.4 - 0.9 * relevance),
            block_given_hide=expit(-2.0 - 0.5 * relevance - 1.5 * friend),
            dwell_mu={
                "click": 2.0 + 0.3 * relevance + MEDIA_DWELL[media],
                "seen": np.log(1.2) + 0.25 * topic_affinity,
                "unseen": np.full(len(users), np.log(0.3)),
            },
            dwell_sigma={"click": 0.8, "seen": 0.9, "unseen": 0.5},
        )

    def probabilities(self, users, posts, ts_ns, positions) -> dict[str, np.ndarray]:
        """The oracle: true marginal probabilities p_click ... p_block, p_skip."""
        return self.reaction_model(users, posts, ts_ns, positions).probabilities()

    def engagement(self, users, posts, ts_ns, positions, weights: dict[str, float]) -> np.ndarray:
        """True expected engagement score: sum of weight x P(reaction)."""
        p = self.probabilities(users, posts, ts_ns, positions)
        return sum(w * p[f"p_{r}"] for r, w in weights.items())

    def save(self, path: Path) -> None:
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        meta = {"topics": self.topics, "drift_ns": self.drift_ns, "media_types": list(MEDIA_TYPES), **self.meta}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, meta=np.array(json.dumps(meta, default=str)), **arrays)

    @classmethod
    def of_dataset(cls, data_dir: Path) -> "World | None":
        """The world behind a simulated dataset; None for real data (no ground truth)."""
        path = Path(data_dir) / WORLD_FILE
        return cls.load(path) if path.exists() else None

    @classmethod
    def load(cls, path: Path) -> "World":
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        topics, drift_ns = meta.pop("topics"), meta.pop("drift_ns")
        meta.pop("media_types", None)
        return cls(topics=topics, drift_ns=drift_ns, meta=meta, **arrays)
