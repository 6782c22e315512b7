"""Models' building blocks without the feature store: metrics, weights, encoding, losses, index."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from newsfeed import metrics
from newsfeed.data.world import examine_probability
from newsfeed.index import PostIndex, recall_against_exact
from newsfeed.models.encoding import Encoder, hash_ids
from newsfeed.models.two_tower import sampling_log_q
from newsfeed.scoring import WeightsError, engagement_score, load_weights


def test_ndcg_orders_perfect_reversed_and_constant_scorers():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(200), 10)
    gains = rng.exponential(size=2000) * (rng.random(2000) < 0.3)
    assert metrics.ndcg_at_k(groups, gains, gains) == pytest.approx(1.0)
    worst = metrics.ndcg_at_k(groups, gains, -gains)
    random = metrics.ndcg_at_k(groups, gains, rng.random(2000))
    constant = metrics.ndcg_at_k(groups, gains, np.zeros(2000))
    assert worst < random < 1.0
    assert constant == pytest.approx(random, abs=0.03)  # ties are broken at random, not by row order


def test_ndcg_ignores_lists_without_gain_and_clips_negative_gains():
    groups = np.array([0, 0, 1, 1])
    gains = np.array([0.0, 0.0, -50.0, 5.0])  # list 0 has nothing to order; a block is no gain
    assert metrics.ndcg_at_k(groups, gains, np.array([1, 0, 1, 0])) == pytest.approx(1 / np.log2(3))


def _slates(requests: int = 600, size: int = 10, seed: int = 0):
    """Feeds whose items' true expected engagement is mostly negative (hides, blocks), as in the simulator."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(requests), size)
    values = np.where(rng.random(requests * size) < 0.35, rng.exponential(4.0, requests * size),
                      -rng.exponential(3.0, requests * size))
    return groups, values, rng


def test_slate_value_is_one_for_the_oracle_and_near_zero_for_random_orders():
    groups, values, rng = _slates()
    oracle = metrics.normalised_slate_value(groups, values, values, examine_probability)
    assert oracle.value == pytest.approx(1.0) and oracle.low == pytest.approx(1.0)
    random = metrics.normalised_slate_value(groups, values, rng.random(len(values)), examine_probability)
    assert random.low < 0 < random.high and abs(random.value) < 0.05
    assert random.requests == 600
    reversed_ = metrics.normalised_slate_value(groups, values, -values, examine_probability)
    assert reversed_.high < -0.5  # worse than random is negative, not clipped


def test_slate_value_counts_negatives_that_ndcg_cannot_see():
    """Positives ordered like the oracle but negatives worst first: NDCG calls it perfect."""
    groups, values, rng = _slates()
    negatives_worst_first = np.where(values > 0, 1000 + values, -values)
    # Its positives ordered with errors, but its negatives last, least harmful first.
    negatives_sunk = np.where(values > 0, 1000 + values + rng.normal(0, 4.0, len(values)), -1000 + values)
    assert metrics.ndcg_at_k(groups, values, negatives_worst_first) == pytest.approx(1.0)
    worst_first = metrics.normalised_slate_value(groups, values, negatives_worst_first, examine_probability)
    sunk = metrics.normalised_slate_value(groups, values, negatives_sunk, examine_probability)
    assert worst_first.high < 1.0
    assert worst_first.high < sunk.low


