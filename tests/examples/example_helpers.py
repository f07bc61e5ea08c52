"""Paths and the command runner shared by the example tests (a module of its
own, so that it never clashes with another directory's conftest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE_IMAGE = REPO / "examples" / "images" / "id-card.png"
COMMAND_TIMEOUT = 60  # seconds for any one example command, unless `timeout` says otherwise


def run(args, **kwargs) -> subprocess.CompletedProcess:
    """Runs a command (from the repository root unless `cwd` says otherwise), capturing text output."""
    kwargs.setdefault("cwd", REPO)
    kwargs.setdefault("timeout", COMMAND_TIMEOUT)
    return subprocess.run(args, capture_output=True, text=True, **kwargs)
