"""Where a ranking's gap to the simulator's oracle lies: in which posts it finds appealing
(one order for every reader) or in which reader each post suits.

Over a pool (every sampled user's unseen posts, ``offline.unseen_pool``) a score splits into
a post part, the post's mean score over the pool's users, and a personal part, the rest.
Each part is judged as a feed the way ``offline.evaluate`` judges feeds (0 = random posts,
1 = the oracle's), and the truth is split the same way: the oracle's post part is the best
feed that ranks posts alike for everyone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from newsfeed.feed.offline import Pool, judge


def post_and_personal(post_ids: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(post part, personal part) of ``scores``, one per pool row: the mean score of the row's
    post over the pool's rows, and what is left."""
    post = pd.Series(scores).groupby(np.asarray(post_ids)).transform("mean").to_numpy()
    return post, scores - post


def within_user(users: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``scores`` less each user's mean."""
    return scores - pd.Series(scores).groupby(np.asarray(users)).transform("mean").to_numpy()


def gap(pool: Pool, post_ids: np.ndarray, ranker: np.ndarray, limit: int = 10) -> dict:
    """The ranker's and the oracle's feeds, each whole and as its post part, the oracle's
    post part with the ranker's personal part added, and how the two personal parts agree
    within each reader (correlation, spread).
    ``post_ids``: the post of each pool row; ``ranker``: the ranker's score of each row."""
    truth_post, truth_personal = post_and_personal(post_ids, pool.value)
    ranker_post, ranker_personal = post_and_personal(post_ids, ranker)
    feeds = {
        "oracle": pool.value,
        "oracle's post part (one order for every reader)": truth_post,
        "ranker (whole pool)": ranker,
        "ranker's post part": ranker_post,
        "oracle's post part + ranker's personal part": truth_post + ranker_personal,
    }
    # Compared within each reader: a reader's offset (one who reacts to everything) orders nothing.
    ranker_fit, truth_fit = within_user(pool.users, ranker_personal), within_user(pool.users, truth_personal)
    return {"feed": {name: judge(pool, scores, limit) for name, scores in feeds.items()},
            "personal_correlation": float(np.corrcoef(ranker_fit, truth_fit)[0, 1]),
            "personal_sd": {"ranker": float(ranker_fit.std()), "oracle": float(truth_fit.std())},
            "post_sd": {"ranker": float(ranker_post.std()), "oracle": float(truth_post.std())}}
