"""What was served: one JSON line per request, the impression log monitoring and off-policy
evaluation read. Read tolerantly: nothing in it can stop a replica from starting."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path


def serving_dir(home: Path) -> Path:
    return Path(home).resolve() / "serving"


class ServedLog:
    """One JSON line per request, in a file per process and day (replicas never interleave)."""

    def __init__(self, home: Path):
        self.directory = serving_dir(home) / "impressions"
        self._lock = threading.Lock()
        self.skipped = 0  # lines that could not be read (cut short by a crash, or not a record)

    def write(self, record: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{time.strftime('%Y%m%d', time.gmtime())}-{os.getpid()}.jsonl"
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(path, "a") as f:
            f.write(line)

    def read(self) -> list[dict]:
        """Every well-formed record; any other line is skipped and counted in ``skipped``: nothing
        in the log can stop a replica from starting."""
        records, skipped = [], 0
        for path in sorted(self.directory.glob("*.jsonl")):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                    if valid_record(record):
                        records.append(record)
                        continue
                except ValueError:
                    pass
                skipped += 1
        self.skipped = skipped
        return records


INT64 = (-(2**63), 2**63 - 1)


def valid_record(record) -> bool:
    """A served-log record whose ids fit the store's int64 columns."""
    def fits(value) -> bool:
        return isinstance(value, int) and INT64[0] <= value <= INT64[1]
    return (isinstance(record, dict) and fits(record.get("user_id")) and isinstance(record.get("ts"), (int, float))
            and isinstance(record.get("items"), list)
            and all(isinstance(i, dict) and fits(i.get("post_id")) for i in record["items"]))
