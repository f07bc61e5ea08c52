"""Every ```sh block of examples/grpcurl.md, run against a live gateway.

Each block is followed in the markdown by its expectation, e.g.
    <!-- expect: {"exit": 0, "contains": ["VERDICT_MATCH"]} -->
The block runs with bash -e from the repository root, with localhost:50051
replaced by the test gateway's address; the test checks the exit status and
that stdout + stderr contain every listed string (example_helpers.py).
"""

from __future__ import annotations

import pytest

from example_helpers import REPO, assert_every_block_has_an_expectation, doc_blocks, run_doc_block

DOC = REPO / "examples" / "grpcurl.md"


def test_every_sh_block_is_found_and_has_an_expectation():
    assert_every_block_has_an_expectation(DOC)


@pytest.mark.parametrize("script, expect", doc_blocks(DOC))
def test_doc_block(script, expect, gateway, tool_env):
    run_doc_block(script, expect, gateway.target, tool_env)
