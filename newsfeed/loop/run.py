"""The closed loop: simulated users read and react through the served platform, the world
drifts, the drift check fires, a challenger is trained on what was served, goes out as a
canary, and the experiment decides.

Time moves in steps of the simulated clock (the service's, set through ``PUT /v1/clock``):
at each step the loop sets the time, publishes what appeared (users, friendships, posts),
opens the app for every user whose session falls in the step (first page, further pages by
cursor), draws each shown post's reactions from the world's true model and posts them
back. While a job runs (a drift check, a retrain, a verdict) the clock stands still, as if
the job took no simulated time. The loop never reaches into a replica: the service is
reached over HTTP, the jobs are the platform's own commands (``jobs.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from newsfeed.data.simulator import DAY_NS, HOUR_NS
from newsfeed.feed.arms import Arm, Experiment
from newsfeed.feed.experiments import control_arm
from newsfeed.loop.client import FeedClient, ServiceError
from newsfeed.loop.config import BASELINES, LoopConfig
from newsfeed.loop.jobs import Jobs, JobFailed
from newsfeed.loop.summary import gate_line
from newsfeed.loop.world import LiveWorld, items
from newsfeed.schema import REACTIONS
from newsfeed.scoring import load_weights

CHALLENGER = "challenger"


@dataclass
class Ledger:
    """Every shown post with what it drew: the loop's own account, by arm and day."""

    rows: list[dict] = field(default_factory=list)
    retrains: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    days: list[dict] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


