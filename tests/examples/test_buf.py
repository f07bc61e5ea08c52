"""The contract's buf gates: lint (STANDARD), format, and breaking (FILE)
against main and against the published snapshot, plus a check that the
breaking gate does catch a break.

The git input takes `subdir=proto`: the module root, so the comparison works
whether or not the compared commit has buf.yaml.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from example_helpers import REPO, run


def buf(*args: str, env, cwd=REPO):
    return run(["buf", *args], env=env, cwd=cwd)


def main_ref() -> str:
    """The git input for main: the local branch, else origin's, else HEAD (a checkout of main)."""
    for rev, ref in (("refs/heads/main", "branch=main"), ("refs/remotes/origin/main", "ref=origin/main"),
                     ("HEAD", "ref=HEAD")):
        found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", rev], cwd=REPO, capture_output=True)
        if found.returncode == 0:
            return f".git#{ref},subdir=proto"
    pytest.fail("no commit of main to compare the contract against")


def test_lint(tool_env):
    result = buf("lint", env=tool_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_format(tool_env):
    result = buf("format", "-d", "--exit-code", env=tool_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_against_main(tool_env):
    result = buf("breaking", "--against", main_ref(), env=tool_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_against_the_published_contract(tool_env):
    """contract/faceid.v1.baseline.json is the contract as published (a buf
    image, `buf build --exclude-source-info -o ...`). CI runs on a clone of
    main, where comparing with main is comparing with itself; comparing with
    this snapshot still catches a break. Adding to the contract is fine;
    a deliberate break needs a new major version and a new snapshot."""
    result = buf("breaking", "--against", "contract/faceid.v1.baseline.json", env=tool_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_catches_a_deleted_field(tool_env, tmp_path):
    shutil.copy(REPO / "buf.yaml", tmp_path)
    shutil.copytree(REPO / "proto", tmp_path / "proto")
    contract = tmp_path / "proto" / "faceid" / "v1" / "faceid.proto"
    text = contract.read_text()
    assert "  string request_id = 10;\n" in text
    contract.write_text(text.replace("  string request_id = 10;\n", ""))

    result = buf("breaking", "--against", str(REPO / "proto"), env=tool_env, cwd=tmp_path)
    assert result.returncode == 100, result.stdout + result.stderr
    assert 'Previously present field "10" with name "request_id"' in result.stdout
