"""One way to reach Ray for every job that uses it (training, feature joins).

With an address (``ray://head:10001``, or ``auto`` inside the cluster) the work runs on
that cluster; without one a throwaway local Ray is started for the job and shut down
after it (laptop, CI). Inside an already connected driver the connection is reused.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def ray_session(address: str | None = None, cpus: int | None = None) -> Iterator[None]:
    """Connected to Ray for the block; ``cpus`` sizes a local instance (at least this machine's)."""
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway local instance needs no token
        local_cpus = None if address else max(os.cpu_count() or 1, cpus or 1)
        ray.init(address=address or None, num_cpus=local_cpus, include_dashboard=False, log_to_driver=True,
                 configure_logging=False)
    try:
        yield
    finally:
        if started_here:
            ray.shutdown()
