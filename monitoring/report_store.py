"""Drift reports on disk: ``<home>/monitoring/drift/<UTC time>/`` holds ``summary.json`` (for
machines), ``report.html`` (for people) and ``evidently.html`` (Evidently's full report);
``index.html`` beside them lists every report, newest first, each with its verdict."""

from __future__ import annotations

import json
import time
from pathlib import Path

from monitoring import pages
from newsfeed import atomic


def drift_folder(home: Path) -> Path:
    return Path(home) / "monitoring" / "drift"


def write(home: Path, summary: dict, decision: dict, snapshot, now: float | None = None) -> Path:
    """Write one report's files and refresh the index; return the report's folder."""
    now = time.time() if now is None else now
    root = drift_folder(home)
    folder = root / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    suffix = 1
    while folder.exists():  # two reports in one second keep both
        folder, suffix = root / f"{folder.name.split('-')[0]}-{suffix}", suffix + 1
    record = {**summary, "decision": decision, "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))}

    def fill(staging: Path) -> None:  # the folder appears whole or not at all
        snapshot.save_html(str(staging / "evidently.html"))
        (staging / "report.html").write_text(pages.drift_page(summary, decision, "evidently.html"))
        (staging / "summary.json").write_text(json.dumps(record, indent=2, default=str))

    atomic.replace_folder(folder, fill)
    write_index(home)
    return folder


def entries(home: Path) -> list[dict]:
    out = []
    for path in sorted(drift_folder(home).glob("*/summary.json"), reverse=True):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue  # a report being written is not listed yet
        out.append({"folder": path.parent.name, "time": record.get("time", path.parent.name),
                    "drifted": record["drifted"], "retrain": record["decision"]["retrain"],
                    "drifted_share": record["drifted_share"]})
    return out


def write_index(home: Path) -> Path:
    return atomic.write_text(drift_folder(home) / "index.html", pages.drift_index(entries(home)))
