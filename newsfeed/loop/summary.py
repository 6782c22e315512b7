"""What a loop run showed: realised engagement per impression per arm with a 95% interval
over users (the bootstrap resamples users: one user's impressions are not independent), the
same during each canary for the arms it compared, the drift checks, retrains and verdicts;
and a page with the plots."""

from __future__ import annotations

from html import escape

import numpy as np
import pandas as pd

from newsfeed import reports
from newsfeed.metrics import ratio_interval


def engagement(frame: pd.DataFrame, seed: int = 0) -> dict:
    """Realised engagement per impression of ``frame``'s rows, with its interval over users;
    and the expected engagement of what was shown (the world's true probabilities, which only
    a simulation knows: the same judgement without the reactions' draw noise)."""
    per_user = frame.groupby("user_id").agg(engagement=("engagement", "sum"), expected=("expected", "sum"),
                                            impressions=("engagement", "size"))
    out = {}
    for column in ("engagement", "expected"):
        interval = ratio_interval(per_user[column].to_numpy(), per_user["impressions"].to_numpy(), len(per_user),
                                  seed=seed)
        out[f"{column}_per_impression"] = {"estimate": interval.value, "ci": [interval.low, interval.high]}
    return {**out, "users": int(len(per_user)), "impressions": int(len(frame))}


def gate_line(check: dict) -> str:
    """The gate's primary check in a line: the challenger against the champion, paired."""
    paired = check.get("paired") or {}
    line = f"{check['metric']} {check['challenger']:.3f} against the champion's {check['champion']:.3f}"
    if paired:
        line += f", paired {paired['difference']:+.3f} [{paired['low']:+.3f}, {paired['high']:+.3f}]"
    return line


def by_arm(frame: pd.DataFrame) -> dict:
    return {arm: engagement(part) for arm, part in frame.groupby("arm")} if len(frame) else {}


def summarise(ledger, drift_day: float | None, interleave: tuple[str, str] | None = None,
              interleaved_arm: str | None = None) -> dict:
    frame = ledger.frame()
    out = {"arms": by_arm(frame), "retrains": ledger.retrains, "decisions": ledger.decisions,
           "drift_checks": ledger.checks, "days": ledger.days}
    if interleave and len(frame) and (frame["arm"] == interleaved_arm).any():
        from newsfeed.loop.sensitivity import compare

        out["sensitivity"] = compare(frame, *interleave, interleaved_arm)
    if drift_day is not None and len(frame):
        out["before_drift"] = by_arm(frame[frame["day"] < drift_day])
        out["after_drift"] = by_arm(frame[frame["day"] >= drift_day])
    canaries = []
    for retrain in ledger.retrains:
        if "canary" not in retrain:
            continue
        start = retrain["day"]
        end = next((d["day"] for d in ledger.decisions if d["day"] > start and d["done"]), float("inf"))
        during = frame[(frame["day"] >= np.floor(start)) & (frame["day"] < end)]
        canaries.append({"from_day": start, "to_day": None if end == float("inf") else end, "arms": by_arm(during)})
    out["canaries"] = canaries
    return out


# -- the page ------------------------------------------------------------------------------------

COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def line_chart(series: dict[str, list[tuple[float, float]]], title: str, marks: list[tuple[float, str]] = (),
               width: int = 760, height: int = 260) -> str:
    """An inline SVG line chart: ``series`` name -> (x, y) points; ``marks``: vertical lines.
    The x axis is simulated days since the loop started."""
    points = [p for s in series.values() for p in s if p[1] == p[1]]
    if not points:
        return reports.paragraph(f"{title}: no data")
    xs, ys = [p[0] for p in points] + [m[0] for m in marks], [p[1] for p in points]
    x0, x1 = 0.0, max(max(xs), 1.0)
    y0, y1 = min(min(ys), 0.0), max(max(ys), 0.0)
    y0, y1 = y0 - 0.05 * (y1 - y0 or 1), y1 + 0.1 * (y1 - y0 or 1)
    left, right, bottom, top = 50, width - 180, height - 30, 24

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y):
        return bottom - (y - y0) / (y1 - y0) * (bottom - top)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
             f"aria-label='{escape(title)}'><text x='{left}' y='14' font-size='13'>{escape(title)}</text>",
             f"<line x1='{left}' y1='{bottom}' x2='{right}' y2='{bottom}' stroke='#999'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{bottom}' stroke='#999'/>"]
    if y0 < 0 < y1:
        parts.append(f"<line x1='{left}' y1='{sy(0):.1f}' x2='{right}' y2='{sy(0):.1f}' stroke='#ddd'/>")
    for value in np.linspace(y0, y1, 5):
        parts.append(f"<text x='{left - 4}' y='{sy(value) + 4:.1f}' font-size='10' text-anchor='end'>{value:.2f}</text>")
    for x in range(int(np.ceil(x1)) + 1):
        parts.append(f"<text x='{sx(x):.1f}' y='{bottom + 14}' font-size='10' text-anchor='middle'>{x}</text>")
    for x, label in marks:
        parts.append(f"<line x1='{sx(x):.1f}' y1='{top}' x2='{sx(x):.1f}' y2='{bottom}' stroke='#555' "
                     f"stroke-dasharray='4 3'/><text x='{sx(x) + 3:.1f}' y='{top - 2}' font-size='10'>"
                     f"{escape(label)}</text>")
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts if y == y)
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' points='{path}'/>")
        parts.append(f"<text x='{right + 10}' y='{top + 14 * (i + 1)}' font-size='11' fill='{colour}'>"
                     f"{escape(name)}</text>")
    return "".join(parts) + "</svg>"


