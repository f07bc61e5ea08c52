"""Every ```sh block of examples/http.md (HTTP/JSON with curl and jq), run
against a live gateway the same way as the grpcurl page (test_grpcurl_doc.py).
"""

from __future__ import annotations

import pytest

from example_helpers import REPO, assert_every_block_has_an_expectation, doc_blocks, run_doc_block

DOC = REPO / "examples" / "http.md"


def test_every_sh_block_is_found_and_has_an_expectation():
    assert_every_block_has_an_expectation(DOC)


@pytest.mark.parametrize("script, expect", doc_blocks(DOC))
def test_doc_block(script, expect, gateway, curl_env):
    run_doc_block(script, expect, gateway.target, curl_env)
