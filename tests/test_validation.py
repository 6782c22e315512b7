"""Validation: exactly the bad rows go to quarantine, with reasons; nothing is lost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from newsfeed.cli import app
from newsfeed.data.io import read_table, table_path, write_dataset
from newsfeed.data.simulator import SimConfig, generate
from newsfeed.data.validation import REASON, validate_dataset, validate_tables

runner = CliRunner()


@pytest.fixture(scope="module")
def small():
    tables, _ = generate(SimConfig(seed=5, users=200, posts=800, days=4))
    return tables


def _inject(tables: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict[str, dict[int, str]]]:
    """Copies of the tables with bad rows, and the reason words each bad row must get."""
    t = {k: v.copy() for k, v in tables.items()}
    imp, events, posts = t["impressions"], t["events"], t["posts"]
    future = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=30)
    imp.loc[3, "click"] = 2
    imp.loc[10, "post_id"] = 10**9
    imp.loc[20, "ts"] = future
    imp.loc[30, ["dwell_seconds", "skip"]] = [0.2, 0]
    imp.loc[40, "impression_id"] = imp.loc[39, "impression_id"]
    imp.loc[50, "p_like"] = 1.5
    imp.loc[60, "ts"] = posts.loc[posts["post_id"] == imp.loc[60, "post_id"], "created_ts"].iloc[0] - pd.Timedelta(
        hours=1)
    events.loc[5, "event_type"] = "poke"
    events.loc[6, "value"] = -1.0
    # A post nobody saw, so no impression depends on it.
    unseen = posts.index[~posts["post_id"].isin(imp["post_id"])][0]
    posts.loc[unseen, "media_type"] = "hologram"
    expected = {
        "impressions": {3: "label must be 0 or 1", 10: "unknown post_id", 20: "in the future",
                        30: "skip must be 1 exactly when", 40: "duplicate value", 50: "probability must be in",
                        60: "before the post was created"},
        "events": {5: "event_type must be one of", 6: "value must be >= 0"},
        "posts": {unseen: "media_type must be one of"},
    }
    return t, expected


def test_clean_data_has_no_bad_rows(small):
    result = validate_tables(small)
    assert result.errors == [] and result.bad_rows == 0


def test_exactly_the_injected_rows_are_quarantined_with_reasons(small):
    tables, expected = _inject(small)
    result = validate_tables(tables)
    assert result.errors == []
    for table in tables:
        quarantined = result.quarantine[table]
        assert set(quarantined.index) == set(expected.get(table, {})), table
        for i, words in expected.get(table, {}).items():
            assert words in quarantined.loc[i, REASON], (table, i, quarantined.loc[i, REASON])
        # Nothing dropped silently: every input row is clean or quarantined.
        assert len(result.clean[table]) + len(quarantined) == len(tables[table])
        assert result.reports[table].bad_rows == len(quarantined)


def test_a_bad_user_takes_its_dependent_rows_to_quarantine_with_reasons(small):
    tables = {k: v.copy() for k, v in small.items()}
    tables["users"].loc[0, "age"] = 500
    bad_user = tables["users"].loc[0, "user_id"]
    result = validate_tables(tables)
    assert list(result.quarantine["users"].index) == [0]
    # The cascade follows the references: their posts, then every impression of them or of those posts.
    their_posts = set(tables["posts"].loc[tables["posts"]["author_id"] == bad_user, "post_id"])
    assert set(result.quarantine["posts"]["post_id"]) == their_posts
    imp = tables["impressions"]
    dependent = (imp["user_id"] == bad_user) | imp["post_id"].isin(their_posts)
    assert (imp["user_id"] == bad_user).sum() > 0 and len(their_posts) > 0
    q = result.quarantine["impressions"]
    assert set(q.index) == set(imp.index[dependent])
    assert q[REASON].str.contains("unknown user_id|unknown post_id").all()


def test_a_post_failing_a_cross_table_rule_takes_its_impressions_along(small):
    tables = {k: v.copy() for k, v in small.items()}
    shown = tables["impressions"]["post_id"].iloc[0]
    row = tables["posts"].index[tables["posts"]["post_id"] == shown][0]
    tables["posts"].loc[row, "author_id"] = 10**9  # an author who does not exist
    result = validate_tables(tables)
    assert list(result.quarantine["posts"].index) == [row]
    assert "author_id: unknown user_id" in result.quarantine["posts"].loc[row, REASON]
    dependent = tables["impressions"]["post_id"] == shown
    q = result.quarantine["impressions"]
    assert len(q) == dependent.sum() and q[REASON].str.contains("unknown post_id").all()
    assert shown not in set(result.clean["impressions"]["post_id"])


def test_unreadable_values_are_quarantined_not_fatal(small):
    tables = {k: v.copy() for k, v in small.items()}
    imp = tables["impressions"]
    imp["position"] = imp["position"].astype(object)
    imp.loc[7, "position"] = "top"
    result = validate_tables(tables)
    assert result.errors == []
    assert list(result.quarantine["impressions"].index) == [7]
    assert "cannot be read as int32" in result.quarantine["impressions"].loc[7, REASON]


def test_missing_table_and_column_are_errors(small):
    tables = {k: v for k, v in small.items() if k != "events"}
    tables["users"] = tables["users"].drop(columns=["signup_ts"])
    errors = validate_tables(tables).errors
    assert "events: table is missing" in errors
    assert any("users" in e and "signup_ts" in e for e in errors)


def test_validate_command_writes_quarantine_and_fails_above_the_rate(small, tmp_path):
    tables, expected = _inject(small)
    write_dataset(tmp_path, tables, source="test")
    ok = runner.invoke(app, ["data", "validate", str(tmp_path), "--max-bad-rate", "0.5"])
    assert ok.exit_code == 0, ok.output
    assert "quarantined 10 rows" in ok.output
    quarantined = read_table(tmp_path / "quarantine", "impressions")
    assert sorted(quarantined["impression_id"].astype(int)) == sorted(
        int(tables["impressions"].loc[i, "impression_id"]) for i in expected["impressions"])
    report = json.loads((tmp_path / "quarantine" / "report.json").read_text())
    assert report["tables"]["impressions"]["bad_rows"] == 7
    # The source tables are left as they were.
    assert len(read_table(tmp_path, "impressions")) == len(tables["impressions"])

    strict = runner.invoke(app, ["data", "validate", str(tmp_path), "--max-bad-rate", "0"])
    assert strict.exit_code == 1
    assert "data is not usable" in strict.output and "impressions" in strict.output


def test_validate_command_fails_on_a_missing_table(small, tmp_path):
    write_dataset(tmp_path, {k: v for k, v in small.items() if k != "posts"}, source="test")
    result = runner.invoke(app, ["data", "validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "posts: table is missing" in result.output


def test_revalidation_replaces_old_quarantine(small, tmp_path):
    tables, _ = _inject(small)
    write_dataset(tmp_path, tables, source="test")
    assert validate_dataset(tmp_path).bad_rows == 10
    write_dataset(tmp_path, small, source="test")
    assert validate_dataset(tmp_path).bad_rows == 0
    assert not table_path(tmp_path / "quarantine", "impressions").exists()


def test_skip_without_known_dwell_is_inconsistent(small):
    tables = {k: v.copy() for k, v in small.items()}
    tables["impressions"].loc[4, ["dwell_seconds", "skip"]] = [np.nan, 1]
    result = validate_tables(tables)
    assert list(result.quarantine["impressions"].index) == [4]