def test_slate_value_interval_widens_when_requests_cluster_by_user():
    groups, values, rng = _slates()
    scores = values + rng.normal(0, 4.0, len(values))
    by_request = metrics.normalised_slate_value(groups, values, scores, examine_probability)
    by_user = metrics.normalised_slate_value(groups, values, scores, examine_probability, clusters=groups // 20)
    assert by_user.value == pytest.approx(by_request.value)
    assert by_request.low < by_request.value < by_request.high
    # 30 users of 20 requests each: the interval is about the same or wider, never a different estimate.
    assert by_user.high - by_user.low > 0.8 * (by_request.high - by_request.low)
    one_item = metrics.normalised_slate_value(np.arange(5), np.arange(5.0), np.arange(5.0), examine_probability)
    assert one_item.requests == 0 and np.isnan(one_item.value)  # a one-post feed has no order to judge


def test_paired_difference_is_zero_for_the_same_scorer_and_sees_a_small_loss_that_separate_intervals_miss():
    groups, values, rng = _slates()
    champion = values + rng.normal(0, 3.0, len(values))
    same = metrics.paired_slate_difference(groups, values, champion, champion, examine_probability)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0)
    slightly_worse = champion + rng.normal(0, 1.0, len(values))
    paired = metrics.paired_slate_difference(groups, values, slightly_worse, champion, examine_probability,
                                             clusters=groups // 20)
    apart = [metrics.normalised_slate_value(groups, values, s, examine_probability, clusters=groups // 20)
             for s in (slightly_worse, champion)]
    assert paired.value == pytest.approx(apart[0].value - apart[1].value)
    assert paired.high < 0  # the loss is real ...
    assert apart[0].high > apart[1].low  # ... though the two intervals overlap


def test_recall_and_retrieval_ndcg():
    ranked = np.array([[1, 2, 3, 4], [9, 8, 7, 6]])
    relevant = [np.array([2, 5]), np.array([6]), np.array([], np.int64)]
    recall = metrics.recall_at_k(ranked, relevant[:2], (1, 4))
    assert recall == {1: pytest.approx(0.0), 4: pytest.approx((0.5 + 1.0) / 2)}
    assert metrics.ndcg_of_ranked(ranked[:1], [np.array([1])], 4) == pytest.approx(1.0)


def _impressions(rows):
    """(request_id, user_id, post_id, hour, click) rows as an impressions frame."""
    frame = pd.DataFrame(rows, columns=["request_id", "user_id", "post_id", "hour", "click"])
    frame["ts"] = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(frame.pop("hour"), unit="h")
    for reaction in ("like", "comment", "share", "friend_request"):
        frame[reaction] = 0
    return frame


def test_retrieval_queries_are_requests_with_what_serving_could_not_return_counted_apart():
    from newsfeed.models.datasets import retrieval_queries

    impressions = _impressions([
        (1, 7, 100, 0, 0),  # shown, not engaged: seen from then on
        (2, 7, 100, 30, 1), (2, 7, 101, 30, 1), (2, 7, 102, 30, 1), (2, 7, 103, 30, 0),
        (3, 8, 101, 31, 0),  # no engagement: no query
    ])
    created = pd.Series(pd.to_datetime(["2026-09-20", "2026-10-01", "2026-10-02", "2026-10-02"], utc=True)
                        .astype("datetime64[ns, UTC]").asi8, index=[100, 101, 102, 103])
    created.loc[99] = created.loc[100]  # a post from before the horizon
    queries = retrieval_queries(impressions, created, pd.Timestamp("2026-10-02", tz="UTC"),
                                pd.Timestamp("2026-10-03", tz="UTC"), horizon_days=3.0)
    assert queries.user_ids.tolist() == [7]
    assert sorted(queries.relevant[0].tolist()) == [101, 102]  # 100 was shown before and is old
    assert queries.seen[0].tolist() == [100]
    assert queries.unretrievable == {"shown_before": 1, "older_than_horizon": 0}
    late = retrieval_queries(impressions.assign(post_id=impressions["post_id"].replace({101: 99})), created,
                             pd.Timestamp("2026-10-02", tz="UTC"), pd.Timestamp("2026-10-03", tz="UTC"), 3.0)
    assert late.unretrievable == {"shown_before": 1, "older_than_horizon": 1}


def test_popularity_counts_only_engagements_before_each_request_and_decays():
    from newsfeed.models.evaluation import DAY_NS, popularity_as_of

    events = pd.DataFrame({"post_id": [1, 1, 2, 3], "ns": np.array([0, 1, 5, 9]) * DAY_NS})
    scores = popularity_as_of(events, np.array([1, 2, 3]), np.array([2, 10]) * DAY_NS, half_life_days=1.0)
    assert scores[0].tolist() == [1.0, 0.0, 0.0]  # post 2's engagement on day 5 is not yet known
    assert scores[1].argmax() == 2  # a day-old engagement outweighs older ones, halving per day
    assert scores[1, 1] == pytest.approx(2.0 ** -5 / 2.0 ** -1)
    assert scores[1, 0] == pytest.approx((2.0 ** -10 + 2.0 ** -9) / 2.0 ** -1)
    counts = popularity_as_of(events, np.array([1, 2, 3]), np.array([10]) * DAY_NS, half_life_days=1e9)
    assert counts[0] == pytest.approx([1.0, 0.5, 0.5])  # a long half-life counts


def test_retrieval_searches_only_posts_published_within_the_horizon_of_each_request():
    from newsfeed.models.datasets import RetrievalQueries
    from newsfeed.models.evaluation import DAY_NS, retrieved

    post_ids = np.array([10, 11, 12, 13])
    created = np.array([0, 4, 6, 9]) * DAY_NS  # 13 is published after the request
    queries = RetrievalQueries(np.array([1]), np.array([7 * DAY_NS]), [np.array([11])], [np.array([12])],
                               {"shown_before": 0, "older_than_horizon": 0})
    ranked = retrieved(np.array([[4.0, 3.0, 2.0, 1.0]]), created, queries, post_ids, horizon_days=3.0, k=4)
    assert ranked[0, 0] == 11  # 10 is older than 3 days, 12 was seen
    assert set(ranked[0, 1:].tolist()) <= {10, 12, 13}  # the rest are masked (-inf), not ranked ahead


def test_oracle_recall_is_the_share_of_the_oracle_feed_in_the_top_k():
    from newsfeed.models.evaluation import oracle_recall

    ideal = np.array([[1, 2], [5, 6]])  # each query's oracle feed
    ranked = np.array([[1, 9, 2, 8], [7, 8, 9, 5]])
    found = oracle_recall(ranked, ideal, users=np.array([10, 11]), ks=(1, 3, 4))
    assert found[1].value == pytest.approx((0.5 + 0.0) / 2)
    assert found[3].value == pytest.approx((1.0 + 0.0) / 2)
    assert found[4].value == pytest.approx((1.0 + 0.5) / 2)
    assert found[4].low <= found[4].value <= found[4].high


def test_calibration_error_is_small_for_calibrated_and_large_for_shifted():
    rng = np.random.default_rng(1)
    p = rng.random(50_000) * 0.2
    y = (rng.random(50_000) < p).astype(int)
    assert metrics.calibration_error(y, p) < 0.01
    assert metrics.calibration_error(y, p + 0.2) > 0.15
    assert np.isnan(metrics.roc_auc(np.zeros(10), np.arange(10)))


def test_weighted_auc_and_calibration_match_the_unweighted_ones_and_repeat_rows():
    from newsfeed.metrics import calibration_error, roc_auc, weighted_auc, weighted_calibration_error

    rng = np.random.default_rng(3)
    p = rng.random(2_000) * 0.3
    y = (rng.random(2_000) < p).astype(int)
    scores = np.round(p + rng.normal(0, 0.05, 2_000), 2)  # rounded: ties count half, as sklearn's
    ones = np.ones(2_000)
    assert weighted_auc(y, scores)(ones) == pytest.approx(roc_auc(y, scores))
    assert weighted_calibration_error(y, p)(ones) == pytest.approx(calibration_error(y, p))
    twice = rng.integers(0, 3, 2_000)  # integer weights read as repeated rows
    repeated = np.repeat(np.arange(2_000), twice)
    assert weighted_auc(y, scores)(twice.astype(float)) == pytest.approx(roc_auc(y[repeated], scores[repeated]))


def test_paired_weighted_difference_sees_a_worse_head_and_nothing_in_the_same_one():
    from newsfeed.metrics import paired_weighted_difference, weighted_auc

    rng = np.random.default_rng(4)
    users = rng.integers(0, 300, 6_000)
    p = rng.random(6_000) * 0.4
    y = (rng.random(6_000) < p).astype(int)
    worse = p + rng.normal(0, 0.15, 6_000)  # the same signal, blurred
    same = paired_weighted_difference(weighted_auc(y, p), weighted_auc(y, p), users)
    assert same.value == same.low == same.high == 0.0
    loss = paired_weighted_difference(weighted_auc(y, worse), weighted_auc(y, p), users)
    assert loss.low < loss.value < loss.high < 0 and loss.requests == len(np.unique(users))


def test_mean_interval_is_the_mean_over_queries_resampling_users():
    from newsfeed.metrics import mean_interval

    values, users = np.array([1.0, 0.0, 0.5, 0.5]), np.array([7, 7, 8, 9])
    interval = mean_interval(values, users)
    assert interval.value == pytest.approx(0.5) and interval.requests == 4
    assert interval.low <= 0.5 <= interval.high


def test_weights_are_data_with_overrides_and_clear_errors(tmp_path):
    weights = load_weights()
    assert weights == {"click": 1, "like": 5, "comment": 10, "share": 20, "friend_request": 30, "hide": -20, "block": -50}
    assert load_weights(overrides={"share": 40})["share"] == 40
    with pytest.raises(WeightsError, match="unknown reactions"):
        load_weights(overrides={"love": 3})
    bad = tmp_path / "w.yaml"
    bad.write_text("click: lots\n")
    with pytest.raises(WeightsError, match="finite number"):
        load_weights(bad)
    score = engagement_score({"p_click": np.array([0.5]), "p_hide": np.array([0.1])}, {"click": 1, "hide": -20})
    assert score == pytest.approx([0.5 - 2.0])


def test_encoder_round_trips_and_handles_missing_and_unseen_values():
    frame = pd.DataFrame({
        "user_profile__gender": ["f", "m", None], "user_profile__age_bucket": [1, 2, 3],
        "user_engagement__click_count_7d": [0, 100, 1000], "user_engagement__topic_interest": [[0.5, 0.5], None, [1.0, 0.0]],
        "user_history__recent_post_ids": [[1, 2], [], None], "user_id": [5, 6, 7],
    })
    enc = Encoder.fit(frame, [c for c in frame.columns if "__" in c], ["user_id"])
    assert enc.log_scaled == ["user_engagement__click_count_7d"]  # heavy-tailed counts are log-scaled
    again = Encoder.from_dict(enc.to_dict())
    new = frame.assign(user_profile__gender=["x", "f", "m"])  # "x" never seen in training
    a, b = enc.transform(new), again.transform(new)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["categorical"][0, list(enc.categories).index("user_profile__gender")] == 0
    assert a["vectors"].shape == (3, 2) and a["vectors"][1].abs().sum() == 0
    assert (a["bag:user_history__recent_post_ids"][2] == 0).all()
    with pytest.raises(KeyError, match="lacks columns"):
        enc.transform(frame.drop(columns="user_profile__gender"))


def test_one_row_encodes_as_a_one_row_frame_does():
    """The request path encodes its one user without a DataFrame: the same tensors as
    ``transform``, for present, missing, unseen and odd values (and ids past 2**53)."""
    frame = pd.DataFrame({
        "user_profile__gender": ["f", "m", None], "user_profile__age_bucket": [1, 2, 3],
        "user_engagement__click_count_7d": [0, 100, 1000], "user_engagement__topic_interest": [[0.5, 0.5], None, [1.0, 0.0]],
        "user_history__recent_post_ids": [[1, 2], [], None], "user_id": [5, 6, 7],
    })
    enc = Encoder.fit(frame, [c for c in frame.columns if "__" in c], ["user_id"])
    rows = [frame.iloc[i].to_dict() for i in range(3)] + [
        {},  # everything missing
        {"user_profile__gender": "x", "user_profile__age_bucket": 9, "user_engagement__click_count_7d": "lots",
         "user_engagement__topic_interest": [1.0, 2.0, 3.0], "user_history__recent_post_ids": [2**62, 3],
         "user_id": 2**62 + 1},  # unseen, not a number, the wrong length, ids past float precision
        {"user_engagement__click_count_7d": float("nan"), "user_id": None},
    ]
    for row in rows:
        one = enc.transform_one(row)
        whole = enc.transform(pd.DataFrame([{c: row.get(c) for c in frame.columns}]))
        for key in whole:
            assert torch.equal(one[key], whole[key]), (key, row)
    # Many rows' codes of one column at once (the ranker's per-candidate categorical inputs).
    genders = ["f", None, "x", "m", np.float32("nan")]
    expected = enc.transform(frame.iloc[[0] * 5].assign(user_profile__gender=genders))["categorical"]
    column = list(enc.categories).index("user_profile__gender")
    assert enc.codes("user_profile__gender", np.array(genders, dtype=object), 5).tolist() == \
        expected[:, column].tolist()


def test_hashed_ids_are_stable_and_reserve_zero_for_unknown():
    ids = np.array([0, 1, 2, 123456789, -1])
    hashed = hash_ids(ids, 1024)
    assert hashed[-1] == 0 and (hashed[:-1] > 0).all() and (hashed < 1024).all()
    assert np.array_equal(hashed, hash_ids(ids, 1024))


def test_log_q_is_the_log_frequency_of_each_post():
    log_q = sampling_log_q(np.array([3, 3, 3, 7]))
    assert np.allclose(np.exp(log_q), [0.75, 0.75, 0.75, 0.25])


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_flat_index_is_exact_and_takes_new_posts_without_rebuild(tmp_path):
    emb, ids = _unit(2_000, 16, 0), np.arange(2_000) + 10_000
    index = PostIndex.build(emb, ids)
    assert index.kind == "flat"
    assert recall_against_exact(index, emb, ids, emb[:50], 20) == 1.0
    fresh = _unit(1, 16, 99)
    index.add(fresh, np.array([42]))
    _, found = index.search(fresh, 1)
    assert found[0, 0] == 42 and index.size == 2_001
    index.save(tmp_path / "idx")
    again = PostIndex.load(tmp_path / "idx")
    assert np.array_equal(again.search(emb[:20], 10)[1], index.search(emb[:20], 10)[1])


def test_hnsw_keeps_recall_when_k_exceeds_the_default_ef_search():
    emb, ids = _unit(20_000, 32, 1), np.arange(20_000)
    index = PostIndex.build(emb, ids, kind="hnsw")
    # k = 300 > efSearch 128: without raising efSearch to k, FAISS returns poor neighbours
    assert recall_against_exact(index, emb, ids, _unit(50, 32, 2), 300) > 0.9


def test_recency_weights_halve_per_half_life_and_weight_the_loss():
    from newsfeed.models.training import recency_weights, weighted_mean

    ts = pd.Series(pd.to_datetime(["2026-10-01", "2026-10-04", "2026-10-07"], utc=True))
    w = recency_weights(ts, half_life_days=3.0)
    assert w.mean().item() == pytest.approx(1.0)
    assert (w[2] / w[1]).item() == pytest.approx(2.0) and (w[1] / w[0]).item() == pytest.approx(2.0)
    values = torch.tensor([[1.0, 0.0], [1.0, 0.0], [4.0, 3.0]])
    assert torch.allclose(weighted_mean(values, {}), values.mean(dim=0))
    expected = (values * w[:, None]).sum(dim=0) / w.sum()
    assert torch.allclose(weighted_mean(values, {"weight": w}), expected)


def test_two_tower_learns_a_topic_match_and_full_corpus_recall_sees_it():
    from newsfeed.models.training import TrainConfig, fit, seed_everything
    from newsfeed.models.two_tower import (TwoTower, TwoTowerConfig, full_corpus_recall, in_batch_loss,
                                           sampling_log_q, training_batch)

    rng = np.random.default_rng(0)
    n, topics = 3000, 6
    user_topic = rng.integers(0, topics, n)
    post_id = rng.integers(0, 400, n)
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 500, n), "post_id": post_id, "author_id": post_id % 50,
        "user_engagement__topic_interest": list(np.eye(topics, dtype=np.float32)[user_topic]),
        "post_content__topic_id": user_topic,  # every engagement is with a post of the user's topic
    })
    config = TwoTowerConfig(user_inputs=["user_engagement__topic_interest"], post_inputs=["post_content__topic_id"],
                            user_ids=[], post_ids=[], embedding_dim=8, hidden=[16], recency=False)  # no clock here
    seed_everything(0)
    model = TwoTower.from_frame(frame, config)
    train, val = frame.iloc[:2500], frame.iloc[2500:]
    val_batch = training_batch(model, val, sampling_log_q(val["post_id"].to_numpy()))
    before = full_corpus_recall(model, val_batch, k=20)
    fit(model, in_batch_loss, training_batch(model, train, sampling_log_q(train["post_id"].to_numpy())), val_batch,
        TrainConfig(epochs=5, batch_size=128), show_progress=False)
    after = full_corpus_recall(model, val_batch, k=20)
    # Untrained: ~0.15 (chance-like). Trained on the topic match: measured 0.64.
    assert after > 0.5 and after > before + 0.3, (before, after)