def _verdict(decision: dict) -> str:
    return ", ".join(k.replace("_", " ") for item in decision["done"] for k in item
                     if k in ("promoted", "rolled_back")) or "runs on"


def page(summary: dict, ledger) -> str:
    frame = ledger.frame()
    daily = (frame.groupby(["arm", "day"])["engagement"].mean() if len(frame) else pd.Series(dtype=float))
    series = {arm: [(day + 0.5, float(v)) for (a, day), v in daily.items() if a == arm]
              for arm in sorted({a for a, _ in daily.index})}
    drift = [(float(summary["drift_day"]), "drift")] if summary.get("drift_day") is not None else []
    marks = drift + [(r["day"], "retrain" if r["exit_code"] == 0 else "retrain (gate: no)")
                     for r in summary["retrains"]]
    marks += [(d["day"], _verdict(d)) for d in summary["decisions"] if d["done"]]
    checks = summary["drift_checks"]
    check_series = {f"{r} rate change": [(c["day"], 100 * c[f"{r}_change"]) for c in checks
                                         if c.get(f"{r}_change") is not None] for r in ("click", "like")}
    arms = [{"arm": name, "users": a["users"], "impressions": a["impressions"],
             "engagement / impression": a["engagement_per_impression"]["estimate"],
             "95% low": a["engagement_per_impression"]["ci"][0], "95% high": a["engagement_per_impression"]["ci"][1],
             "true expected / impression": a["expected_per_impression"]["estimate"]}
            for name, a in summary["arms"].items()]
    canaries = [{"canary from day": f"{c['from_day']:.1f}", "arm": name, "users": a["users"],
                 "engagement / impression": a["engagement_per_impression"]["estimate"],
                 "95% low": a["engagement_per_impression"]["ci"][0], "95% high": a["engagement_per_impression"]["ci"][1],
                 "true expected / impression": a["expected_per_impression"]["estimate"],
                 "true 95% low": a["expected_per_impression"]["ci"][0],
                 "true 95% high": a["expected_per_impression"]["ci"][1]}
                for c in summary.get("canaries", []) for name, a in c["arms"].items()]
    events = [{"day": f"{r['day']:.1f}", "event": "retrain",
               "what": "; ".join(r["reasons"]) + (f"; gate: {gate_line(r['gate'])}" if r.get("gate") else ""),
               "result": {0: "registered, canary out", 3: "stopped by the gate"}.get(r["exit_code"], "failed")}
              for r in summary["retrains"]]
    events += [{"day": f"{d['day']:.1f}", "event": "verdict",
                "what": "; ".join(f"{v['arm']}: {v['action']} ({v['why']})" for v in d["verdicts"]),
                "result": _verdict(d)} for d in summary["decisions"]]
    sensitivity = []
    if summary.get("sensitivity"):
        sens = summary["sensitivity"]
        sensitivity = [{"method": "A/B split", "difference": sens["ab"]["difference"], "users needed": sens["ab"]["users"],
                        "power at that many (resampled)": sens["ab"]["power_at_that_many"]},
                       {"method": "team-draft interleaving",
                        "difference": sens["interleaving"]["mean_difference"],
                        "users needed": sens["interleaving"]["users"],
                        "power at that many (resampled)": sens["interleaving"]["power_at_that_many"]}]
    return reports.page(
        "closed loop",
        line_chart(series, "realised engagement per impression, per day and arm (x: simulated days)", marks),
        line_chart(check_series, "drift checks: realised rate against the days before, % (retrain below -30%)", drift),
        reports.table(arms, "per arm, whole run (95% interval over users)"),
        reports.table(canaries, "during each canary, per arm"),
        reports.table(events, "retrains and verdicts"),
        reports.table(sensitivity, "users each method needs to tell the arms apart (5% level, 80% power)"))
