"""Adapters: real file formats in, valid canonical tables out; malformed files named by line."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from newsfeed.cli import app
from newsfeed.data.adapters import AdapterError, import_dataset
from newsfeed.data.io import read_dataset
from newsfeed.data.validation import validate_tables


def assert_valid(tables):
    result = validate_tables(tables)
    assert result.errors == [], result.errors
    assert result.bad_rows == 0, {t: q[["quarantine_reason"]].head() for t, q in result.quarantine.items() if len(q)}


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(FIXTURES / name, target)
    return target


# --- MovieLens --------------------------------------------------------------------------


def test_movielens_fixture_round_trips():
    t = import_dataset("movielens", FIXTURES / "movielens")
    assert_valid(t)
    assert (len(t["users"]), len(t["posts"]), len(t["impressions"])) == (3, 4, 8)
    imp = t["impressions"].set_index(["user_id", "post_id"])
    assert imp.loc[(1, 1), ["click", "like", "hide"]].tolist() == [1, 1, 0]  # rating 5
    assert imp.loc[(1, 2), ["click", "like", "hide"]].tolist() == [1, 0, 0]  # rating 3
    assert imp.loc[(1, 3), ["click", "like", "hide"]].tolist() == [1, 0, 1]  # rating 1
    posts = t["posts"].set_index("post_id")
    assert posts.loc[1, "topic"] == "drama" and list(posts.loc[1, "hashtags"]) == ["#drama", "#romance"]
    # No release date: created at its first rating.
    assert posts.loc[4, "created_ts"] == pd.Timestamp(891717800, unit="s", tz="UTC")
    assert t["users"].set_index("user_id").loc[3, "age"] == 7
    assert set(t["events"]["event_type"]) == {"click", "like", "hide"}


@pytest.mark.parametrize("line, message", [
    ("1\t1\tx\t881250949", "u.data:2: column 'rating' should be int, got 'x'"),
    ("1\t1\t5", "u.data:2: expected 4 fields, found 3"),
    ("1\t1\t9\t881250949", "u.data:2: rating must be 1-5"),
])
def test_movielens_malformed_line_is_named(tmp_path, line, message):
    path = copy_fixture("movielens", tmp_path)
    rows = (path / "u.data").read_text().splitlines()
    rows[1] = line
    (path / "u.data").write_text("\n".join(rows) + "\n")
    with pytest.raises(AdapterError, match=message.replace("(", r"\(")):
        import_dataset("movielens", path)


def test_movielens_missing_file_is_named(tmp_path):
    path = copy_fixture("movielens", tmp_path)
    (path / "u.user").unlink()
    with pytest.raises(AdapterError, match="u.user: file not found"):
        import_dataset("movielens", path)


@pytest.mark.shared_data
def test_real_movielens_100k(shared_datasets):
    t = import_dataset("movielens", shared_datasets / "movielens-100k")
    assert (len(t["users"]), len(t["posts"]), len(t["impressions"])) == (943, 1682, 100_000)
    assert_valid(t)
    assert t["impressions"]["like"].mean() == pytest.approx(0.553, abs=0.01)  # share of ratings >= 4


# --- Open Bandit ------------------------------------------------------------------------


def test_open_bandit_fixture_round_trips():
    t = import_dataset("open-bandit", FIXTURES / "open_bandit")
    assert_valid(t)
    imp = t["impressions"]
    assert (len(t["users"]), len(t["posts"]), len(imp)) == (3, 4, 12)
    assert set(imp["variant"]) == {"random"}
    assert sorted(imp["position"].unique()) == [0, 1, 2]
    assert (imp["propensity"] == 0.25).all()
    assert imp["click"].sum() == 2


def test_open_bandit_bad_timestamp_is_named(tmp_path):
    path = copy_fixture("open_bandit", tmp_path)
    log = path / "random" / "men" / "men.csv"
    rows = log.read_text().splitlines()
    rows[3] = rows[3].replace("2019-11-24 00:00:16", "yesterday")
    log.write_text("\n".join(rows) + "\n")
    with pytest.raises(AdapterError, match=r"men.csv:4: timestamp 'yesterday"):
        import_dataset("open-bandit", path)


def test_open_bandit_without_logs_is_a_clear_error(tmp_path):
    with pytest.raises(AdapterError, match="no Open Bandit log found"):
        import_dataset("open-bandit", tmp_path)


@pytest.mark.shared_data
def test_real_open_bandit_keeps_both_policies_and_propensities(shared_datasets):
    t = import_dataset("open-bandit", shared_datasets / "open-bandit")
    assert_valid(t)
    imp = t["impressions"]
    assert len(imp) == 20_000
    assert imp["variant"].value_counts().to_dict() == {"bts": 10_000, "random": 10_000}
    # The uniform-random policy shows each of the 34 items with probability 1/34.
    assert np.allclose(imp.loc[imp["variant"] == "random", "propensity"], 1 / 34)
    assert len(t["posts"]) == 34


# --- MIND -------------------------------------------------------------------------------


def test_mind_fixture_round_trips():
    t = import_dataset("mind", FIXTURES / "mind")
    assert_valid(t)
    imp = t["impressions"]
    assert (len(t["users"]), len(t["posts"]), len(imp)) == (2, 4, 7)
    first = imp[imp["request_id"] == 1].sort_values("position")
    assert first["post_id"].tolist() == [1001, 1002, 1004] and first["click"].tolist() == [1, 0, 0]
    # History becomes clicks just before the user's first request.
    history = t["events"][(t["events"]["user_id"] == 10) & t["events"]["post_id"].isin([1003, 1004])]
    assert len(history) == 2 and (history["ts"] < first["ts"].min()).all()
    post = t["posts"].set_index("post_id").loc[1002]
    assert post["topic"] == "news" and post["text"].startswith("Senate passes") and '"A late' in post["text"]


def test_mind_bad_impression_token_is_named(tmp_path):
    path = copy_fixture("mind", tmp_path)
    text = (path / "behaviors.tsv").read_text().replace("N1002-1 N1001-0", "N1002-yes N1001-0")
    (path / "behaviors.tsv").write_text(text)
    with pytest.raises(AdapterError, match=r"behaviors.tsv:2: impression 'N1002-yes'"):
        import_dataset("mind", path)


def test_mind_wrong_field_count_is_named(tmp_path):
    path = copy_fixture("mind", tmp_path)
    with (path / "news.tsv").open("a") as f:
        f.write("N1005\tsports\textra\tfields\tthat\tdo\tnot\tfit\there\n")
    with pytest.raises(AdapterError, match=r"news.tsv:5: expected 8 fields, found 9"):
        import_dataset("mind", path)


# --- EB-NeRD ----------------------------------------------------------------------------


def write_ebnerd(root: Path) -> Path:
    """A tiny EB-NeRD split in the real layout: train/{behaviors,history}.parquet, articles.parquet."""
    split = root / "train"
    split.mkdir(parents=True)
    t0 = datetime(2023, 5, 20, 8, 0, tzinfo=timezone.utc)
    ts = pa.timestamp("us")
    behaviors = pa.table({
        "impression_id": pa.array([1, 2], pa.uint32()),
        "article_id": pa.array([None, 9001], pa.int32()),
        "impression_time": pa.array([t0, t0.replace(hour=9)], ts),
        "read_time": pa.array([12.0, 30.0], pa.float32()),
        "scroll_percentage": pa.array([None, 80.0], pa.float32()),
        "device_type": pa.array([1, 2], pa.int8()),
        "article_ids_inview": pa.array([[9001, 9002, 9003], [9002, 9003]], pa.list_(pa.int32())),
        "article_ids_clicked": pa.array([[9001], [9003]], pa.list_(pa.int32())),
        "user_id": pa.array([501, 502], pa.uint32()),
        "is_sso_user": pa.array([False, True]),
        "gender": pa.array([1, None], pa.int8()),
        "postcode": pa.array([None, 2], pa.int8()),
        "age": pa.array([40, None], pa.int8()),
        "is_subscriber": pa.array([False, True]),
        "session_id": pa.array([11, 12], pa.uint32()),
        "next_read_time": pa.array([45.0, 0.3], pa.float32()),
        "next_scroll_percentage": pa.array([100.0, 5.0], pa.float32()),
    })
    history = pa.table({
        "user_id": pa.array([501], pa.uint32()),
        "impression_time_fixed": pa.array([[t0.replace(day=18), t0.replace(day=19)]], pa.list_(ts)),
        "scroll_percentage_fixed": pa.array([[50.0, None]], pa.list_(pa.float32())),
        "article_id_fixed": pa.array([[9002, 9003]], pa.list_(pa.int32())),
        "read_time_fixed": pa.array([[20.0, 3.0]], pa.list_(pa.float32())),
    })
    articles = pa.table({
        "article_id": pa.array([9001, 9002, 9003], pa.int32()),
        "title": ["Storm hits the coast", "Derby ends in a draw", "New budget unveiled"],
        "subtitle": ["Roads closed", "Late equaliser", None],
        "body": ["...", "...", "..."],
        "published_time": pa.array([t0.replace(day=17)] * 3, ts),
        "category_str": ["nyheder", "sport", "nyheder"],
        "topics": pa.array([["Vejr"], ["Fodbold", "Sport"], []], pa.list_(pa.string())),
        "article_type": ["article_default", "article_video", "article_default"],
    })
    pq.write_table(behaviors, split / "behaviors.parquet")
    pq.write_table(history, split / "history.parquet")
    pq.write_table(articles, root / "articles.parquet")
    return split


def test_ebnerd_fixture_round_trips(tmp_path):
    t = import_dataset("ebnerd", write_ebnerd(tmp_path))
    assert_valid(t)
    imp = t["impressions"].sort_values(["request_id", "position"])
    assert (len(t["users"]), len(t["posts"]), len(imp)) == (2, 3, 5)
    assert imp["click"].tolist() == [1, 0, 0, 0, 1]
    # Dwell is the next page's read time, for clicks only; 0.3 s is a skip.
    assert imp["dwell_seconds"].iloc[0] == pytest.approx(45.0) and imp["dwell_seconds"].iloc[1:4].isna().all()
    assert imp["skip"].tolist() == [0, 0, 0, 0, 1]
    users = t["users"].set_index("user_id")
    assert users.loc[501, "gender"] == "f" and users.loc[501, "age"] == 40 and pd.isna(users.loc[502, "gender"])
    history = t["events"][t["events"]["ts"] < pd.Timestamp("2023-05-20", tz="UTC")]
    assert sorted(history["event_type"]) == ["click", "click", "dwell", "dwell"]
    posts = t["posts"].set_index("post_id")
    assert posts.loc[9002, "media_type"] == "video" and list(posts.loc[9002, "hashtags"]) == ["#fodbold", "#sport"]


def test_ebnerd_missing_column_is_named(tmp_path):
    split = write_ebnerd(tmp_path)
    history = pq.read_table(split / "history.parquet").drop(["read_time_fixed"])
    pq.write_table(history, split / "history.parquet")
    with pytest.raises(AdapterError, match=r"history.parquet: missing columns \['read_time_fixed'\]"):
        import_dataset("ebnerd", split)


def test_ebnerd_not_parquet_is_named(tmp_path):
    split = write_ebnerd(tmp_path)
    (split / "behaviors.parquet").write_text("impression_id,user_id\n1,2\n")
    with pytest.raises(AdapterError, match="behaviors.parquet: not a parquet file"):
        import_dataset("ebnerd", split)


# --- the command ------------------------------------------------------------------------


def test_import_command_writes_valid_tables(tmp_path):
    out = tmp_path / "mind"
    result = CliRunner().invoke(app, ["data", "import", "mind", str(FIXTURES / "mind"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert_valid(read_dataset(out))
    again = CliRunner().invoke(app, ["data", "import", "mind", str(FIXTURES / "mind"), "--out", str(out)])
    assert again.exit_code == 1 and "--force" in again.output


def test_import_command_reports_unknown_format_and_bad_files(tmp_path):
    unknown = CliRunner().invoke(app, ["data", "import", "netflix", str(tmp_path), "--out", str(tmp_path / "o")])
    assert unknown.exit_code == 1 and "unknown format 'netflix'" in unknown.output
    path = copy_fixture("movielens", tmp_path)
    (path / "u.data").write_text("1\t1\t5\t881250949\n1\tfilm\t4\t881250950\n")
    bad = CliRunner().invoke(app, ["data", "import", "movielens", str(path), "--out", str(tmp_path / "o")])
    assert bad.exit_code == 1 and "u.data:2: column 'item_id'" in bad.output
