"""The project's own errors: a message that says what is wrong and what to do.

The command line prints a ``NewsfeedError`` as one line and exits 1; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class NewsfeedError(Exception):
    """An error the project explains in its message."""


class DataError(NewsfeedError, ValueError):
    """Data that cannot be used: unreadable files, missing tables, too many bad rows."""


class ServiceUnreachable(NewsfeedError, ConnectionError):
    """A service (PostgreSQL, Redis, Kubeflow, ...) that does not answer; the message names it and its address."""
