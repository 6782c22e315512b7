"""Drift between two windows, measured by Evidently: data drift of each served feature (the
test Evidently picks for its type and size: above 1,000 rows the normed Wasserstein distance
for numbers, the Jensen-Shannon distance for categories), prediction drift of each reaction
probability and of the engagement score, and target drift: the realised reaction rates (a
z-test of two proportions per reaction, beside each rate's relative change), the topic
mix of clicked posts (a two-sample chi-square registered with Evidently), and the realised
engagement per impression with the z of its change (the objective itself, with its noise)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
from scipy import stats

from monitoring.windows import CATEGORICAL, PREDICTIONS, TARGETS, Window, compared_numeric
from newsfeed.scoring import load_weights, realised_engagement


HOMOGENEITY = "chi2_homogeneity"
ENGAGED_TOPIC_ALPHA = 0.001


def _homogeneity(reference: pd.Series, current: pd.Series, feature_type, threshold: float) -> tuple[float, bool]:
    """Two samples of a category from one distribution? Pearson's chi-square on the 2 x k table.
    (Evidently's own chi-square tests the current counts against the reference's shares as if
    those were exact: with a few hundred rows on each side it rejects far too often.)"""
    table = pd.concat([reference.value_counts(), current.value_counts()], axis=1).fillna(0).to_numpy().T
    p_value = float(stats.chi2_contingency(table[:, table.sum(axis=0) > 0])[1])
    return p_value, p_value < threshold


@functools.cache  # once per process: Evidently's registry is global
def _register_homogeneity() -> None:
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    register_stattest(StatTest(name=HOMOGENEITY, display_name="chi-square homogeneity p_value",
                               allowed_feature_types=[ColumnType.Categorical], default_threshold=0.05),
                      default_impl=_homogeneity)


def _report(reference: pd.DataFrame, current: pd.DataFrame, numeric: list[str], categorical: list[str],
            methods: dict[str, str] | None = None, thresholds: dict[str, float] | None = None):
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    _register_homogeneity()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    columns = numeric + categorical
    methods = {**{c: "z" for c in TARGETS if c in columns}, **(methods or {})}
    report = Report([DataDriftPreset(columns=columns, per_column_method=methods,
                                     per_column_threshold=thresholds)], include_tests=True)
    return report.run(Dataset.from_pandas(current[columns], data_definition=definition),
                      Dataset.from_pandas(reference[columns], data_definition=definition))


def _columns(snapshot) -> dict[str, dict]:
    """Per column: the drift score, the test and its threshold, and whether it drifted."""
    raw = snapshot.dict()
    failed = {t["metric_config"]["params"]["column"] for t in raw.get("tests", [])
              if t.get("status") == "FAIL" and "column" in t.get("metric_config", {}).get("params", {})}
    out = {}
    for metric in raw["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        column = config["column"]
        out[column] = {"score": float(metric["value"]), "method": config["method"],
                       "threshold": float(config["threshold"]), "drifted": column in failed}
    return out


ENGAGED_TOPIC = "clicked_post_topic"
"""Target drift in what users engage with: the topic mix of clicked posts. Interests that move
show here first (a user's own history fills slowly), and unlike the shown mix it does not
depend on what the feed chose to show."""


def _engaged_topics(reference: pd.DataFrame, current: pd.DataFrame) -> dict:
    """The clicked posts' topic mix compared through Evidently by a two-sample chi-square test."""
    column = "post_content__topic"
    clicked = [f.loc[f["click"] == 1, [column]].rename(columns={column: ENGAGED_TOPIC}) for f in (reference, current)]
    if min(len(c) for c in clicked) < 20:
        return {"score": float("nan"), "method": "too few clicks", "threshold": float("nan"), "drifted": False,
                "clicks": [len(c) for c in clicked]}
    snapshot = _report(clicked[0], clicked[1], [], [ENGAGED_TOPIC], {ENGAGED_TOPIC: HOMOGENEITY},
                       {ENGAGED_TOPIC: ENGAGED_TOPIC_ALPHA})
    return {**_columns(snapshot)[ENGAGED_TOPIC], "clicks": [len(c) for c in clicked]}


def engagement_change(reference: pd.DataFrame, current: pd.DataFrame, weights: dict[str, float]) -> dict:
    """Realised engagement per impression (the weighted sum of the reactions each impression
    earned) in each window, and Welch's z of the change: one number for what the feed is for,
    with its standard error, so a drop can be told from a noisy day."""
    values = [realised_engagement({r: f[r].to_numpy(np.float64) for r in weights}, weights)
              for f in (reference, current)]
    means = [float(v.mean()) for v in values]
    error = float(np.sqrt(sum(v.var(ddof=1) / len(v) for v in values)))
    change = means[1] - means[0]
    return {"reference": means[0], "current": means[1], "change": change, "standard_error": error,
            "z": change / error if error > 0 else 0.0}


def _rates(frame: pd.DataFrame) -> dict[str, float]:
    return {r: float(frame[r].mean()) for r in TARGETS}


def compare(reference: Window, current: Window, lineage: dict | None = None,
            weights: dict[str, float] | None = None):
    """(summary for machines, Evidently snapshot for people). ``weights``: the engagement
    weights (default: the shipped table)."""
    numeric = [c for c in compared_numeric(reference.frame, (reference, current)) if c in current.frame.columns]
    frame_ref = reference.frame.assign(**{c: reference.frame[c].astype(np.int64).astype(str) for c in TARGETS})
    frame_cur = current.frame.assign(**{c: current.frame[c].astype(np.int64).astype(str) for c in TARGETS})
    snapshot = _report(frame_ref, frame_cur, numeric + list(PREDICTIONS), list(CATEGORICAL) + list(TARGETS))
    columns = _columns(snapshot)
    features = {c: columns[c] for c in (*numeric, *CATEGORICAL)}
    drifted = sorted(c for c, v in features.items() if v["drifted"])
    before, after = _rates(reference.frame), _rates(current.frame)
    target = {r: {**columns[r], "reference_rate": before[r], "current_rate": after[r],
                  "relative_change": (after[r] - before[r]) / before[r] if before[r] > 0 else None}
              for r in TARGETS}
    target[ENGAGED_TOPIC] = _engaged_topics(reference.frame, current.frame)
    summary = {
        "reference": reference.describe(), "current": current.describe(),
        "champion": (lineage or {}).get("version"),
        "immature_features": sorted(set(compared_numeric(reference.frame)) - set(numeric)),
        "features": features, "drifted_features": drifted,
        "drifted_share": len(drifted) / max(len(features), 1),
        "prediction": {c: columns[c] for c in PREDICTIONS},
        "target": target,
        "engagement": engagement_change(reference.frame, current.frame, weights or load_weights()),
    }
    return summary, snapshot