def test_stacked_layers_compute_what_each_stack_computes_alone():
    """The fast ranker runs its experts and its task towers as one batched product per layer."""
    from newsfeed.feed.fast_ranker import StackedMLP
    from newsfeed.models.layers import mlp

    torch.manual_seed(0)
    stacks = [mlp([12, 8, 3], dropout=0.1).eval() for _ in range(4)]
    x = torch.randn(4, 50, 12)
    with torch.no_grad():
        expected = torch.stack([s(x[i]) for i, s in enumerate(stacks)])
    assert torch.allclose(StackedMLP(stacks)(x), expected, atol=1e-6)
    with pytest.raises(ValueError, match="same Linear/ReLU shape"):
        StackedMLP([mlp([12, 8, 3]), mlp([12, 6, 3])])


def test_a_fixed_holdout_keeps_all_but_the_last_hours_for_training():
    from newsfeed.models.datasets import SplitConfig, boundaries

    ts = pd.Series(pd.date_range("2026-10-01", "2026-10-21", freq="15min", tz="UTC"))
    by_fraction = boundaries(ts, SplitConfig())
    assert by_fraction.val_start < ts.max() - pd.Timedelta(days=5)  # 2/7 of 20 days held out
    fixed = boundaries(ts, SplitConfig.of(0.5))
    assert fixed.test_start == ts.max() - pd.Timedelta(hours=6)
    assert fixed.val_start == ts.max() - pd.Timedelta(hours=12)
    assert list(pd.Series(fixed.label(ts)).value_counts().sort_index()) == [25, len(ts) - 49, 24]  # test, train, val
    assert SplitConfig.of(0) == SplitConfig()
    # More days held out than the data spans: something is still left to train on.
    short = boundaries(ts, SplitConfig.of(60))
    assert short.start < short.val_start < short.test_start < short.end


