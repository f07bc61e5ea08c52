"""Paths and the command runner shared by the example tests (a module of its
own, so that it never clashes with another directory's conftest)."""

from __future__ import annotations

import json
import re
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


# A ```sh block of a docs page and the expectation written after it, e.g.
#     <!-- expect: {"exit": 0, "contains": ["VERDICT_MATCH"]} -->
SH_BLOCK = re.compile(r"^```sh\n(?P<script>.*?)^```\n(?:<!-- expect: (?P<expect>.*?) -->\n)?", re.S | re.M)
DOC_ADDRESS = "localhost:50051"  # the address the docs use; the tests put the test gateway's there


def doc_blocks(doc: Path) -> list:
    """One pytest.param(script, expect) per ```sh block of `doc`, named page:line."""
    import pytest

    text = doc.read_text()
    return [pytest.param(m["script"], m["expect"], id=f"{doc.name}:{text.count(chr(10), 0, m.start()) + 1}")
            for m in SH_BLOCK.finditer(text)]


def assert_every_block_has_an_expectation(doc: Path) -> None:
    text = doc.read_text()
    blocks = list(SH_BLOCK.finditer(text))
    assert len(blocks) == text.count("```sh\n") > 0
    missing = [text.count("\n", 0, m.start()) + 1 for m in blocks if m["expect"] is None]
    assert not missing, f"sh blocks without <!-- expect: ... --> at lines {missing}"


def run_doc_block(script: str, expect: str | None, target: str, env) -> None:
    """Runs one block with bash -e from the repository root, against `target`,
    and checks its exit status and that stdout + stderr contain every listed string."""
    assert expect, "this block has no <!-- expect: ... --> comment"
    expectation = json.loads(expect)
    result = run(["bash", "-e", "-c", script.replace(DOC_ADDRESS, target)], env=env)
    output = result.stdout + result.stderr
    assert result.returncode == expectation["exit"], output
    for fragment in expectation["contains"]:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
