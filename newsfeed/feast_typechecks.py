"""Feast without typeguard's run-time instrumentation.

Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and recompiles
each decorated class's whole module when Feast is imported (about 3.5 s of its 5 s import
here, paid again by every pipeline step's fresh process, every command and every replica's
start) and then checks argument types on every call, online reads included. What we pass
Feast is built from validated settings, so those checks guard nothing of ours. Installed
before Feast is first imported (``newsfeed/__init__.py``), the decorator leaves Feast's
classes as they are, as typeguard itself does under ``python -O``; every other module's
``@typechecked`` is typeguard's own.
"""

from __future__ import annotations

import functools

SKIPPED_PACKAGE = "feast"


def _in_skipped_package(target) -> bool:
    module = getattr(target, "__module__", None) or ""
    return module == SKIPPED_PACKAGE or module.startswith(SKIPPED_PACKAGE + ".")


def install() -> None:
    """Replace ``typeguard.typechecked`` with one that passes Feast's targets through (idempotent;
    nothing to do where typeguard is not installed)."""
    try:
        import typeguard
    except ImportError:
        return
    original = typeguard.typechecked
    if getattr(original, "skips_feast", False):
        return

    @functools.wraps(original)
    def typechecked(target=None, **options):
        if target is None:  # used as @typechecked(...): decide per target
            return lambda later: later if _in_skipped_package(later) else original(**options)(later)
        return target if _in_skipped_package(target) else original(target, **options)

    typechecked.skips_feast = True
    typeguard.typechecked = typechecked
