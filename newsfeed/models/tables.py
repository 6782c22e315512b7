"""Evaluation reports as terminal tables: printed by the train commands and by the
pipeline's training steps."""

from __future__ import annotations

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


def retrieval_table(report: dict[str, dict[str, float]]) -> Table:
    return metric_table("retrieval (test period, seen posts excluded)", report)


def ranking_table(report: dict[str, dict[str, float]]) -> Table:
    return metric_table("ranking (test period, per request)", report)
