"""Every example client against a live gateway in simulator mode: Python,
Node, Go and Java over gRPC, PHP over HTTP/JSON (the same port).

Each test runs for every language: the clients are run as their READMEs say
and their JSON output is checked, so all of them stay in step with the
contract (they print the same JSON: .proto field names, the error code by
name, the google.rpc details decoded under the same keys). The Go and Java
clients are built once per session from proto/ (conftest.py).
"""

from __future__ import annotations

import json
import socket
import sys
import time
from dataclasses import dataclass

import pytest

from example_helpers import SAMPLE_IMAGE, run

LANGUAGES = ("go", "java", "node", "php", "python")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def commands(language: str, request) -> tuple[list[str], list[str]]:
    """The commands of one language's example that verify one image and a folder."""
    if language == "python":
        request.getfixturevalue("python_stubs")
        return [sys.executable, "examples/python/verify.py"], [sys.executable, "examples/python/verify_batch.py"]
    if language == "node":
        request.getfixturevalue("node_packages")
        return ["node", "examples/node/verify.js"], ["node", "examples/node/verify_batch.js"]
    if language == "php":
        request.getfixturevalue("php_curl")
        return ["php", "examples/php/verify.php"], ["php", "examples/php/verify_batch.php"]
    # Go and Java: one program; --batch takes a folder.
    launcher = str(request.getfixturevalue(f"{language}_client"))
    return [launcher], [launcher, "--batch"]


@dataclass
class Client:
    """One language's example, pointed at a gateway."""

    unary: list[str]
    batch: list[str]
    target: str

    def verify(self, *args: str):
        return run([*self.unary, "--target", self.target, *args])

    def verify_batch(self, *args: str, target: str | None = None):
        return run([*self.batch, "--target", target or self.target, *args])


@pytest.fixture(params=LANGUAGES)
def client(request, gateway) -> Client:
    return Client(*commands(request.param, request), target=gateway.target)


def image_with(folder, name: str, directive: str | None = None, content: bytes | None = None):
    """Writes the sample image (or `content`) with a FACEID-SIM directive appended."""
    data = SAMPLE_IMAGE.read_bytes() if content is None else content
    if directive:
        data += f"FACEID-SIM[{directive}]".encode()
    path = folder / name
    path.write_bytes(data)
    return path


def json_output(result, exit_code: int):
    assert result.returncode == exit_code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def test_verify_sample_image_matches(client):
    answer = json_output(client.verify(str(SAMPLE_IMAGE)), 0)
    assert answer["verdict"] == "VERDICT_MATCH"
    assert answer["result_code"] == "Success"
    assert answer["similarity"] >= 70
    assert len(answer["id_card"]["id_number"]) == 18
    assert answer["simulated"] is True
    assert answer["portrait_bytes"] > 0
    assert answer["request_id"]


def test_verify_mismatch_is_an_answer_not_an_error(client, tmp_path):
    image = image_with(tmp_path, "mismatch.png", "result=FailedOperation.IdNameMisMatch")
    answer = json_output(client.verify(str(image)), 0)
    assert answer["verdict"] == "VERDICT_ID_NAME_MISMATCH"
    assert answer["result_code"] == "FailedOperation.IdNameMisMatch"


def test_verify_url_with_checks_reports_warnings(client):
    url = "https://example.com/card.jpg?FACEID-SIM[warn=-9102|-8001]"
    answer = json_output(client.verify(url, "--check", "copy_warn", "--check", "quality"), 0)
    assert answer["verdict"] == "VERDICT_WARNING"
    assert answer["warnings"] == ["WARNING_PHOTOCOPY", "WARNING_BLURRY"]
    assert answer["warning_codes"] == ["-9102", "-8001"]
    assert answer["quality"] == 88


def test_verify_invalid_input_decodes_error_info_and_bad_request(client):
    error = json_output(client.verify("ftp://example.com/card.png"), 1)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["error_info"]["domain"] == "faceid.tencentcloudapi.com"
    assert error["error_info"]["reason"] == "InvalidParameterValue"
    assert error["error_info"]["metadata"] == {"checked_by": "gateway"}
    assert error["bad_request"]["field_violations"][0]["field"] == "image_url"


