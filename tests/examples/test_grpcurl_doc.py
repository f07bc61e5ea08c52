"""Every ```sh block of examples/grpcurl.md, run against a live gateway.

Each block is followed in the markdown by its expectation, e.g.
    <!-- expect: {"exit": 0, "contains": ["VERDICT_MATCH"]} -->
The block runs with bash -e from the repository root, with localhost:50051
replaced by the test gateway's address; the test checks the exit status and
that stdout + stderr contain every listed string.
"""

from __future__ import annotations

import json
import re

import pytest

from example_helpers import REPO, run

DOC = REPO / "examples" / "grpcurl.md"
BLOCK = re.compile(r"^```sh\n(?P<script>.*?)^```\n(?:<!-- expect: (?P<expect>.*?) -->\n)?", re.S | re.M)
DOC_ADDRESS = "localhost:50051"


def line_of(text: str, match: re.Match) -> int:
    return text.count("\n", 0, match.start()) + 1


def doc_blocks():
    text = DOC.read_text()
    return [pytest.param(m["script"], m["expect"], id=f"grpcurl.md:{line_of(text, m)}")
            for m in BLOCK.finditer(text)]


def test_every_sh_block_is_found_and_has_an_expectation():
    text = DOC.read_text()
    blocks = list(BLOCK.finditer(text))
    assert len(blocks) == text.count("```sh\n") > 0
    missing = [line_of(text, m) for m in blocks if m["expect"] is None]
    assert not missing, f"sh blocks without <!-- expect: ... --> at lines {missing}"


@pytest.mark.parametrize("script, expect", doc_blocks())
def test_doc_block(script, expect, gateway, tool_env):
    assert expect, "this block has no <!-- expect: ... --> comment"
    expectation = json.loads(expect)
    result = run(["bash", "-e", "-c", script.replace(DOC_ADDRESS, gateway.target)], env=tool_env)
    output = result.stdout + result.stderr
    assert result.returncode == expectation["exit"], output
    for fragment in expectation["contains"]:
        assert fragment in output, f"{fragment!r} not in:\n{output}"
