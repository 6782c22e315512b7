"""When a canary ends: the rule that promotes a challenger arm, rolls it back, or lets it run
on, read from the experiment report of the traffic it served. Thresholds are data
(``CanaryPolicy``); the command line (`newsfeed experiment decide`) and the closed loop call it."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

PROMOTE, ROLLBACK, CONTINUE = "promote", "rollback", "continue"


class CanaryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_users: int = Field(50, ge=1, description="users each arm must have served before any verdict")
    max_hours: float = Field(72.0, gt=0, description="service hours after which a challenger not shown better is "
                                                      "rolled back (the champion stays)")
    measure: str = Field("engagement_per_impression", description="the difference with the control that decides")


@dataclass(frozen=True)
class Verdict:
    arm: str
    action: str  # PROMOTE | ROLLBACK | CONTINUE
    why: str

    def to_dict(self) -> dict:
        return {"arm": self.arm, "action": self.action, "why": self.why}


def decide(report: dict, challengers: list[str], policy: CanaryPolicy, hours: float) -> list[Verdict]:
    """A verdict per challenger arm from ``report`` (``monitoring.experiment.analyse``) of
    ``hours`` of traffic: a guardrail breached or a difference confidently below zero rolls
    back; confidently above zero promotes; otherwise it runs on until ``max_hours``."""
    out = []
    for name in challengers:
        arm = report["arms"].get(name)
        if arm is None:
            out.append(Verdict(name, CONTINUE, "no traffic yet"))
            continue
        diff = arm.get(f"diff_{policy.measure}") or {"estimate": float("nan"), "ci": [float("nan")] * 2}
        (low, high), estimate = diff["ci"], diff["estimate"]
        shown = f"{policy.measure} {estimate:+.3f} [{low:+.3f}, {high:+.3f}] against {report['control']}"
        users = min(arm["users"], report["arms"][report["control"]]["users"])
        if arm.get("guardrails"):
            out.append(Verdict(name, ROLLBACK, "guardrail: " + "; ".join(arm["guardrails"])))
        elif users < policy.min_users:
            out.append(Verdict(name, CONTINUE, f"{users} users in the smaller arm (needs {policy.min_users}); {shown}"))
        elif low > 0:
            out.append(Verdict(name, PROMOTE, f"better: {shown}"))
        elif high < 0:
            out.append(Verdict(name, ROLLBACK, f"worse: {shown}"))
        elif hours >= policy.max_hours:
            out.append(Verdict(name, ROLLBACK, f"not shown better in {hours:.0f} h: {shown}"))
        else:
            out.append(Verdict(name, CONTINUE, f"undecided after {hours:.0f} h: {shown}"))
    return out
