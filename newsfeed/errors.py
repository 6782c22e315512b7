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


def first_line(err: BaseException) -> str:
    """An exception's message as one line: its first non-empty line, or its type's name when it
    has no message (``str(err).splitlines()[0]`` raises IndexError on an empty one)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def option_message(err, renamed: dict[str, str] | None = None) -> str:
    """The first problem of a pydantic ValidationError over command-line settings, as one line
    naming the option (``--field-name``, or ``renamed[field]`` where the option is called
    otherwise) and the value given."""
    first = err.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = first["msg"].removeprefix("Value error, ")
    if not field:
        return message
    option = (renamed or {}).get(field, "--" + field.replace("_", "-"))
    return f"{option}: {message} (got {first.get('input')!r})"
