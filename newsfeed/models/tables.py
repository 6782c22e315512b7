"""Evaluation reports as terminal tables: printed by the train commands and by the
pipeline's training steps."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table


def metric_table(title: str, report: dict[str, dict[str, float]]) -> Table:
    """One row per scorer (model and baselines), one column per metric; a metric with
    ``<metric>_low`` and ``<metric>_high`` shows its interval beside it."""
    table = Table(title=title)
    keys = list(dict.fromkeys(k for row in report.values() for k in row))
    bounds = {k for k in keys for end in ("_low", "_high") if k.endswith(end) and k.removesuffix(end) in keys}
    columns = [k for k in keys if k not in bounds]
    table.add_column("scorer")
    for c in columns:
        table.add_column(f"{c} [95% CI]" if f"{c}_low" in bounds else c, justify="right")
    for scorer, row in report.items():
        table.add_row(scorer, *(_cell(row, c) for c in columns))
    return table


def _cell(row: dict[str, float], metric: str) -> str:
    if metric not in row:
        return ""
    if f"{metric}_low" in row:
        return f"{row[metric]:.4f} [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"
    return f"{row[metric]:.4f}"


def head_table(heads: dict[str, float]) -> Table:
    from newsfeed.models.ranker import HEADS

    table = Table(title="ranker heads (test period)")
    for c in ("head", "ROC-AUC", "PR-AUC", "calibration error"):
        table.add_column(c, justify="left" if c == "head" else "right")
    for h in HEADS:
        values = [heads.get(f"{m}_{h}", float("nan")) for m in ("auc", "pr_auc", "calibration_error")]
        table.add_row(h, *(f"{v:.3f}" for v in values))
    return table


def retrieval_table(report: dict[str, dict[str, float]]) -> Group:
    """The scorers' rows: what they find of what users engaged with and, on simulator data, of
    the oracle's feed; with what they were measured on (``corpus``, ``tuning``) below."""
    scorers = {name: row for name, row in report.items() if name not in ("corpus", "tuning")}
    logged = {name: {k: v for k, v in row.items() if not k.startswith("oracle_")} for name, row in scorers.items()}
    oracle = {name: {k: v for k, v in row.items() if k.startswith("oracle_")} for name, row in scorers.items()}
    tables = [metric_table("retrieval (test period's requests, seen posts excluded): posts users engaged with", logged)]
    c = report.get("corpus", {})
    if any(oracle.values()):
        tables.append(metric_table(f"retrieval: the oracle's feed (the {c.get('oracle_feed', 10):g} posts of highest "
                                   "true expected engagement per request) found in the top k", oracle))
    notes = []
    if c:
        notes.append(f"{c['queries']:,.0f} requests, each over the posts published up to {c['horizon_days']:g} days "
                     f"before it ({c['posts']:,.0f} in all); {c['relevant_pairs']:,.0f} engaged pairs to find; "
                     f"unretrievable, left out: {c['unretrievable_shown_before']:,.0f} shown to the user before, "
                     f"{c['unretrievable_older_than_horizon']:,.0f} older than the horizon "
                     f"({c['unretrievable_share']:.1%} of all)")
    if "tuning" in report:
        notes.append(f"most_popular: half-life {report['tuning']['most_popular_half_life_days']:g} days, "
                     "chosen on the validation period's Recall@100")
    tables[-1].caption = "\n".join(notes) or None
    return Group(*tables)


def ranking_table(report: dict[str, dict[str, float]], tuning: dict[str, float] | None = None) -> Table:
    table = metric_table("ranking (test period, per request)", report)
    if tuning:
        prior = tuning["most_popular_prior_impressions"]
        setting = f"engagement per impression, shrunk by {prior:g} impressions" if prior else "engagement so far"
        table.caption = f"most_popular: {setting}, chosen on the validation period's feeds"
    return table
