"""HTML pages for people: a drift report (verdict, drifted features, trigger decision, link
to Evidently's full report), the index of all drift reports, and an experiment report."""

from __future__ import annotations

from html import escape

from newsfeed import reports


def _interval(value: dict | None) -> str:
    if not value:
        return ""
    return f"{value['estimate']:+.1%} [{value['ci'][0]:+.1%}, {value['ci'][1]:+.1%}]"


def _difference(value: dict) -> str:
    return f"{value['estimate']:+.3f} [{value['ci'][0]:+.3f}, {value['ci'][1]:+.3f}]"


def _engagement_line(engagement: dict) -> str:
    return (f"Realised engagement per impression: {engagement['reference']:.3f} -> {engagement['current']:.3f} "
            f"(change {engagement['change']:+.3f} +/- {engagement['standard_error']:.3f}, z {engagement['z']:+.1f}).")


def drift_page(summary: dict, decision: dict, evidently_file: str | None) -> str:
    verdict = "DRIFT" if summary["drifted"] else "no drift"
    retrain = "retrain fired" if decision["retrain"] else ("retrain held: " + decision["suppressed"]
                                                           if decision.get("suppressed") else "no retrain")
    windows = [summary["reference"], summary["current"]]
    features = sorted(summary["features"].items(), key=lambda kv: (not kv[1]["drifted"], -kv[1]["score"]))
    sections = [
        reports.paragraph(f"Verdict: {verdict}; {retrain}.", "fail" if summary["drifted"] else "pass"),
        reports.paragraph(f"{len(summary['drifted_features'])} of {len(summary['features'])} features drifted "
                          f"({summary['drifted_share']:.0%}); champion ranker version {summary.get('champion')}."),
        reports.paragraph(_engagement_line(summary["engagement"])),
        *(reports.paragraph("Why: " + reason) for reason in decision["reasons"]),
        reports.table(windows, "windows"),
        reports.table([{"prediction": k, **v} for k, v in summary["prediction"].items()], "prediction drift"),
        reports.table([{"target": k, **{c: v.get(c, "") for c in ("reference_rate", "current_rate", "relative_change",
                                                                 "method", "score", "threshold", "drifted")}}
                       for k, v in summary["target"].items()],
                      "target drift: realised rates (z-test p-value) and the topic mix of clicked posts"),
        reports.table([{"feature": k, **v} for k, v in features], "data drift per feature"),
    ]
    if evidently_file:
        sections.append(f"<p><a href='{escape(evidently_file)}'>Evidently's full report</a></p>")
    return reports.page(f"Drift report: {verdict}", *sections)


def drift_index(entries: list[dict]) -> str:
    """``entries``: newest first, each {"folder", "time", "drifted", "retrain", "drifted_share"}."""
    rows = "".join(
        f"<tr><td><a href='{escape(e['folder'])}/report.html'>{escape(e['time'])}</a></td>"
        f"<td class='{'fail' if e['drifted'] else 'pass'}'>{'DRIFT' if e['drifted'] else 'no drift'}</td>"
        f"<td>{e['drifted_share']:.0%}</td><td>{'fired' if e['retrain'] else 'no'}</td></tr>" for e in entries)
    table = (f"<table><thead><tr><th>report</th><th>verdict</th><th>features drifted</th><th>retrain</th></tr>"
             f"</thead><tbody>{rows}</tbody></table>")
    return reports.page("Drift reports", reports.paragraph(f"{len(entries)} reports, newest first."), table)


ARM_COLUMNS = ("users", "impressions", "ctr", "hide_rate", "block_rate", "engagement_per_impression",
               "engagement_per_user", "dwell_seconds", "topics_per_feed", "authors_per_feed", "novelty", "coverage",
               "latency_p95_ms", "degraded_rate")


def experiment_page(report: dict) -> str:
    control = report["control"]
    srm = report["srm"]
    arms = [{"arm": name + (" (control)" if name == control else ""),
             **{c: arm[c] for c in ARM_COLUMNS if c in arm}} for name, arm in report["arms"].items()]
    lifts = [{"arm": name, "measure": key, "estimate": _interval(value) if key.startswith("lift_") else _difference(value)}
             for name, arm in report["arms"].items() if name != control
             for key, value in arm.items() if key.startswith(("lift_", "diff_"))]
    lifts += [{"arm": name, "measure": "guardrails", "estimate": "; ".join(arm["guardrails"]) or "ok"}
              for name, arm in report["arms"].items() if name != control]
    verdict = ("SAMPLE RATIO MISMATCH: the split is broken, do not trust the lifts"
               if srm["mismatch"] else "split as configured")
    sections = [
        reports.paragraph(f"Control: {control}. SRM p = {srm['p_value']:.4g}: {verdict}.",
                          "fail" if srm["mismatch"] else "pass"),
        reports.table(arms, "per arm"),
        reports.table(lifts, "against control: relative lift of rates, difference of engagement (diff_); "
                             "95% interval, users as units"),
    ]
    sections += [reports.paragraph(f"Rolled back: {arm}", "fail") for arm in report.get("rolled_back", [])]
    return reports.page(f"Experiment report ({control} vs {', '.join(a for a in report['arms'] if a != control)})",
                        *sections)
