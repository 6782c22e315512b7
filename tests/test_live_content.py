"""Published content without a service: the logs readers see as one table, the checks an
item passes before anything is written, idempotence, and a store that fails stopping the
batch before it is logged. (The served path, on two replicas, is in test_serving.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from newsfeed.data import table_log
from newsfeed.data.io import fingerprint, read_table, write_dataset
from newsfeed.features.publish import Known, PublishUnavailable, publish
from newsfeed.feed.user_state import SqliteUserState

NOW = pd.Timestamp("2026-10-15T12:00:00Z")
START = pd.Timestamp("2026-10-01T00:00:00Z")


@pytest.fixture()
def data(tmp_path):
    """Two users who are friends, one post: the canonical tables."""
    users = pd.DataFrame({"user_id": [1, 2], "age": [30, 40], "gender": ["f", "m"], "country": ["DE", "FR"],
                          "language": ["de", "fr"], "timezone": ["Europe/Berlin", "Europe/Paris"],
                          "signup_ts": [START, START]})
    posts = pd.DataFrame({"post_id": [10], "author_id": [1], "text": ["hello"], "hashtags": [["#hi"]],
                          "mentions": [[]], "media_type": ["text"], "topic": ["news"], "created_ts": [START]})
    friendships = pd.DataFrame({"user_id": [1], "friend_id": [2], "formed_ts": [START], "close_friend": [True],
                                "family": [False]})
    folder = tmp_path / "data"
    from newsfeed.schema import conform

    write_dataset(folder, {"users": conform("users", users), "posts": conform("posts", posts),
                           "friendships": conform("friendships", friendships)}, source="test")
    return folder


def known(data) -> Known:
    users, posts = read_table(data, "users")["user_id"], read_table(data, "posts")["post_id"]
    return Known(lambda ids: np.isin(ids, users), lambda ids: np.isin(ids, posts), START)


def post(post_id: int, author: int = 1, **extra) -> dict:
    return {"post_id": post_id, "author_id": author, "text": f"post {post_id}", "topic": "news", **extra}


def test_published_posts_are_checked_logged_once_and_read_with_the_table(data, tmp_path):
    state, written = SqliteUserState(tmp_path / "state.sqlite"), []
    before = fingerprint(data)
    items = [post(11), post(12, author=99), post(13, created_ts="2099-01-01T00:00:00Z"),
             post(14, created_ts="2026-09-01T00:00:00Z"), post(15, created_ts="not a time"), post(10),
             post(11), {"post_id": 16, "author_id": 1, "text": "no topic"}]
    result = publish("posts", items, data, known(data), state, NOW, lambda table, rows: written.append(rows))
    reasons = {r.index: r.reason for r in result.rejected}
    assert result.accepted == 1 and result.duplicates == 1  # post 10 is in the data already
    assert "duplicate" in reasons[6]  # the same id twice in one batch: the first stands
    assert "unknown user 99" in reasons[1] and "future" in reasons[2] and "before the data begins" in reasons[3]
    assert "cannot be read as a timestamp" in reasons[4] and "topic" in reasons[7]
    assert len(written) == 1 and written[0]["post_id"].tolist() == [11]
    assert written[0]["created_ts"].iloc[0] == NOW  # left out: the service's now
    posts = read_table(data, "posts")
    assert posts["post_id"].tolist() == [10, 11] and fingerprint(data) != before
    again = publish("posts", [post(11)], data, known(data), state, NOW, lambda table, rows: written.append(rows))
    assert (again.accepted, again.duplicates) == (0, 1) and len(table_log.parts(data, "posts")) == 1


def test_a_post_claimed_by_another_replica_a_moment_ago_is_a_duplicate(data, tmp_path):
    """The directory of the replica taking the batch does not know the post yet: the id claimed
    in the shared store decides."""
    state = SqliteUserState(tmp_path / "state.sqlite")
    first = publish("posts", [post(20)], data, known(data), state, NOW)
    stale = Known(lambda ids: np.ones(len(ids), bool), lambda ids: np.zeros(len(ids), bool), START)
    second = publish("posts", [post(20)], data, stale, state, NOW)
    assert (first.accepted, second.accepted, second.duplicates) == (1, 0, 1)
    assert read_table(data, "posts")["post_id"].tolist().count(20) == 1


def test_a_store_that_fails_stops_the_batch_before_anything_is_logged(data, tmp_path):
    state = SqliteUserState(tmp_path / "state.sqlite")

    def down(table, rows):
        raise ConnectionError("online store at 127.0.0.1:1 refused")

    with pytest.raises(PublishUnavailable, match="online store"):
        publish("posts", [post(30)], data, known(data), state, NOW, down)
    assert not table_log.parts(data, "posts")
    retry = publish("posts", [post(30)], data, known(data), state, NOW)  # the claim was released
    assert retry.accepted == 1


def test_users_and_friendships_join_the_tables_and_an_ended_friendship_leaves(data, tmp_path):
    state = SqliteUserState(tmp_path / "state.sqlite")
    users = publish("users", [{"user_id": 3, "country": "IT"}, {"user_id": 1}], data, known(data), state, NOW)
    assert (users.accepted, users.duplicates) == (1, 1)
    friends = publish("friendships", [{"user_id": 3, "friend_id": 1, "close_friend": True},
                                      {"user_id": 3, "friend_id": 404}, {"user_id": 2, "friend_id": 2}],
                      data, known(data), state, NOW)
    reasons = [r.reason for r in friends.rejected]
    assert friends.accepted == 1 and "unknown user 404" in reasons[0] and "themself" in reasons[1]
    table = read_table(data, "friendships")
    assert sorted(map(tuple, table[["user_id", "friend_id"]].to_numpy().tolist())) == [(1, 2), (3, 1)]
    ended = publish("friendships", [{"user_id": 2, "friend_id": 1, "ended": True}], data, known(data), state,
                    NOW + pd.Timedelta(minutes=1))
    assert ended.accepted == 1
    assert read_table(data, "friendships")[["user_id", "friend_id"]].to_numpy().tolist() == [[3, 1]]
    assert read_table(data, "users")["user_id"].tolist() == [1, 2, 3]


def test_the_directory_follows_published_friendships_both_ways(data):
    from newsfeed.feed.activity import UserDirectory

    directory = UserDirectory.from_data(data)
    assert directory.friends[2].tolist() == [1]
    directory.apply_friendships(pd.DataFrame({"user_id": [2, 1], "friend_id": [3, 2], "close_friend": [True, False],
                                              "family": [False, False], "ended": [False, True]}))
    assert directory.friends[2].tolist() == [3] and directory.friends[3].tolist() == [2]
    assert directory.close_friends[3].tolist() == [2] and directory.friends[1].tolist() == []


def test_the_redis_channel_finds_a_part_whose_announcement_was_lost(data, tmp_path, monkeypatch):
    """Announced parts arrive by the stream; one logged but never announced (the publisher died
    in between, Redis was down) is found at the next listing of the logs."""
    import uuid

    from newsfeed.feed import content
    from newsfeed.feed.user_state import RedisUserState

    state = RedisUserState("127.0.0.1:6379", f"nftest-channel-{uuid.uuid4().hex[:8]}")
    try:
        publisher, follower = content.open_channel(state, data), content.open_channel(state, data)
        assert follower.poll() == []  # the first look: the logs as they are
        announced = publish("posts", [post(40)], data, known(data), state, NOW).log_file
        publisher.announce("posts", announced)
        silent = publish("posts", [post(41)], data, known(data), state, NOW).log_file
        assert follower.poll() == [("posts", announced)]
        monkeypatch.setattr(content, "RELIST_SECONDS", 0.0)
        assert follower.poll() == [("posts", silent)]
        assert follower.poll() == []  # each part once
    finally:
        state.client.delete(*state.client.keys(f"{state.prefix}:*"))
