"""Validation at the door: every bad row goes to quarantine with its reasons.

Each table is checked against its pandera contract (types, ranges, required
columns, row rules), then across tables (referential integrity, nothing shown
before it existed). Rows that fail are quarantined with one reason per failed
rule; rows that pass are the clean tables. Nothing is dropped silently: every
input row is either clean or quarantined, and the counts say so.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pandera.errors as pe

from newsfeed import atomic
from newsfeed.data.io import read_dataset
from newsfeed.errors import DataError  # noqa: F401 - raised here, imported from here by callers
from newsfeed.schema import SCHEMAS, TABLES

QUARANTINE_DIR = "quarantine"
REASON = "quarantine_reason"


@dataclass
class TableReport:
    table: str
    rows: int
    bad_rows: int
    reasons: Counter = field(default_factory=Counter)

    @property
    def bad_rate(self) -> float:
        return self.bad_rows / self.rows if self.rows else 0.0


@dataclass
class ValidationResult:
    clean: dict[str, pd.DataFrame]
    quarantine: dict[str, pd.DataFrame]  # bad rows as they came, plus a reason column
    reports: dict[str, TableReport]
    errors: list[str]  # whole-table problems: a missing table or column, an unusable type

    @property
    def bad_rows(self) -> int:
        return sum(r.bad_rows for r in self.reports.values())

    def failures(self, max_bad_rate: float) -> list[str]:
        """Why this data must not be used: table errors, and tables above the bad-row rate."""
        over = [
            f"{r.table}: {r.bad_rows:,} of {r.rows:,} rows are bad ({r.bad_rate:.2%} > {max_bad_rate:.2%})"
            for r in self.reports.values()
            if r.bad_rate > max_bad_rate
        ]
        return self.errors + over

    def require_usable(self, max_bad_rate: float) -> None:
        """Raise DataError saying why, when the data must not be used."""
        failures = self.failures(max_bad_rate)
        if failures:
            raise DataError("data is not usable:\n  " + "\n  ".join(failures))

    def to_json(self) -> dict:
        return {
            "errors": self.errors,
            "tables": {
                t: {"rows": r.rows, "bad_rows": r.bad_rows, "bad_rate": r.bad_rate, "reasons": dict(r.reasons)}
                for t, r in self.reports.items()
            },
        }


# pandera's names for its built-in checks, in words an on-call engineer reads.
_BUILTIN = {"field_uniqueness": "duplicate value", "multiple_fields_uniqueness": "duplicate row",
            "not_nullable": "missing value"}


def _describe(case: pd.Series) -> str | None:
    check, column, value = str(case["check"]), case["column"], case["failure_case"]
    if check.startswith("dtype("):
        return None  # reported as the coercion failure that causes it
    if check.startswith("coerce_dtype("):
        check = "cannot be read as " + check[len("coerce_dtype("):-1].strip("'")
    check = _BUILTIN.get(check, check)
    if case["schema_context"] == "DataFrameSchema":
        return check
    return f"{column}: {check} (got {_plain(value)!r})"


def _plain(value):
    """numpy scalars print as np.int64(3); people want 3."""
    return value.item() if hasattr(value, "item") else value


def _check_table(table: str, df: pd.DataFrame) -> tuple[pd.DataFrame | None, dict[int, list[str]], list[str]]:
    """Validate one table; return (clean coerced rows, reasons per bad row label, table errors)."""
    schema = SCHEMAS[table]
    reasons: dict[int, list[str]] = defaultdict(list)
    # A row that cannot be coerced makes later checks fail for the whole column, so
    # such rows are set aside first and the rest checked again.
    for _ in range(3):
        rest = df.drop(index=list(reasons))
        try:
            return schema.validate(rest, lazy=True), reasons, []
        except pe.SchemaErrors as err:
            cases = err.failure_cases
            row_cases = cases[cases["index"].notna()]
            table_cases = cases[cases["index"].isna()]
            new_rows = set(row_cases["index"]) - set(reasons)
            for _, case in row_cases.iterrows():
                why = _describe(case)
                if why and why not in reasons[case["index"]]:  # a frame-wide rule fails once per column
                    reasons[case["index"]].append(why)
            if not new_rows:
                errors = sorted({f"{table}: {case['column'] or ''} {case['check']} {case['failure_case']}".strip()
                                 for _, case in table_cases.iterrows()})
                return None, reasons, errors
    return None, reasons, [f"{table}: validation did not settle"]


# (table, column, referenced table, referenced column); tables come after what they reference.
REFERENCES = [
    ("posts", "author_id", "users", "user_id"),
    ("friendships", "user_id", "users", "user_id"),
    ("friendships", "friend_id", "users", "user_id"),
    ("impressions", "user_id", "users", "user_id"),
    ("impressions", "post_id", "posts", "post_id"),
    ("events", "user_id", "users", "user_id"),
    ("events", "post_id", "posts", "post_id"),
]


def _references(table: str, df: pd.DataFrame, settled: dict[str, pd.DataFrame]) -> dict[int, list[str]]:
    """Cross-table rules for one table, against the clean rows of the tables it references.

    Checked in dependency order, so a quarantined post takes its impressions with it.
    """
    bad: dict[int, list[str]] = defaultdict(list)
    for name, column, ref_table, ref_column in REFERENCES:
        if name != table or ref_table not in settled:
            continue
        values = df[column]
        missing = values.notna() & ~values.isin(settled[ref_table][ref_column])
        for i in df.index[missing]:
            bad[i].append(f"{column}: unknown {ref_column} (got {_plain(values[i])!r})")
    if table == "impressions" and "posts" in settled:
        created = df["post_id"].map(settled["posts"].set_index("post_id")["created_ts"])
        for i in df.index[created.notna() & (df["ts"] < created)]:
            bad[i].append("ts: impression before the post was created")
    return bad


def validate_tables(tables: dict[str, pd.DataFrame], required: tuple[str, ...] = TABLES) -> ValidationResult:
    clean, quarantine, reports, errors = {}, {}, {}, []
    for table in TABLES:  # dependency order: references are checked against settled tables
        if table not in tables:
            if table in required:
                errors.append(f"{table}: table is missing")
            continue
        df = tables[table].reset_index(drop=True)
        checked, reasons, table_errors = _check_table(table, df)
        errors += table_errors
        if checked is not None:
            for i, why in _references(table, checked, clean).items():
                reasons[i].extend(why)
            clean[table] = checked.drop(index=[i for i in reasons if i in checked.index])
        bad_index = sorted(reasons)
        q = df.loc[bad_index].copy()
        q[REASON] = ["; ".join(reasons[i]) for i in bad_index]
        quarantine[table] = q
        counts = Counter(r.split(" (got ")[0] for why in reasons.values() for r in why)
        reports[table] = TableReport(table, rows=len(df), bad_rows=len(bad_index), reasons=counts)
    return ValidationResult(clean, quarantine, reports, errors)


def validate_dataset(data_dir: Path, quarantine_dir: Path | None = None) -> ValidationResult:
    """Validate the tables under data_dir; write quarantined rows and a report beside them."""
    data_dir = Path(data_dir)
    result = validate_tables(read_dataset(data_dir))
    out = Path(quarantine_dir) if quarantine_dir else data_dir / QUARANTINE_DIR

    def write(folder: Path) -> None:
        for table, q in result.quarantine.items():
            if len(q):
                # Bad rows may hold values of any type: keep them losslessly as text.
                q.astype(str).to_parquet(folder / f"{table}.parquet", index=False)
        (folder / "report.json").write_text(json.dumps(result.to_json(), indent=2))

    atomic.replace_folder(out, write)  # the new quarantine replaces the old one whole
    return result