def _ranker_frame(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    from newsfeed.models.ranker import HEADS

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 200, n), "post_id": rng.integers(0, 500, n), "author_id": rng.integers(0, 50, n),
        "request_id": np.arange(n) // 10, "position": np.tile(np.arange(10), n // 10),
        "post_engagement__click_rate": rng.random(n).astype(np.float32),
        "request_features__topic_affinity": rng.normal(size=n).astype(np.float32),
        "post_content__topic_id": rng.integers(0, 5, n), "dwell_seconds": rng.exponential(5.0, n),
    })
    for head in HEADS:
        frame[head] = 0
    return frame


def test_platt_scaling_recovers_a_miscalibration_and_folds_into_the_model():
    from newsfeed.models.ranker import HEADS, MultiTaskRanker, RankerConfig, apply_platt, fit_platt, logged_logits

    torch.manual_seed(0)
    frame = _ranker_frame(20_000)
    model = MultiTaskRanker.from_frame(frame, RankerConfig(hidden=[16], tower=4, experts=2))
    before = logged_logits(model, frame)
    with torch.no_grad():  # spread the untrained logits (std ~1) so there is something to calibrate
        for tower, spread in zip(model.towers, before.std(dim=0)):
            tower[-1].weight.div_(spread)
    before = logged_logits(model, frame)
    rng = np.random.default_rng(1)
    truth = 2.0 * before.numpy() - 1.0  # the true log-odds: the model's twice over, shifted
    frame[list(HEADS)] = (rng.random(truth.shape) < 1 / (1 + np.exp(-truth))).astype(int)
    params = fit_platt(model, frame)
    # Measured: scales 1.94-2.30, shifts -0.91 to -1.07 (sklearn's unpenalised fit agrees).
    assert np.allclose(params[:, 0].numpy(), 2.0, atol=0.4) and np.allclose(params[:, 1].numpy(), -1.0, atol=0.15)
    apply_platt(model, params)
    after = logged_logits(model, frame)
    assert torch.allclose(after, before * params[:, 0] + params[:, 1], atol=1e-4)
    p_before = 1 / (1 + np.exp(-before.numpy()[:, 0]))
    p_after = model.predict(frame, logged_position=True)["p_click"].to_numpy()
    y = frame["click"].to_numpy()
    assert metrics.calibration_error(y, p_after) < 0.5 * metrics.calibration_error(y, p_before)


