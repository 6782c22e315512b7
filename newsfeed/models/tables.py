"""Evaluation reports as terminal tables: printed by the train commands and by the
pipeline's training steps."""

from __future__ import annotations

from rich.table import Table


def metric_table(title: str, report: dict[str, dict[str, float]]) -> Table:
    """One row per scorer (model and baselines), one column per metric."""
    table = Table(title=title)
    columns = list(dict.fromkeys(k for row in report.values() for k in row))
    table.add_column("scorer")
    for c in columns:
        table.add_column(c, justify="right")
    for scorer, row in report.items():
        table.add_row(scorer, *(f"{row[c]:.4f}" if c in row else "" for c in columns))
    return table


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
