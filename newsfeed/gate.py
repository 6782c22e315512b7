"""The promotion gate: is a freshly trained challenger fit to register beside the champion?

Both are scored on the same held-out period. The primary metric is the ranker's engagement
NDCG@10: the challenger may fall at most ``tolerance`` below the champion. Guardrails keep
what the primary metric can hide from getting worse: telling hides and blocks apart (their
heads' ROC-AUC), calibrated probabilities (the engagement score adds them up, so a
miscalibrated head skews every ranking) and retrieval (the two-tower's Recall@500). With no
champion yet, there is nothing to compare: the first model passes and becomes champion.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, Field

from newsfeed.registry import RANKER, TWO_TOWER
from newsfeed.schema import REACTIONS

PRIMARY = (RANKER, "ranker.ndcg_at_10")


@dataclass(frozen=True)
class Rule:
    model: str
    metric: str
    higher_is_better: bool
    tolerance: float
    primary: bool = False


class GateConfig(BaseModel):
    tolerance: float = Field(0.005, ge=0, description="how far the challenger's NDCG@10 may fall below the champion's")
    guardrail_tolerance: float = Field(0.02, ge=0, description="how far hide/block ROC-AUC and Recall@500 may fall")
    calibration_tolerance: float = Field(0.01, ge=0, description="how far a head's calibration error may rise")

    def rules(self) -> list[Rule]:
        return [
            Rule(*PRIMARY, True, self.tolerance, primary=True),
            *(Rule(RANKER, f"auc_{head}", True, self.guardrail_tolerance) for head in ("hide", "block")),
            *(Rule(RANKER, f"calibration_error_{head}", False, self.calibration_tolerance) for head in REACTIONS),
            Rule(TWO_TOWER, "two_tower.recall_at_500", True, self.guardrail_tolerance),
        ]


@dataclass(frozen=True)
class Check:
    rule: Rule
    challenger: float
    champion: float

    @property
    def limit(self) -> float:
        return self.champion - self.rule.tolerance if self.rule.higher_is_better else self.champion + self.rule.tolerance

    @property
    def passed(self) -> bool:
        return self.challenger >= self.limit if self.rule.higher_is_better else self.challenger <= self.limit

    def describe(self) -> str:
        r = self.rule
        sign = "-" if r.higher_is_better else "+"
        verdict = ("held" if self.passed else
                   f"FAILED by {abs(self.limit - self.challenger):.4f}")
        return (f"{r.metric} {self.challenger:.4f} vs champion {self.champion:.4f} "
                f"(limit {self.limit:.4f} = champion {sign} {r.tolerance:g}): {verdict}")


@dataclass
class Decision:
    passed: bool
    checks: list[Check]
    first: list[str]  # models with no champion yet (they pass and become champion)
    skipped: list[str]  # metrics one side lacks (undefined on this test period)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def message(self) -> str:
        lines = []
        if self.first:
            lines.append(f"no champion yet for {', '.join(self.first)}: the challenger becomes champion")
        if self.checks:
            head = "PASSED" if self.passed else f"REJECTED ({len(self.failures)} of {len(self.checks)} checks failed)"
            lines.append(f"gate {head}: challenger vs champion on the same held-out period")
            ordered = sorted(self.checks, key=lambda c: (c.passed, not c.rule.primary))  # failures first
            lines += [f"  {'primary  ' if c.rule.primary else 'guardrail'} {c.describe()}" for c in ordered]
        if self.skipped:
            lines.append(f"  not compared (undefined on one side): {', '.join(self.skipped)}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "first": self.first, "skipped": self.skipped, "message": self.message(),
                "checks": [{"model": c.rule.model, "metric": c.rule.metric, "challenger": c.challenger,
                            "champion": c.champion, "limit": c.limit, "passed": c.passed,
                            "primary": c.rule.primary} for c in self.checks]}


def decide(challenger: dict[str, dict[str, float]], champion: dict[str, dict[str, float]],
           config: GateConfig = GateConfig()) -> Decision:
    """``challenger`` and ``champion``: model name -> metrics on the same held-out period
    (a model absent from ``champion`` has none yet)."""
    missing = [name for name in (TWO_TOWER, RANKER) if name not in challenger]
    if missing:
        raise ValueError(f"the gate needs the challenger's metrics for {', '.join(missing)}")
    first = [name for name in (TWO_TOWER, RANKER) if name not in champion]
    checks, skipped = [], []
    for rule in config.rules():
        if rule.model in first:
            continue
        ours, theirs = challenger[rule.model].get(rule.metric), champion[rule.model].get(rule.metric)
        if ours is None or theirs is None:
            if rule.primary:
                raise ValueError(f"the gate's primary metric {rule.metric} is missing "
                                 f"({'challenger' if ours is None else 'champion'})")
            skipped.append(rule.metric)
            continue
        checks.append(Check(rule, float(ours), float(theirs)))
    return Decision(all(c.passed for c in checks), checks, first, skipped)
