"""Scenario 5 of faceid-bench: what a Python caller pays per verification.

(a) Tencent's official SDK (tencentcloud-sdk-python) calling the simulator
    directly: base64, JSON, TC3 signing and HTTP in the caller's process;
(b) grpcio calling the gateway, which does all of that for the caller.

Both paths get the same image, interleaved in one run; the script reports
wall-clock latency percentiles and the caller's CPU time per call
(time.process_time, so only this process's work counts).

usage: sdk_vs_gateway.py --simulator HOST:PORT --gateway HOST:PORT
                         --secret-id ID --secret-key KEY [--image-size N] [--requests N]
"""

import argparse
import base64
import pathlib
import statistics
import subprocess
import sys
import time

import grpc
from tencentcloud.common import credential
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.faceid.v20180301 import faceid_client, models

REPO = pathlib.Path(__file__).resolve().parent.parent
GEN = REPO / "examples" / "python" / "gen"


def stubs():
    """The generated faceid.v1 stubs (generated on first use)."""
    if not GEN.is_dir():
        subprocess.run(["bash", str(REPO / "examples/python/generate.sh")], check=True,
                       env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    sys.path.insert(0, str(GEN))
    from faceid.v1 import faceid_pb2, faceid_pb2_grpc
    return faceid_pb2, faceid_pb2_grpc


PIXEL_PNG = REPO / "tests" / "data" / "images" / "pixel.png"


def image_of(size):
    """The bench tool's image: a real 1x1 PNG, then filler after its IEND."""
    image = bytearray(PIXEL_PNG.read_bytes())
    image.extend((i * 31 % 251) for i in range(len(image), max(size, len(image))))
    return bytes(image)


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulator", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--secret-id", required=True)
    parser.add_argument("--secret-key", required=True)
    parser.add_argument("--image-size", type=int, default=200 * 1024)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()

    faceid_pb2, faceid_pb2_grpc = stubs()
    image = image_of(args.image_size)

    sdk = faceid_client.FaceidClient(
        credential.Credential(args.secret_id, args.secret_key), "",
        ClientProfile(httpProfile=HttpProfile(protocol="http", endpoint=args.simulator, reqTimeout=30)))

    def call_sdk():
        request = models.CheckIdCardInformationRequest()
        request.ImageBase64 = base64.b64encode(image).decode("ascii")
        sdk.CheckIdCardInformation(request)

    channel = grpc.insecure_channel(args.gateway, options=[("grpc.max_send_message_length", 16 << 20)])
    stub = faceid_pb2_grpc.IdCardVerificationServiceStub(channel)

    def call_gateway():
        stub.VerifyIdCard(faceid_pb2.VerifyIdCardRequest(image=image), timeout=30)

    paths = {"(a) SDK -> simulator": call_sdk, "(b) grpcio -> gateway": call_gateway}
    wall = {name: [] for name in paths}
    cpu = {name: [] for name in paths}
    warmup = args.requests // 10
    for i in range(args.requests + warmup):
        order = list(paths.items()) if i % 2 == 0 else list(reversed(paths.items()))
        for name, call in order:
            started, started_cpu = time.perf_counter(), time.process_time()
            call()
            if i >= warmup:
                wall[name].append((time.perf_counter() - started) * 1e3)
                cpu[name].append((time.process_time() - started_cpu) * 1e6)

    print(f"{args.image_size // 1024} KiB image, {args.requests} calls per path (after {warmup} warm-up)")
    print(f"{'path':<24} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'client CPU µs/call':>20}")
    for name in paths:
        print(f"{name:<24} {percentile(wall[name], 0.5):>8.2f} {percentile(wall[name], 0.99):>8.2f} "
              f"{statistics.mean(wall[name]):>8.2f} {statistics.mean(cpu[name]):>20.0f}")


if __name__ == "__main__":
    main()
