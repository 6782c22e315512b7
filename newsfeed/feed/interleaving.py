"""Team-draft interleaving (Radlinski, Kurup and Joachims, 2008): two arms' rankings merged
into one feed, each post remembering the arm (team) that picked it, so the reactions it draws
credit that arm. The user compares both arms on one page: far fewer users tell a better
ranker apart than an A/B split needs (measured by `newsfeed simulate --interleave`)."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from newsfeed.feed.context import Candidates, FeedContext


def team_draft(a: np.ndarray, b: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(team per slot: 0 for ``a``, 1 for ``b``; index of the slot's post in its team's ranking)
    for up to ``k`` distinct posts. In each round the team with fewer picks chooses, a coin
    decides a tie, and a team picks its best post not on the page yet."""
    rankings, used, taken = (list(a), list(b)), set(), [0, 0]
    cursor, teams, picks = [0, 0], [], []
    while len(teams) < k:
        left = [t for t in (0, 1) if any(p not in used for p in rankings[t][cursor[t]:])]
        if not left:
            break
        if len(left) == 1:
            team = left[0]
        elif taken[0] != taken[1]:
            team = int(taken[1] < taken[0])
        else:
            team = int(rng.random() < 0.5)
        while rankings[team][cursor[team]] in used:
            cursor[team] += 1
        used.add(rankings[team][cursor[team]])
        teams.append(team), picks.append(cursor[team])
        taken[team] += 1
    return np.array(teams, np.int8), np.array(picks, np.int64)


def request_rng(request_id: str) -> np.random.Generator:
    """The coin of one request: the same request interleaves the same way everywhere."""
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big"))


def interleave(ctx: FeedContext, a: FeedContext, b: FeedContext) -> FeedContext:
    """``ctx`` (the interleaved arm's) with the team-draft page of ``a``'s and ``b``'s ranked
    candidates, each post's team in ``ctx.teams``; their timings and degradations added up."""
    teams, picks = team_draft(a.candidates.post_ids, b.candidates.post_ids, ctx.request.limit,
                              request_rng(ctx.request.request_id))
    parts = [(a if t == 0 else b).candidates.take(np.array([i])) for t, i in zip(teams, picks)]
    ctx.candidates = Candidates.joined(parts) if parts else Candidates.empty()
    ctx.teams = [(a.arm, b.arm)[t] for t in teams]
    ctx.model_versions = {f"{side.arm}.{name}": v for side in (a, b) for name, v in side.model_versions.items()}
    for side in (a, b):
        for stage, ms in side.timings_ms.items():
            ctx.timings_ms[f"{side.arm}.{stage}"] = ms
        ctx.degraded.extend(d for d in side.degraded if d not in ctx.degraded)
    return ctx


def team_credit(frame: pd.DataFrame, a: str, b: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user of an interleaved arm's impressions (``user_id``, ``team``, ``engagement``): the
    engagement their reactions gave the posts team ``a`` picked, team ``b`` picked, and how many
    posts they were shown."""
    credit = frame.pivot_table(index="user_id", columns="team", values="engagement", aggfunc="sum",
                               fill_value=0.0).reindex(columns=[a, b], fill_value=0.0)
    shown = frame.groupby("user_id").size().reindex(credit.index)
    return credit[a].to_numpy(np.float64), credit[b].to_numpy(np.float64), shown.to_numpy(np.float64)
