"""Open Bandit Dataset (ZOZOTOWN) into canonical tables.

PATH is the dataset root (``random/men/men.csv``, ``bts/men/men.csv``), one
behaviour policy's folder, or one campaign folder; every log found for one
campaign is imported. Mapping: each row is an impression (its own request) of
``item_id`` at ``position - 1``, with click and the logging policy's
``propensity_score`` kept as ``propensity`` (off-policy evaluation needs it);
the variant is the behaviour policy (``random``, ``bts``). There are no user
ids: a user is one combination of the four hashed user features. Items are
posts with no author or text: topic from item_feature_1, hashtags from the
other categorical features, created at their first impression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.data.adapters.base import AdapterError, finish, first_seen, impressions_frame, posts_frame
from newsfeed.data.adapters.base import read_delimited, users_frame

USER_FEATURES = [f"user_feature_{i}" for i in range(4)]
LOG_COLUMNS = {"timestamp": "str", "item_id": "int", "position": "int", "click": "int",
               "propensity_score": "float", **{c: "str" for c in USER_FEATURES}}
ITEM_COLUMNS = {"item_id": "int", "item_feature_0": "float", "item_feature_1": "str",
                "item_feature_2": "str", "item_feature_3": "str"}


def _logs(path: Path) -> list[tuple[str, Path, Path]]:
    """(policy, log csv, item_context csv) for each log under path."""
    found = []
    for context in sorted(path.rglob("item_context.csv")):
        campaign = context.parent
        log = campaign / f"{campaign.name}.csv"
        if log.exists():
            found.append((campaign.parent.name, log, context))
    if not found:
        raise AdapterError(f"{path}: no Open Bandit log found (expected <policy>/<campaign>/<campaign>.csv "
                           "beside item_context.csv)")
    campaigns = {log.parent.name for _, log, _ in found}
    if len(campaigns) > 1:
        raise AdapterError(f"{path}: holds campaigns {sorted(campaigns)}; point PATH at one campaign's logs")
    return found


def _read_log(log: Path) -> pd.DataFrame:
    # The user-item affinity columns are not part of the canonical tables and are not read.
    df = read_delimited(log, LOG_COLUMNS, sep=",", header=True)
    ts = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="ISO8601")
    if ts.isna().any():
        i = int(np.flatnonzero(ts.isna().to_numpy())[0])
        raise AdapterError(f"{log}:{i + 2}: timestamp {df['timestamp'].iloc[i]!r} is not a time")
    for column, ok in (("position", df["position"].between(1, 3)), ("click", df["click"].isin([0, 1])),
                       ("propensity_score", df["propensity_score"].between(0, 1, inclusive="right"))):
        if not ok.all():
            i = int(np.flatnonzero(~ok.to_numpy())[0])
            raise AdapterError(f"{log}:{i + 2}: {column} out of range, got {df[column].iloc[i]}")
    return df.assign(ts=ts)


def load(path: Path) -> dict[str, pd.DataFrame]:
    path = Path(path)
    frames, contexts = [], []
    for policy, log, context in _logs(path):
        frames.append(_read_log(log).assign(policy=policy))
        contexts.append(read_delimited(context, ITEM_COLUMNS, sep=",", header=True))
    log = pd.concat(frames, ignore_index=True).sort_values("ts", kind="stable").reset_index(drop=True)
    items = pd.concat(contexts, ignore_index=True).drop_duplicates("item_id").sort_values("item_id")

    user_key = log[USER_FEATURES].agg("|".join, axis=1)
    user_id = pd.Series(pd.factorize(user_key)[0], index=log.index)
    impressions = impressions_frame(
        user_id, log["item_id"], log["ts"], variant=log["policy"].to_numpy(),
        model_version=("obd-" + log["policy"]).to_numpy(), click=log["click"],
        position=(log["position"] - 1).astype(np.int32), propensity=log["propensity_score"].astype(float),
    )

    created = items["item_id"].map(first_seen(log["item_id"], log["ts"])).fillna(log["ts"].min())
    posts = posts_frame(
        items["item_id"], [""] * len(items), items["item_feature_1"].str[:8], created, media_type="image",
        hashtags=[[f"#f2_{a[:8]}", f"#f3_{b[:8]}"] for a, b in zip(items["item_feature_2"], items["item_feature_3"])],
    )
    users = users_frame(np.arange(user_id.max() + 1), first_seen(user_id, log["ts"]).sort_index().to_numpy())
    return finish(users, posts, impressions)