def test_nested_heads_are_their_parents_probability_times_their_own_and_lose_as_that_product():
    import torch.nn.functional as F

    from newsfeed.models.ranker import HEADS, REACTION_CHAIN, MultiTaskRanker, RankerConfig, head_log_loss

    torch.manual_seed(0)
    frame = _ranker_frame(200)
    rng = np.random.default_rng(2)
    flat = MultiTaskRanker.from_frame(frame, RankerConfig(hidden=[16], tower=4, experts=2))
    nested = MultiTaskRanker.from_frame(frame, RankerConfig(hidden=[16], tower=4, experts=2, nested=REACTION_CHAIN))
    logits = 3 * torch.randn(500, len(HEADS))
    p = nested.probabilities(logits)
    for head, parent in REACTION_CHAIN.items():
        h, q = HEADS.index(head), HEADS.index(parent)
        assert torch.allclose(p[:, h], torch.sigmoid(logits[:, q]) * torch.sigmoid(logits[:, h]), atol=1e-6)
        assert (p[:, h] <= p[:, q]).all()
    roots = [HEADS.index(h) for h in HEADS if h not in REACTION_CHAIN]
    assert torch.allclose(p[:, roots], torch.sigmoid(logits[:, roots]))
    labels = torch.from_numpy((rng.random((500, len(HEADS))) < 0.2).astype(np.float32))
    assert torch.allclose(head_log_loss(nested, logits, labels), F.binary_cross_entropy(p, labels, reduction="none"),
                          atol=1e-4)
    assert torch.allclose(head_log_loss(flat, logits, labels),
                          F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))
    with pytest.raises(ValueError, match="unknown heads"):
        MultiTaskRanker.from_frame(frame, RankerConfig(nested={"like": "clap"}))
    with pytest.raises(ValueError, match="both a child and a parent"):
        MultiTaskRanker.from_frame(frame, RankerConfig(nested={"block": "hide", "hide": "skip"}))