def test_verify_transient_error_decodes_retry_info(client):
    error = json_output(client.verify("https://example.com/FACEID-SIM[error=InternalError]"), 1)["error"]
    assert error["code"] == "UNAVAILABLE"
    assert error["error_info"]["reason"] == "InternalError"
    assert error["error_info"]["metadata"]["request_id"]
    assert error["retry_info"]["retry_delay"] == "1s"


def test_verify_account_error_decodes_precondition_failure(client):
    url = "https://example.com/FACEID-SIM[error=UnauthorizedOperation.Arrears]"
    error = json_output(client.verify(url), 1)["error"]
    assert error["code"] == "FAILED_PRECONDITION"
    assert error["error_info"]["reason"] == "UnauthorizedOperation.Arrears"
    assert error["precondition_failure"]["violations"][0]["type"] == "TENCENT_ACCOUNT"


def test_batch_answers_every_image_once(client, tmp_path):
    image_with(tmp_path, "match.png")
    image_with(tmp_path, "mismatch.PNG", "result=FailedOperation.IdNameMisMatch")
    image_with(tmp_path, "refused.jpg", content=b"GIF89a not a card")
    image_with(tmp_path, "unavailable.jpeg", "error=InternalError")
    (tmp_path / "notes.txt").write_text("not an image\n")

    result = client.verify_batch(str(tmp_path), "--traceparent", TRACEPARENT, "--deadline", "30")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    answers = {line["item_id"]: line for line in lines}
    assert len(lines) == len(answers) == 4
    assert answers["match.png"]["verdict"] == "VERDICT_MATCH"
    assert answers["mismatch.PNG"]["verdict"] == "VERDICT_ID_NAME_MISMATCH"
    refused = answers["refused.jpg"]["error"]
    assert refused["code"] == "INVALID_ARGUMENT"
    assert refused["error_info"]["reason"] == "FailedOperation.ImageDecodeFailed"
    assert refused["bad_request"]["field_violations"][0]["field"] == "request.image"
    unavailable = answers["unavailable.jpeg"]["error"]
    assert unavailable["code"] == "UNAVAILABLE"
    assert unavailable["retry_info"]["retry_delay"] == "1s"
    for line in ("x-batch-received: 4", "x-batch-succeeded: 2", "x-batch-failed: 2",
                 f"traceparent: {TRACEPARENT}", "4/4"):
        assert line in result.stderr


def test_batch_deadline_reaches_the_gateway(client, tmp_path):
    image_with(tmp_path, "fast.png")
    image_with(tmp_path, "slow.png", "delay=5000")
    started = time.monotonic()
    result = client.verify_batch(str(tmp_path), "--deadline", "1")
    assert time.monotonic() - started < 4
    assert result.returncode == 0, result.stderr
    answers = {line["item_id"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert answers["fast.png"]["verdict"] == "VERDICT_MATCH"
    assert answers["slow.png"]["error"]["code"] == "DEADLINE_EXCEEDED"
    assert "x-batch-failed: 1" in result.stderr


def test_batch_exits_non_zero_when_items_get_no_answer(client, tmp_path):
    image_with(tmp_path, "lost.png")
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
    result = client.verify_batch(str(tmp_path), target=closed)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "stream ended with UNAVAILABLE" in result.stderr
    assert "no answer for 1 item(s): lost.png" in result.stderr


@pytest.mark.parametrize("language", ["python", "node"])
def test_retries_carry_one_idempotency_key_and_replays_are_reported(language, request, gateway, tmp_path):
    unary, _ = commands(language, request)
    # The gateway's own three attempts fail; the example's retry succeeds.
    flaky = image_with(tmp_path, "flaky.png", f"key=flaky-{language},fail-first=3,error=InternalError")
    result = run([*unary, "--target", gateway.target, "--retries", "1", str(flaky)])
    assert json_output(result, 0)["verdict"] == "VERDICT_MATCH"
    assert "retrying in 1s with the same idempotency-key" in result.stderr
    # The same key twice: the second answer is the first, replayed.
    image = image_with(tmp_path, "card.png", "sim=91")
    key = f"example-{language}-{time.time_ns()}"
    first = run([*unary, "--target", gateway.target, "--idempotency-key", key, str(image)])
    second = run([*unary, "--target", gateway.target, "--idempotency-key", key, str(image)])
    assert json_output(first, 0) == json_output(second, 0)
    assert "replayed" not in first.stderr
    assert "replayed an earlier answer" in second.stderr
