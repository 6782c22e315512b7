"""Off-policy evaluation: a target policy's click rate estimated from another policy's logs.

Each logged row is one decision: an action (the post or item shown), the behaviour policy's
probability of taking it (its propensity), and the reward (click). Three estimators:

- IPS: mean of w * r, w = target(a) / behaviour(a). Unbiased when every action the target
  takes had a positive behaviour propensity; its variance grows with the weights.
- SNIPS: sum(w * r) / sum(w). A little biased, far steadier when weights are large.
- DR: mean of [E_target q(x, .) + w * (r - q(x, a))], q a reward model fitted on other
  folds of the same log (cross-fitting, so no row's correction uses a model that saw it).

Intervals: the project's Poisson bootstrap over rows (``metrics.ratio_interval``; each row
its own request here; the same seed gives the same intervals). A log of 10,000 rows holds about 50 clicks: intervals are
as wide as that allows, and the estimates should be read with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from newsfeed.errors import NewsfeedError
from newsfeed.metrics import ratio_interval

LEVEL = 0.95
RESAMPLES = 1_000
FOLDS = 2
REWARD_PRIOR = 20.0
"""Reward model: a cell's click rate shrunk towards the log's by this many pseudo-impressions."""


class OPEError(NewsfeedError, ValueError):
    """Logs that cannot be evaluated: no propensities, unknown campaign or policy."""


@dataclass(frozen=True)
class LoggedBandit:
    """The behaviour policy's log: per row an action (0..n_actions-1), a slot (position), the
    reward and the behaviour's propensity of that action in that slot."""

    actions: np.ndarray
    positions: np.ndarray
    rewards: np.ndarray
    propensities: np.ndarray
    n_actions: int

    @classmethod
    def from_impressions(cls, impressions: pd.DataFrame, actions: np.ndarray, reward: str = "click") -> "LoggedBandit":
        """``impressions`` (canonical, with ``propensity``); ``actions``: the action space, as post ids."""
        if "propensity" not in impressions.columns or impressions["propensity"].isna().all():
            raise OPEError("the impressions carry no propensity (the logging policy's probability of each shown "
                           "post); off-policy evaluation needs it")
        index = pd.Index(np.asarray(actions))
        rows = index.get_indexer(impressions["post_id"].to_numpy())
        if (rows < 0).any():
            raise OPEError(f"{int((rows < 0).sum())} logged actions are outside the action space")
        return cls(rows.astype(np.int64), impressions["position"].to_numpy(np.int64),
                   impressions[reward].to_numpy(np.float64), impressions["propensity"].to_numpy(np.float64),
                   len(index))

    def __len__(self) -> int:
        return len(self.actions)


class UniformPolicy:
    """Every action equally likely in every slot: the target the Open Bandit logs can check."""

    name = "uniform"

    def logged_probability(self, log: LoggedBandit) -> np.ndarray:
        """Per row: the target's probability of the action the behaviour took."""
        return np.full(len(log), 1.0 / log.n_actions)

    def expected_reward(self, log: LoggedBandit, rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Per row of ``rows``: the reward model's value of the target's choice, E_target q(x, .)."""
        return q.mean(axis=1)[log.positions[rows]]


TARGETS = {"uniform": UniformPolicy}


def reward_model(log: LoggedBandit, rows: np.ndarray) -> np.ndarray:
    """(positions, n_actions) click rates from ``rows`` of the log, shrunk towards their mean."""
    positions = int(log.positions.max()) + 1
    cell = log.positions[rows] * log.n_actions + log.actions[rows]
    shows = np.bincount(cell, minlength=positions * log.n_actions)
    clicks = np.bincount(cell, weights=log.rewards[rows], minlength=positions * log.n_actions)
    overall = log.rewards[rows].mean() if len(rows) else 0.0
    return ((clicks + REWARD_PRIOR * overall) / (shows + REWARD_PRIOR)).reshape(positions, log.n_actions)


def _terms(log: LoggedBandit, target, seed: int) -> dict[str, np.ndarray]:
    """Per-row terms each estimator averages (SNIPS: weighted rewards and weights)."""
    weights = target.logged_probability(log) / log.propensities
    fold = np.random.default_rng(seed).integers(0, FOLDS, len(log))
    direct = np.empty(len(log))
    logged_q = np.empty(len(log))
    for k in range(FOLDS):
        mine = np.flatnonzero(fold == k)
        q = reward_model(log, np.flatnonzero(fold != k))  # (positions, n_actions), fitted without these rows
        direct[mine] = target.expected_reward(log, mine, q)
        logged_q[mine] = q[log.positions[mine], log.actions[mine]]
    return {"weighted": weights * log.rewards, "weights": weights,
            "dr": direct + weights * (log.rewards - logged_q)}


def _interval(numerator: np.ndarray, denominator: np.ndarray, seed: int, resamples: int) -> dict:
    found = ratio_interval(numerator, denominator, len(numerator), resamples, LEVEL, seed)
    return {"estimate": found.value, "ci": [found.low, found.high]}


def estimate(log: LoggedBandit, target, seed: int = 0, resamples: int = RESAMPLES) -> dict[str, dict]:
    """{"ips" | "snips" | "dr": {"estimate", "ci"}} of the target's mean reward (the same
    bootstrap weights for all three: the seed fixes them)."""
    if len(log) == 0:
        raise OPEError("no logged rows to evaluate")
    terms = _terms(log, target, seed)
    rows = np.ones(len(log))
    return {"ips": _interval(terms["weighted"], rows, seed, resamples),
            "snips": _interval(terms["weighted"], terms["weights"], seed, resamples),
            "dr": _interval(terms["dr"], rows, seed, resamples)}


def on_policy(rewards: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """A policy's own mean reward from its own log, with the same bootstrap interval."""
    rewards = np.asarray(rewards, np.float64)
    return _interval(rewards, np.ones(len(rewards)), seed, resamples)