def test_a_ranker_saved_before_nested_heads_existed_loads_with_every_head_its_own(tmp_path):
    import json

    from newsfeed.models import saved
    from newsfeed.models.ranker import REACTION_CHAIN, MultiTaskRanker, RankerConfig

    frame = _ranker_frame(200)
    model = MultiTaskRanker.from_frame(frame, RankerConfig(hidden=[8], tower=4, experts=2, nested=REACTION_CHAIN))
    assert saved.load(saved.save(model, tmp_path / "now")).config.nested == REACTION_CHAIN
    flat = MultiTaskRanker.from_frame(frame, RankerConfig(hidden=[8], tower=4, experts=2))
    folder = saved.save(flat, tmp_path / "old")
    spec = json.loads((folder / "model.json").read_text())
    del spec["config"]["nested"]  # as an earlier version wrote it
    (folder / "model.json").write_text(json.dumps(spec))
    loaded = saved.load(folder)
    assert loaded.config.nested == {}
    assert np.allclose(loaded.predict(frame).to_numpy(), flat.predict(frame).to_numpy(), atol=1e-6)


def test_a_distilled_ranker_learns_its_teachers_mean_probabilities_and_counts_their_cost():
    from newsfeed.models import runs
    from newsfeed.models.ranker import HEADS, RankerConfig
    from newsfeed.models.settings import TrainConfig

    frame = _ranker_frame(1_000)
    rng = np.random.default_rng(3)
    frame["click"] = (rng.random(len(frame)) < 0.3).astype(int)
    frame["hide"] = (rng.random(len(frame)) < 0.05).astype(int)
    rows, val = frame.iloc[:800], frame.iloc[800:]
    config, weights = RankerConfig(hidden=[8], tower=4, experts=2), load_weights()
    train = TrainConfig(epochs=2, batch_size=256, threads=1, teachers=2)
    soft_rows, soft_val, spent = runs.soft_labels(config, train, rows, val, weights, show_progress=False)
    teachers = [runs.fit_ranker(config, train.model_copy(update={"seed": train.seed + i, "teachers": 0}), rows, val,
                                weights, show_progress=False)[0] for i in range(2)]
    expected = np.mean([t.predict(frame, logged_position=True)[[f"p_{h}" for h in HEADS]].to_numpy()
                        for t in teachers], axis=0)
    soft = pd.concat([soft_rows, soft_val])[list(HEADS)].to_numpy()
    assert np.allclose(soft, expected, atol=1e-5)
    assert ((soft > 0) & (soft < 1)).all() and soft_rows.index.equals(pd.RangeIndex(800))
    assert soft[:, HEADS.index("click")].mean() > 3 * soft[:, HEADS.index("hide")].mean()  # rates learnt, not noise
    model, history = runs.fit_ranker(config, train, rows, val, weights, show_progress=False)
    assert history.seconds > spent.seconds > 0 and history.samples > spent.samples
    assert (model.predict(frame)["p_click"] < 1).all()


def test_cross_layers_start_as_the_identity_and_learn_a_product():
    from newsfeed.models.layers import CrossNetwork

    torch.manual_seed(0)
    x = torch.randn(2000, 4)
    cross = CrossNetwork(4, layers=1, rank=4)
    assert torch.equal(cross(x), x)
    y = x[:, 0] * x[:, 1]
    head, plain = torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    params = [*cross.parameters(), *head.parameters()]
    for model_params, forward in ((params, lambda: head(cross(x))), (list(plain.parameters()), lambda: plain(x))):
        optimizer = torch.optim.Adam(model_params, lr=0.05)
        for _ in range(300):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(forward()[:, 0], y)
            loss.backward()
            optimizer.step()
    crossed = torch.nn.functional.mse_loss(head(cross(x))[:, 0], y).item()
    linear = torch.nn.functional.mse_loss(plain(x)[:, 0], y).item()
    assert crossed < 0.1 * linear, (crossed, linear)  # a linear model cannot form x0 * x1: its error stays ~1


