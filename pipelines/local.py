"""Run the training pipeline on this machine with kfp's SubprocessRunner: every step in a
subprocess of this Python environment, artifacts under ``<home>/pipeline-runs``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import warnings
from collections import deque
from pathlib import Path

from newsfeed.errors import NewsfeedError

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp colours task names in its messages
ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception|Exit)): (.*)$")


class PipelineFailed(NewsfeedError, RuntimeError):
    """A step failed; the message names it and carries the step's own error."""


class _StepLog(io.TextIOBase):
    """Passes the steps' logs through (without kfp's executor-input dumps unless verbose)
    and keeps the last lines, to say why a failed step failed."""

    def __init__(self, out, verbose: bool, keep: int = 400):
        self.out, self.verbose, self.lines, self._partial, self._skipping = out, verbose, deque(maxlen=keep), "", False

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            self.lines.append(line)
            if self.verbose or self._shown(line):
                self.out.write(line + "\n")
        return len(text)

    def _shown(self, line: str) -> bool:
        if self._skipping:  # kfp pretty-prints the executor input as JSON indented by 4
            self._skipping = line != "    }"
            return False
        if "[KFP Executor" in line:
            self._skipping = line.rstrip().endswith("Got executor_input:")
            return False
        return True

    def flush(self) -> None:
        self.out.flush()

    def error(self) -> str | None:
        """The last exception a step raised, with its message's continuation lines."""
        lines = list(self.lines)
        for i in range(len(lines) - 1, -1, -1):
            match = ERROR_LINE.match(lines[i])
            if match:
                rest = []
                for line in lines[i + 1:]:
                    if not line.strip() or line.lstrip().startswith(("[KFP", "Traceback")):
                        break
                    rest.append(line.strip())
                return "\n  ".join([f"{match.group(1)}: {match.group(2)}", *rest])
        return None


def run(arguments: dict, pipeline_root: Path, verbose: bool = False) -> dict:
    """Run the pipeline with ``arguments``; return the gate's decision. Raises PipelineFailed
    naming the failed step and its error."""
    from kfp import local

    from pipelines.training_pipeline import training_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    log = _StepLog(sys.stdout, verbose)
    with warnings.catch_warnings(), contextlib.redirect_stdout(log):
        # The steps' image is the newsfeed image, not a "python" one: locally this environment stands in for it;
        # resources and caching are the cluster's business.
        warnings.filterwarnings("ignore", message="You may be attemping to run a task that uses custom")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        try:
            task = training_pipeline(**arguments)
        except RuntimeError as err:
            why = log.error()
            raise PipelineFailed(ANSI.sub("", str(err)) + (f"\n{why}" if why else "")) from None
    return json.loads(task.output)