class Loop:
    def __init__(self, config: LoopConfig, client: FeedClient, world: LiveWorld, jobs: Jobs | None,
                 progress: Callable[[str], None] = print):
        self.config, self.client, self.world, self.jobs, self.progress = config, client, world, jobs, progress
        self.weights = load_weights(None)
        self.weight_vector = np.array([self.weights.get(r, 0.0) for r in REACTIONS])
        self.ledger = Ledger()
        self.canary_since: int | None = None  # the experiment version the running canary started at
        self.canary_day: float | None = None

    # -- the experiment --------------------------------------------------------------------------

    def set_arms(self) -> dict:
        """The configured arms side by side (equal shares), any challenger dropped."""
        current = Experiment.model_validate(self.client.experiment())
        names = self.config.arms or [a.name for a in current.arms if a.share > 0 and a.name != CHALLENGER]
        if self.config.interleave:
            names = [*names, self.config.interleaved_arm]
        share = 100.0 / len(names)
        arms = []
        for name in names:
            known = current.arm(name)
            base = known or Arm(name=name, share=0, policy=name if name in BASELINES else "model")
            if name == self.config.interleaved_arm:
                base = Arm(name=name, share=0, interleave=self.config.interleave)
            arms.append(base.model_copy(update={"share": share}))
        arms[0] = arms[0].model_copy(update={"share": 100.0 - share * (len(arms) - 1)})
        shadow = current.shadow if current.shadow in names else None
        experiment = Experiment.model_validate({**current.model_dump(), "arms": [a.model_dump() for a in arms],
                                                "shadow": shadow})
        return self.client.set_experiment(experiment.model_dump(mode="json"))

    def start_canary(self, day: float) -> dict:
        current = Experiment.model_validate(self.client.experiment())
        control = current.arm(control_arm(current))
        share = control.share * self.config.canary_share / 100
        challenger = control.model_copy(update={"name": CHALLENGER, "share": share, "two_tower": "challenger",
                                                "ranker": "challenger"})
        arms = [a.model_copy(update={"share": a.share - share}) if a.name == control.name else a
                for a in current.arms if a.name != CHALLENGER] + [challenger]
        saved = self.client.set_experiment(Experiment.model_validate(
            {**current.model_dump(), "arms": [a.model_dump() for a in arms]}).model_dump(mode="json"))
        self.canary_since, self.canary_day = saved["version"], day
        return saved

    # -- one step of simulated time -----------------------------------------------------------------

    def step(self, t0: int, t1: int, day: int) -> dict:
        """Publish what appeared in [t0, t1), serve the sessions that fall in it at ``t1``."""
        self.client.set_clock(t1 / 1e9)
        published = {}
        for table, rows in self.world.published.due(t0, t1).items():
            if rows:
                answer = self.client.publish(table, items(rows))
                published[table] = answer["accepted"]
        users, _ = self.world.sessions(t0, t1)
        cursors: dict[int, str | None] = {i: None for i in range(len(users))}
        events, requests = [], 0
        with ThreadPoolExecutor(self.config.clients) as pool:
            for page in range(self.config.max_pages):
                open_ = [i for i, c in cursors.items() if page == 0 or c is not None]
                if not open_:
                    break
                answers = list(pool.map(lambda i: self.client.feed(int(users[i]), self.config.feed_size, cursors[i]),
                                        open_))
                requests += len(open_)
                for i, answer in zip(open_, answers):
                    events += self._react(answer, t1, day, page)
                    go_on = answer["next_cursor"] and self.world.rng.random() < self.config.next_page
                    cursors[i] = answer["next_cursor"] if go_on else None
        for start in range(0, len(events), 10_000):
            answer = self.client.events(events[start:start + 10_000])
            if answer["rejected"]:
                raise ServiceError(f"the service rejected {len(answer['rejected'])} events: {answer['rejected'][:2]}")
        return {"requests": requests, "events": len(events), **published}

    def _react(self, answer: dict, t_ns: int, day: int, page: int) -> list[dict]:
        shown = answer["items"]
        if not shown:
            return []
        user = int(answer["user_id"])
        posts = np.array([it["post_id"] for it in shown], np.int64)
        first = page * self.config.feed_size
        drawn = self.world.react(user, posts, t_ns, first)
        labels = np.column_stack([drawn["labels"][r] for r in REACTIONS])
        realised = labels @ self.weight_vector
        expected = sum(self.weights[r] * drawn["probabilities"][f"p_{r}"] for r in self.weights)
        events = []
        for j, post in enumerate(posts.tolist()):
            self.ledger.rows.append({"day": day, "user_id": user, "arm": answer["arm"], "post_id": post,
                                     "position": first + j, "engagement": float(realised[j]),
                                     "expected": float(expected[j]), "click": int(labels[j, 0]),
                                     "team": shown[j].get("team")})
            for k, r in enumerate(REACTIONS):
                if labels[j, k]:
                    events.append({"user_id": user, "post_id": post, "event_type": r})
            events.append({"user_id": user, "post_id": post, "event_type": "dwell",
                           "value": float(drawn["dwell"][j])})
        return events

    # -- the jobs --------------------------------------------------------------------------------

    def check_drift(self, day: float) -> None:
        self.world.save(self.jobs.data_dir)  # a retrain's evaluation scores against the world as it is now
        started = time.time()
        try:
            result = self.jobs.drift(self.config.reference_days)
        except JobFailed as err:  # recorded, and the loop goes on: the next check may run
            self.ledger.checks.append({"day": day, "error": str(err), "retrain": False, "clicked_topic_p": None})
            self.progress(f"  drift check on day {day:g} failed: {err}")
            return
        target = result.get("target", {}).get("clicked_post_topic") or {}
        rates = result.get("target", {})
        check = {"day": day, "drifted": result["drifted"], "retrain": result["retrain"],
                 "reasons": result["reasons"], "suppressed": result.get("suppressed"),
                 "clicked_topic_p": target.get("score"), "drifted_share": result.get("drifted_share"),
                 "engagement_z": result["engagement"]["z"],
                 **{f"{r}_change": (rates.get(r) or {}).get("relative_change") for r in ("click", "like")},
                 "report": result.get("report")}
        self.ledger.checks.append(check)
        action = result.get("action") or {}
        if not result["retrain"] or action.get("action") != "local":
            return
        retrain = {"day": day, "reasons": result["reasons"], "exit_code": action.get("exit_code"),
                   "log": action.get("log"), "gate": self.jobs.gate_since(started)}
        self.ledger.retrains.append(retrain)
        if action.get("exit_code") == 0:
            saved = self.start_canary(day)
            share = next(a["share"] for a in saved["arms"] if a["name"] == CHALLENGER)
            retrain["canary"] = {"arm": CHALLENGER, "share": share, "experiment_version": saved["version"]}
        gate = f"; gate: {gate_line(retrain['gate'])}" if retrain["gate"] else ""
        self.progress(f"  retrain on day {day:g}: {'; '.join(result['reasons'])} -> "
                      + {0: "registered; canary out", 3: "stopped by the gate"}.get(action.get("exit_code"),
                                                                                   f"failed ({retrain['log']})")
                      + gate)

    def judge(self, day: float) -> None:
        try:
            result = self.jobs.decide(self.canary_since)
        except JobFailed as err:  # recorded; the canary runs on to the next verdict
            self.ledger.decisions.append({"day": day, "error": str(err), "verdicts": [], "done": []})
            self.progress(f"  canary verdict on day {day:g} failed: {err}")
            return
        decision = {"day": day, "hours": result["hours"], "verdicts": result["verdicts"], "done": result["done"]}
        self.ledger.decisions.append(decision)
        for verdict in result["verdicts"]:
            self.progress(f"  canary on day {day:g}: {verdict['arm']} {verdict['action']} ({verdict['why']})")
        if result["done"]:
            self.canary_since = self.canary_day = None
            self.set_arms()  # the side-by-side arms again (a promotion gave the control all traffic)

    # -- the whole run -------------------------------------------------------------------------

    def run(self, start_ns: int) -> Ledger:
        c = self.config
        self.set_arms()
        step = int(c.step_hours * HOUR_NS)
        steps = int(round(c.days * DAY_NS / step))
        drift_at = start_ns + int(c.drift_day * DAY_NS) if c.drift_day is not None else None
        next_check = start_ns + int(c.drift_every_hours * HOUR_NS)
        day_totals: dict = {}
        for k in range(steps):
            t0, t1 = start_ns + k * step, start_ns + (k + 1) * step
            day = int((t0 - start_ns) // DAY_NS)
            if drift_at is not None and t0 <= drift_at < t1:
                topics = self.world.drift(drift_at, c.drift_strength)
                self.progress(f"  interests drift on day {c.drift_day:g}: {', '.join(topics)} start trending")
            done = self.step(t0, t1, day)
            for key, value in done.items():
                day_totals[key] = day_totals.get(key, 0) + value
            if c.retrain and self.jobs is not None and t1 >= next_check:
                next_check += int(c.drift_every_hours * HOUR_NS)
                if self.canary_since is not None and (t1 - start_ns) / DAY_NS - self.canary_day >= \
                        c.decide_every_hours / 24:
                    self.judge((t1 - start_ns) / DAY_NS)
                if self.canary_since is None and (t1 - start_ns) / DAY_NS >= c.reference_days + 1:
                    self.check_drift((t1 - start_ns) / DAY_NS)
            if (k + 1) * step % DAY_NS == 0 or k == steps - 1:
                self._end_of_day(day, day_totals)
                day_totals = {}
        return self.ledger

    def _end_of_day(self, day: int, totals: dict) -> None:
        frame = self.ledger.frame()
        today = frame[frame["day"] == day] if len(frame) else frame
        per_arm = today.groupby("arm")["engagement"].mean().to_dict() if len(today) else {}
        check = self.ledger.checks[-1] if self.ledger.checks and self.ledger.checks[-1]["day"] > day else None
        row = {"day": day, **totals, "impressions": len(today), "engagement_per_impression": per_arm,
               "drift_p": None if check is None else check["clicked_topic_p"]}
        self.ledger.days.append(row)
        arms = ", ".join(f"{a} {v:.3f}" for a, v in sorted(per_arm.items()))
        drift = "" if check is None else (f"; drift check: clicked-topic p={check['clicked_topic_p']:.2g}"
                                          if check["clicked_topic_p"] is not None else "; drift check ran")
        self.progress(f"day {day + 1}: {totals.get('requests', 0):,} requests, {len(today):,} impressions, "
                      f"{totals.get('events', 0):,} events, {totals.get('posts', 0):,} posts published; "
                      f"engagement/impression {arms}{drift}")