def test_validation_engagement_is_one_for_the_realised_order_and_negative_reversed():
    from newsfeed.models.runs import validation_engagement
    from newsfeed.models.ranker import HEADS

    frame = _ranker_frame(2000)
    rng = np.random.default_rng(2)
    frame["click"] = rng.random(len(frame)) < 0.3
    frame["hide"] = ~frame["click"] & (rng.random(len(frame)) < 0.2)
    weights = load_weights()

    class Fixed:  # a ranker whose predictions are given
        def __init__(self, sign):
            self.sign = sign

        def predict(self, rows):
            value = self.sign * (rows["click"].to_numpy(float) - 20 * rows["hide"].to_numpy(float))
            return pd.DataFrame({f"p_{h}": value if h == "click" else 0.0 for h in HEADS}, index=rows.index)

    measure = validation_engagement(frame, weights)
    assert measure(Fixed(1), None) == pytest.approx(1.0)
    assert measure(Fixed(-1), None) < -0.5


def test_post_bias_and_recency_ride_in_the_index_vectors_as_the_training_logits_up_to_a_constant_per_query():
    from newsfeed.models.two_tower import TwoTower, TwoTowerConfig, tower_inputs, training_batch

    rng = np.random.default_rng(0)
    n, topics = 64, 4
    created = 1.76e9 + rng.uniform(0, 3 * 86_400, n)
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 50, n), "post_id": np.arange(n), "author_id": np.arange(n) % 7,
        "user_engagement__topic_interest": list(np.eye(topics, dtype=np.float32)[rng.integers(0, topics, n)]),
        "post_content__topic_id": rng.integers(0, topics, n), "post_content__created_unix": created.astype(np.int64),
        "event_timestamp": pd.to_datetime(created + rng.uniform(0, 86_400, n), unit="s", utc=True),
    })
    config = TwoTowerConfig(user_inputs=["user_engagement__topic_interest"], post_inputs=["post_content__topic_id"],
                            embedding_dim=8, hidden=[16], post_bias=True, recency=True)
    torch.manual_seed(0)
    model = TwoTower.from_frame(frame, config).eval()
    assert model.config.time_origin_unix == pytest.approx(frame["event_timestamp"].max().timestamp())
    with torch.no_grad():
        model.age_rate.fill_(0.7)
    batch = training_batch(model, frame, np.zeros(n))
    with torch.no_grad():
        users = model.user_tower(tower_inputs(batch, "user"))
        posts, bias = model.post_tower(tower_inputs(batch, "post"))
        age = batch["request_days"][:, None] - batch["post/created_days"][None, :]
        logits = users @ posts.T / config.temperature + bias[None, :] - 0.7 * age
    indexed = model.embed_users(frame) @ model.embed_posts(frame).T
    assert indexed.shape == (n, n) and model.embed_posts(frame).shape[1] == 8 + 2
    offset = indexed - logits.numpy()  # = 0.7 x the request's day: one constant per query
    assert np.allclose(offset, offset[:, :1], atol=1e-3)
    assert np.allclose(offset[:, 0], 0.7 * batch["request_days"].numpy(), atol=1e-3)
    plain = TwoTower.from_frame(frame, config.model_copy(update={"post_bias": False, "recency": False}))
    vectors = plain.embed_posts(frame)
    assert vectors.shape[1] == 8 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_mixed_negatives_score_each_row_against_uniformly_drawn_posts_with_the_mixture_corrected():
    from newsfeed.models.two_tower import TwoTower, TwoTowerConfig, in_batch_loss, sampling_log_q, training_batch

    rng = np.random.default_rng(1)
    n = 200
    post_ids = np.r_[np.zeros(100, np.int64), rng.integers(1, 40, n - 100)]  # post 0: half the positives
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, n), "post_id": post_ids, "author_id": post_ids % 7,
                          "user_engagement__topic_interest": list(np.eye(4, dtype=np.float32)[rng.integers(0, 4, n)]),
                          "post_content__topic_id": post_ids % 4})
    config = TwoTowerConfig(user_inputs=["user_engagement__topic_interest"], post_inputs=["post_content__topic_id"],
                            embedding_dim=8, hidden=[16], post_bias=True, recency=False, logq_correction=True)
    torch.manual_seed(0)
    plain = TwoTower.from_frame(frame, config).eval()
    mixed = TwoTower.from_frame(frame, config.model_copy(update={"mixed_negatives": True})).eval()
    mixed.load_state_dict(plain.state_dict())
    log_q = sampling_log_q(post_ids)
    batch = training_batch(mixed, frame, log_q)
    drawn = batch["negative_post_id"].numpy()
    distinct = np.unique(post_ids)
    assert len(drawn) == n and set(drawn) <= set(distinct)
    assert (drawn == 0).mean() < 0.2  # uniform over the distinct posts, not by popularity (1/37 expected)
    # Each candidate's chance of being scored: its share of the batch plus one draw in len(distinct).
    share = pd.Series(post_ids).value_counts(normalize=True)
    assert np.allclose(batch["negative_log_q"].numpy(), np.log(share[drawn].to_numpy() + 1 / len(distinct)), atol=1e-5)
    assert np.allclose(batch["log_q"].numpy(), np.log(share[post_ids].to_numpy() + 1 / len(distinct)), atol=1e-5)
    # The same weights: more candidates in every row's softmax can only raise its loss.
    with torch.no_grad():
        assert float(in_batch_loss(mixed, batch)) > float(in_batch_loss(plain, training_batch(plain, frame, log_q)))
        # A row's own post drawn is not its negative: where every row engaged the same post, nothing is.
        one = frame.assign(post_id=7, author_id=0, post_content__topic_id=3)
        assert float(in_batch_loss(mixed, training_batch(mixed, one, sampling_log_q(one["post_id"].to_numpy())))) == 0


