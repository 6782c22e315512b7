"""The offline feature tables: their entities and typed columns.

One declaration shared by the feature jobs (which must produce exactly these
columns) and the Feast definitions in ``feature_repo/`` (which turn them into
fields), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from newsfeed.schema import REACTIONS

TIMESTAMP = "event_timestamp"
WINDOWS: dict[str, int] = {"1d": 1, "7d": 7, "30d": 30}
"""Trailing windows of the user engagement aggregates, in days."""
AFFINITY_REACTIONS: tuple[str, ...] = ("click", "like", "comment", "share")
POSITIVE_REACTIONS: tuple[str, ...] = ("click", "like", "comment", "share")
"""Reactions that count as interest (topic-interest vector, recent engaged posts)."""
INTEREST_HALF_LIFE_DAYS = 8.0
INTEREST_PRIOR_IMPRESSIONS = 100.0
"""topic_interest_rate: decay and shrinkage, chosen without the test period
(``benchmarks/model_choices.py --only interest``: on three windows before it, each setting's
estimate alone orders the feeds, scored by their true expected engagement; seed 7, demo
scale: 8 days / 100 impressions 0.322 [0.307, 0.336], the earlier 2 days / 5 impressions
0.302, paired +0.020 [+0.014, +0.025], and 8 days the best half-life in each window; half-lives
of 0.5-1 day fall 0.03-0.08 behind, priors of 5-100 differ by under 0.001)."""
INTEREST_TREND_HALF_LIFE_DAYS: float | None = None
"""The topics' trend in topic_interest_rate's shrinkage target (everyone's recent rate per topic,
decayed by this half-life; None: shrunk towards the user's own rate alone). An option, not the
default: with 8 days / 20 impressions / 0.25 days the estimate alone orders the backtest's feeds
far better (0.443 against 0.322, paired +0.121 [+0.111, +0.132]), the ranker's logged feeds gain
(+0.025 [+0.022, +0.028] on the backtest; seed 37's test feeds 0.687 -> 0.722), but the served
feed at the data's end loses on both seeds measured (seed 7 0.701 -> 0.684, seed 37 0.668 ->
0.615): docs/model-choices.md, "The topics' trend"."""
HISTORY_LENGTH = 20
"""How many recently engaged posts a user's history keeps."""
POST_SNAPSHOT_HOURS = 1
"""How often a post's reactions so far are snapshot offline (``post_engagement`` and the live
counters' offline rows), at the end of each such period the post was shown in. Serving reads
counters kept current by pushed events; training and every offline figure read these rows, so
hourly ones show the ranker what it will have when it serves (24, the earlier default, hid up
to a day of a post's reactions: a quarter of impressions are of posts under 13 hours old).
Chosen on the served feed over three trainings each (``benchmarks/served_spread.py``;
docs/model-choices.md, "The served feed across trainings"): against daily snapshots +0.040 on
seed 7 (every training ahead), ties on seeds 37 and 41 (-0.007, -0.002), and the spread across
trainings smaller on all three (sd 0.054 -> 0.036, 0.029 -> 0.010, 0.015 -> 0.007). The
backtest's ranker figure rises by +0.0275 [+0.023, +0.031], the evaluation's gain (``--only
post_counters``). Four times the rows of daily snapshots."""

# Column types: int64, float32, string, int64_list, float32_list.


@dataclass(frozen=True)
class FeatureTable:
    name: str
    keys: tuple[str, ...]
    columns: dict[str, str] = field(default_factory=dict)
    description: str = ""


def _user_engagement_columns() -> dict[str, str]:
    cols: dict[str, str] = {}
    for w in WINDOWS:
        cols[f"impression_count_{w}"] = "int64"
        for r in REACTIONS:
            cols[f"{r}_count_{w}"] = "int64"
            cols[f"{r}_rate_{w}"] = "float32"
        cols[f"dwell_mean_{w}"] = "float32"
    cols["topic_interest"] = "float32_list"
    cols["topic_interest_7d"] = "float32_list"
    cols["topic_interest_rate"] = "float32_list"
    return cols


USER_PROFILE = FeatureTable(
    "user_profile", ("user_id",),
    {"age_bucket": "int64", "gender": "string", "country": "string", "language": "string", "timezone": "string"},
    "Demographics as of sign-up; age in buckets (-1 unknown).",
)
USER_ENGAGEMENT = FeatureTable(
    "user_engagement", ("user_id",), _user_engagement_columns(),
    "Daily snapshots: per-reaction counts and rates over trailing 1/7/30 days, mean dwell, and the "
    "topic-interest distribution of what the user engaged with in the last 30 days (and 7: interests move), and "
    "topic_interest_rate: positive reactions per impression by topic, decayed (half-life 8 days) and shrunk "
    "towards the user's own rate, so it follows drifting interests and corrects for what the feed happened to show.",
)
USER_HISTORY = FeatureTable(
    "user_history", ("user_id",), {"recent_post_ids": "int64_list", "recent_author_ids": "int64_list"},
    f"Daily snapshots: the last {HISTORY_LENGTH} posts the user engaged with (click, like, comment, share), newest "
    "first, and their authors (-1: no author), so retrieval can match the authors a user follows to new posts.",
)
POST_CONTENT = FeatureTable(
    "post_content", ("post_id",),
    {
        "written_by": "int64", "topic": "string", "topic_id": "int64", "hashtag_buckets": "int64_list",
        "media_type": "string", "created_unix": "int64", "mentions": "int64_list", "text_embedding": "float32_list",
    },
    "What a post is, as of publication: its author (written_by, -1: none; not named author_id, the affinity "
    "view's join key, which a feature must not shadow), topic, hashed hashtags, media, mentions, reduced MiniLM "
    "text embedding.",
)
POST_ENGAGEMENT = FeatureTable(
    "post_engagement", ("post_id",),
    {"impressions_log1p": "float32", **{f"{r}_log1p": "float32" for r in REACTIONS},
     **{f"{r}_rate": "float32" for r in REACTIONS}},
    "Reactions so far (log1p-scaled counts and rates per impression), snapshot at the end of each active period (catalog.POST_SNAPSHOT_HOURS).",
)
POST_ENGAGEMENT_LIVE = FeatureTable(
    "post_engagement_live", ("post_id",),
    {f"{r}_count": "int64" for r in REACTIONS},
    "Running reaction counters: snapshots offline (catalog.POST_SNAPSHOT_HOURS), kept current online by pushed events.",
)
USER_AUTHOR_AFFINITY = FeatureTable(
    "user_author_affinity", ("user_id", "author_id"),
    {"impression_count": "int64", **{f"{r}_rate": "float32" for r in AFFINITY_REACTIONS},
     "friends_since_unix": "int64", "close_friend": "int64", "family": "int64"},
    "The user's reactions to this author's posts so far, and their friendship (-1 / 0 when not friends); a pair "
    "has rows only from the time it became related (a reaction or a friendship): seen-only pairs are missing.",
)

TABLES: dict[str, FeatureTable] = {
    t.name: t for t in (USER_PROFILE, USER_ENGAGEMENT, USER_HISTORY, POST_CONTENT, POST_ENGAGEMENT, POST_ENGAGEMENT_LIVE,
                        USER_AUTHOR_AFFINITY)
}
