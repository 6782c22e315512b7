"""Pages as a real browser shows them: headless Chromium (Debian's package; .ci/run installs it)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (apt-get install chromium; "
                                                             ".ci/run does)")


def render(page: Path) -> str:
    """The page's text as headless Chromium rendered it (scripts run, markup stripped)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom(page)))


def dom(page: Path) -> str:
    """The page's DOM after Chromium ran it, scripts and styles left out."""
    raw = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                          "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    return re.sub(r"<(script|style)\b.*?</\1>", " ", raw, flags=re.S)


def screenshot(page: Path, out: Path, size: str = "1000,1400") -> Path:
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={size}",
                    f"--screenshot={out}", page.as_uri()], capture_output=True, timeout=120, check=True)
    return out