def test_a_two_tower_saved_before_the_score_terms_existed_loads_without_them(tmp_path):
    import json

    from newsfeed.models import saved
    from newsfeed.models.two_tower import TwoTower, TwoTowerConfig

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user_id": rng.integers(0, 50, 40), "post_id": np.arange(40), "author_id": np.arange(40) % 5,
                          "user_engagement__topic_interest": list(np.eye(3, dtype=np.float32)[rng.integers(0, 3, 40)]),
                          "post_content__topic_id": rng.integers(0, 3, 40)})
    config = TwoTowerConfig(user_inputs=["user_engagement__topic_interest"], post_inputs=["post_content__topic_id"],
                            embedding_dim=8, hidden=[16], post_bias=False, recency=False, logq_correction=True)
    model = TwoTower.from_frame(frame, config)
    folder = saved.save(model, tmp_path / "old")
    spec = json.loads((folder / "model.json").read_text())
    for key in ("post_bias", "recency", "time_origin_unix"):  # as an earlier version wrote it
        del spec["config"][key]
    (folder / "model.json").write_text(json.dumps(spec))
    loaded = saved.load(folder)
    assert not loaded.config.post_bias and not loaded.config.recency
    assert np.allclose(loaded.embed_posts(frame), model.embed_posts(frame), atol=1e-6)


def test_fine_tuning_learns_a_drift_from_the_new_rows_and_leaves_its_base_as_it_was():
    from newsfeed.features.catalog import TIMESTAMP
    from newsfeed.models import continual
    from newsfeed.models.ranker import MultiTaskRanker, RankerConfig, multitask_loss, training_batch
    from newsfeed.models.settings import RANKER_FINE_TUNING, TrainConfig
    from newsfeed.models.training import fit

    def world(seed: int, sign: float, start: str) -> pd.DataFrame:
        frame = _ranker_frame(8_000, seed)
        rng = np.random.default_rng(seed + 100)
        affinity = frame["request_features__topic_affinity"].to_numpy()
        frame["click"] = (rng.random(len(frame)) < 1 / (1 + np.exp(-3 * sign * affinity))).astype(int)
        frame[TIMESTAMP] = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(len(frame)), unit="s")
        return frame

    def click_auc(model, frame) -> float:
        return metrics.roc_auc(frame["click"].to_numpy(), model.predict(frame)["p_click"].to_numpy())

    torch.manual_seed(0)
    old, new = world(0, 1.0, "2026-01-01"), world(1, -1.0, "2026-01-02")  # the users' taste flipped
    base = MultiTaskRanker.from_frame(old, RankerConfig(hidden=[16], tower=4, experts=2, id_dropout=1.0))
    batch = training_batch(base, old)
    fit(base, multitask_loss, batch, batch, TrainConfig(epochs=3, learning_rate=5e-3), show_progress=False)
    assert click_auc(base, old) > 0.7 and click_auc(base, new) < 0.3  # learnt the old taste (Bayes ~0.76)
    before = {k: v.clone() for k, v in base.state_dict().items()}

    since = continual.rows_since(pd.concat([old, new]), pd.Timestamp("2026-01-02", tz="UTC"),
                                 pd.Timestamp("2026-01-03", tz="UTC"))
    assert len(since) == len(new)
    tuned, history = continual.fine_tune(base, since, RANKER_FINE_TUNING.model_copy(update={"epochs": 3, "batch_size": 128}),
                                         show_progress=False)
    assert click_auc(tuned, new) > 0.7  # the new taste, from the new rows alone
    assert len(history.train_loss) == 3 and history.samples == 3 * len(new)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the base is untouched
    with pytest.raises(continual.NothingToFineTune):
        continual.fine_tune(base, since.iloc[:0], RANKER_FINE_TUNING, show_progress=False)


def test_sequence_pooling_weighs_places_ignores_padding_and_keeps_empty_histories_at_zero():
    from newsfeed.models.layers import SequencePool, _mean_bag

    torch.manual_seed(0)
    weight = torch.randn(50, 8)
    weight[0] = 0  # the padding row, as id_tables keep it
    ids = torch.tensor([[3, 7, 9, 0, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0]])  # newest first
    position = SequencePool(8, 20, "position")
    assert torch.allclose(position(weight, ids), _mean_bag(weight, ids), atol=1e-6)  # starts as the mean
    with torch.no_grad():
        position.position_logits[0] = 20.0  # all weight on the newest
    assert torch.allclose(position(weight, ids)[:2], weight[[3, 5]], atol=1e-5)
    assert torch.equal(position(weight, ids)[2], torch.zeros(8))
    attention = SequencePool(8, 20, "attention")
    with torch.no_grad():
        attention.position.weight.normal_()
    out = attention(weight, ids)
    assert torch.isfinite(out).all() and torch.equal(out[2], torch.zeros(8))
    assert torch.allclose(attention(weight, ids[:, :3]), out, atol=1e-5)  # trailing padding changes nothing
    reordered = torch.tensor([[9, 7, 3, 0, 0]])
    assert not torch.allclose(attention(weight, reordered), out[:1], atol=1e-3)  # the order is seen
    assert attention(weight, torch.randint(1, 50, (2, 30))).shape == (2, 8)  # longer than its places: the newest