def covers(interval: dict, value: float) -> bool:
    return interval["ci"][0] <= value <= interval["ci"][1]


# -- the Open Bandit Dataset layout: <root>/<policy>/<campaign>/<campaign>.csv ---------------

OBD_TARGETS = {"uniform": "random"}
"""Target policies whose own logs the Open Bandit Dataset holds (its on-policy truth)."""


def open_bandit_campaign(root: Path, campaign: str) -> dict[str, pd.DataFrame]:
    """Each behaviour policy's canonical impressions for one campaign: {"random": ..., "bts": ...}."""
    from newsfeed.data.adapters import open_bandit

    root = Path(root)
    if not root.is_dir():
        raise OPEError(f"{root}: not a folder (expected the Open Bandit root with random/ and bts/)")
    policies = {p.name: p / campaign for p in sorted(root.iterdir()) if (p / campaign / f"{campaign}.csv").exists()}
    if not policies:
        found = sorted({c.name for p in root.iterdir() if p.is_dir() for c in p.iterdir() if c.is_dir()})
        raise OPEError(f"{root}: no {campaign!r} campaign logs (found campaigns: {', '.join(found) or 'none'})")
    return {policy: open_bandit.load(folder)["impressions"] for policy, folder in policies.items()}


def evaluate_open_bandit(root: Path, campaign: str = "men", behaviour: str = "bts", target: str = "uniform",
                         seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """Estimate ``target`` from ``behaviour``'s log and set it beside the target's own logged click rate."""
    logs = open_bandit_campaign(root, campaign)
    if behaviour not in logs:
        raise OPEError(f"no {behaviour!r} policy logs for campaign {campaign!r} (found: {', '.join(logs)})")
    actions = np.unique(np.concatenate([frame["post_id"].to_numpy() for frame in logs.values()]))
    log = LoggedBandit.from_impressions(logs[behaviour], actions)
    result = {"source": str(root), "campaign": campaign, "behaviour": behaviour, "target": target,
              "rows": len(log), "clicks": int(log.rewards.sum()), "actions": log.n_actions,
              "estimators": estimate(log, TARGETS[target](), seed, resamples)}
    truth = OBD_TARGETS.get(target)
    if truth in logs:
        own = logs[truth]["click"].to_numpy()
        result["on_policy"] = {**on_policy(own, seed, resamples), "rows": len(own), "clicks": int(own.sum())}
        result["coverage"] = {name: covers(est, result["on_policy"]["estimate"])
                              for name, est in result["estimators"].items()}
    return result


def evaluate_impressions(impressions: pd.DataFrame, target: str = "uniform", behaviour: str | None = None,
                         seed: int = 0, resamples: int = RESAMPLES) -> dict:
    """OPE over a data dir's canonical impressions (rows with a propensity); ``behaviour``
    limits them to one variant. Where another variant's logs are the target's own (a
    variant named like the target, or ``random`` for ``uniform``), its click rate is the truth."""
    frame = impressions if behaviour is None else impressions[impressions["variant"] == behaviour]
    if frame.empty:
        raise OPEError(f"no impressions of variant {behaviour!r} (variants: "
                       f"{', '.join(sorted(impressions['variant'].unique()))})")
    frame = frame[frame["propensity"].notna()] if "propensity" in frame.columns else frame
    log = LoggedBandit.from_impressions(frame, np.unique(impressions["post_id"].to_numpy()))
    result = {"behaviour": behaviour or "all", "target": target, "rows": len(log), "clicks": int(log.rewards.sum()),
              "actions": log.n_actions, "estimators": estimate(log, TARGETS[target](), seed, resamples)}
    own = impressions[impressions["variant"].isin({target, OBD_TARGETS.get(target)}) &
                      (impressions["variant"] != behaviour)]
    if behaviour is not None and not own.empty:
        clicks = own["click"].to_numpy()
        result["on_policy"] = {**on_policy(clicks, seed, resamples), "rows": len(clicks), "clicks": int(clicks.sum())}
        result["coverage"] = {name: covers(est, result["on_policy"]["estimate"])
                              for name, est in result["estimators"].items()}
    return result
