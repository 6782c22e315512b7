"""The retrain trigger: a policy (thresholds in config) reads a drift summary, decides, acts
(runs the pipeline here, or submits it to the Kubeflow host), holds a cooldown so the same
drift does not fire twice, and appends an audit line saying what fired and why."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from newsfeed import atomic
from newsfeed.errors import first_line, NewsfeedError


class TriggerError(NewsfeedError, ValueError):
    """A policy file that cannot be read, or an action that cannot start."""


class RetrainPolicy(BaseModel):
    """When drift means retraining. Every threshold is a number an on-call engineer can read."""

    model_config = ConfigDict(extra="forbid")
    max_drifted_share: float = Field(0.6, ge=0, le=1, description="retrain above this share of drifted features")
    watched_features: list[str] = Field(
        default_factory=lambda: ["clicked_post_topic"],
        description="features or targets that retrain on their own when they drift (default: the topic mix of "
                    "what users click, where moving interests show first)")
    max_score_drift: float = Field(0.5, ge=0, description="retrain above this drift score of the engagement score")
    max_rate_drop: float = Field(0.3, ge=0, le=1, description="retrain when a realised rate falls by more (relative)")
    watched_rates: list[str] = Field(default_factory=lambda: ["click", "like"],
                                     description="the realised rates whose drop counts")
    max_engagement_drop_z: float | None = Field(
        None, gt=0, description="retrain when realised engagement per impression falls by more than this many "
                                "standard errors; off by default: it compares like with like only when both windows "
                                "were served by the same system (drift check --against previous)")
    cooldown_hours: float = Field(24.0, ge=0, description="after firing, no second retrain for this long")
    action: Literal["local", "kubeflow", "none"] = Field("local", description="run the pipeline here, submit it "
                                                                              "to Kubeflow, or only record")
    kubeflow_host: str | None = Field(None, description="the Kubeflow Pipelines endpoint for action kubeflow")
    pipeline_options: dict[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z_]{0,40}$")], int | float | str] = Field(
        default_factory=dict, description="options of the retrain's `newsfeed pipeline run|submit` (e.g. epochs: 4)")

    @classmethod
    def load(cls, path: Path | None) -> "RetrainPolicy":
        if path is None:
            return cls()
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()) or {})
        except OSError as err:
            raise TriggerError(f"{path}: {err.strerror or err}") from None
        except yaml.YAMLError as err:
            raise TriggerError(f"{path}: not YAML: {first_line(err)}") from None
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(part) for part in first["loc"])
            raise TriggerError(f"{path}: {field}: {first['msg']} (got {first.get('input')!r})") from None

    def check(self) -> None:
        if self.action == "kubeflow" and not self.kubeflow_host:
            raise TriggerError("retrain action kubeflow needs kubeflow_host in the policy")


@dataclass
class Decision:
    retrain: bool
    reasons: list[str] = field(default_factory=list)  # what crossed a threshold
    suppressed: str | None = None  # why it did not fire although it would have

    def to_dict(self) -> dict:
        return {"retrain": self.retrain, "reasons": self.reasons, "suppressed": self.suppressed}


def reasons(summary: dict, policy: RetrainPolicy) -> list[str]:
    """Each threshold the drift summary crosses, as a sentence."""
    out = []
    share = summary["drifted_share"]
    if share > policy.max_drifted_share:
        out.append(f"{share:.0%} of features drifted (limit {policy.max_drifted_share:.0%})")
    for name in policy.watched_features:
        feature = summary["features"].get(name) or summary["target"].get(name)
        if feature and feature["drifted"]:
            out.append(f"watched {name} drifted ({feature['method']} {feature['score']:.3g}, "
                       f"threshold {feature['threshold']:g})")
    score = summary["prediction"]["engagement_score"]["score"]
    if score > policy.max_score_drift:
        out.append(f"engagement score drift {score:.3f} (limit {policy.max_score_drift:g})")
    for rate in policy.watched_rates:
        change = summary["target"][rate].get("relative_change")
        if change is not None and change < -policy.max_rate_drop:
            out.append(f"{rate} rate fell {-change:.0%} (limit {policy.max_rate_drop:.0%})")
    engagement = summary["engagement"] if policy.max_engagement_drop_z is not None else None
    if engagement is not None and engagement["z"] < -policy.max_engagement_drop_z:
        out.append(f"engagement per impression fell {engagement['reference']:.3f} -> {engagement['current']:.3f} "
                   f"(z {engagement['z']:.1f}, limit -{policy.max_engagement_drop_z:g})")
    return out


class Trigger:
    """State beside the home's reports: ``<home>/monitoring/trigger.json`` (last firing) and
    ``audit.log`` (one JSON line per check)."""

    def __init__(self, home: Path, policy: RetrainPolicy):
        self.home = Path(home)
        self.policy = policy
        self.folder = self.home / "monitoring"
        self.state_path = self.folder / "trigger.json"
        self.audit_path = self.folder / "audit.log"

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def decide(self, summary: dict, now: float | None = None) -> Decision:
        now = time.time() if now is None else now
        found = reasons(summary, self.policy)
        if not found:
            return Decision(False)
        last = self.state().get("fired_at")
        if last is not None and now - last < self.policy.cooldown_hours * 3600:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last))
            return Decision(False, found, f"cooldown: fired at {when}, quiet for {self.policy.cooldown_hours:g} h")
        return Decision(True, found)

    def act(self, decision: Decision, data_dir: Path, report: str | None = None, now: float | None = None,
            dry_run: bool = False, wait: bool = False) -> dict:
        """Carry out ``decision`` (start the retrain where it fires) and append the audit line.
        ``dry_run``: say what would start, start nothing, hold no cooldown. ``wait``: a local
        retrain runs to its end here, its exit code in the line (the closed loop waits for it)."""
        now = time.time() if now is None else now
        action = {"action": "none"}
        if decision.retrain and dry_run:
            action = {"action": f"dry run ({self.policy.action})", "command": self._command(data_dir)}
        elif decision.retrain:
            action = self._start(data_dir, now, wait)
            atomic.write_text(self.state_path, json.dumps({"fired_at": now, "reasons": decision.reasons, **action}))
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), **decision.to_dict(), **action,
                "report": report}
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.audit_path, "a") as f:
            f.write(json.dumps(line) + "\n")
        return line

    def _command(self, data_dir: Path) -> list[str]:
        exe = shutil.which("newsfeed") or str(Path(sys.executable).with_name("newsfeed"))
        options = [part for key, value in self.policy.pipeline_options.items()
                   for part in (f"--{key.replace('_', '-')}", str(value))]
        if self.policy.action == "kubeflow":
            return [exe, "pipeline", "submit", "--host", str(self.policy.kubeflow_host), "--data-dir", str(data_dir),
                    *options]
        return [exe, "pipeline", "run", "--home", str(self.home), "--data-dir", str(data_dir), *options]

    def _start(self, data_dir: Path, now: float, wait: bool = False) -> dict:
        if self.policy.action == "none":
            return {"action": "none (policy: record only)"}
        command = self._command(data_dir)
        if self.policy.action == "kubeflow":  # quick: the run itself happens on the cluster
            try:
                done = subprocess.run(command, capture_output=True, text=True, timeout=120)
            except (subprocess.TimeoutExpired, OSError) as err:  # audited as a failed submission, not a crash
                return {"action": "kubeflow", "command": command, "exit_code": None, "output": str(err)}
            output = (done.stdout + done.stderr).strip().splitlines()
            return {"action": "kubeflow", "command": command, "exit_code": done.returncode,
                    "output": output[-1] if output else ""}
        # Local: the pipeline takes minutes; it runs on in the background, its output in a log.
        log = self.folder / f"retrain-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, env={**os.environ, "NEWSFEED_HOME": str(self.home)})
            exit_code = {"exit_code": process.wait()} if wait else {}
        return {"action": "local", "command": command, "pid": process.pid, "log": str(log), **exit_code}
