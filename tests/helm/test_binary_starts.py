"""Every value set the chart renders starts the real binary: each rendering's
Deployment (its ConfigMap through envFrom, its env and its args) is run as
`faceid-gateway serve --check-config`, which makes the start-up checks that
need no network, and must print `configuration ok`. A value set the binary
would refuse must be refused by the chart first (schema or template).

The binary is FACEID_GATEWAY_BIN (a path relative to the repository root, or
absolute), default target/debug/faceid-gateway: `cargo build` makes it, and
scripts/test passes the one it built. Without it these tests fail.

Run: python -m pytest -q tests/helm   (see tests/helm/requirements.txt)
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import helm_python as helm
import pytest

from conftest import CHART, FULLNAME, NAMESPACE, merge
from test_chart import ENDPOINTS, HPA, MATRIX, REDIS, REDIS_TLS, TLS

REPO = CHART.parents[1]
GATEWAY = Path(os.environ.get("FACEID_GATEWAY_BIN", "target/debug/faceid-gateway"))
if not GATEWAY.is_absolute():
    GATEWAY = REPO / GATEWAY

# What the pods would read from Secrets the chart does not make: fake values
# of the right shape, by (Secret, key), else by the variable's name.
FAKE_SECRET_VALUES = {
    "TENCENTCLOUD_SECRET_ID": "AKIDfakeBinaryCheck0001",
    "TENCENTCLOUD_SECRET_KEY": "fakeBinaryCheckKey0001",
    "TENCENTCLOUD_SESSION_TOKEN": "fakeBinaryCheckToken0001",
}


def gateway() -> Path:
    assert GATEWAY.is_file() and os.access(GATEWAY, os.X_OK), (
        f"{GATEWAY} is not an executable: build it (cargo build) or set FACEID_GATEWAY_BIN"
    )
    return GATEWAY


def container_environment(out) -> dict[str, str]:
    """The gateway container's environment as the kubelet would build it:
    envFrom first, then env in order with $(VAR) references expanded."""
    env: dict[str, str] = {}
    container = out.container
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in out.all("ConfigMap")}
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
        for s in out.all("Secret")
    }
    for source in container.get("envFrom", []):
        if "configMapRef" in source and source["configMapRef"]["name"] in configmaps:
            env.update(configmaps[source["configMapRef"]["name"]])
        # Other sources (extraEnvFrom) name objects outside the chart.
    for entry in container.get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), entry["value"])
            continue
        source = entry["valueFrom"]
        if "secretKeyRef" in source:
            ref = source["secretKeyRef"]
            if ref["name"] in secrets:
                value = secrets[ref["name"]].get(ref["key"])
            elif name == "FACEID_RATE_LIMIT_REDIS":
                # A URL the CA setting agrees with, as a working Secret holds.
                tls = "FACEID_RATE_LIMIT_REDIS_CA" in {e["name"] for e in container["env"]}
                value = "rediss://redis.test:6380/0" if tls else "redis://redis.test:6379/0"
            else:
                value = FAKE_SECRET_VALUES.get(ref["key"])
            if value is None:
                assert ref.get("optional"), f"no value for {name} from {ref}"
                continue
            env[name] = value
        elif "configMapKeyRef" in source:
            env[name] = "configmap-value"
        elif "fieldRef" in source:
            env[name] = {"metadata.name": f"{FULLNAME}-0", "metadata.namespace": NAMESPACE}.get(
                source["fieldRef"]["fieldPath"], "field-value"
            )
        else:
            env[name] = "1"
    # TKE's pod-identity webhook injects these into the pods of a
    # ServiceAccount annotated with a role (credentials.mode=oidc).
    for account in out.all("ServiceAccount"):
        if "tke.cloud.tencent.com/role-arn" in account["metadata"].get("annotations", {}):
            env.setdefault("TKE_ROLE_ARN", account["metadata"]["annotations"]["tke.cloud.tencent.com/role-arn"])
            env.setdefault("TKE_PROVIDER_ID", "cls-webhook-oidc")
            env.setdefault("TKE_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/tke.cloud.tencent.com/token")
            env.setdefault("TKE_REGION", "ap-guangzhou")
    return env


def check_config(out, tmp_path) -> subprocess.CompletedProcess:
    """Runs the rendered gateway container's configuration through
    `--check-config` (the image's entrypoint is the binary)."""
    container = out.container
    assert "command" not in container, "the image's entrypoint runs the binary"
    env = {"PATH": os.environ.get("PATH", "")} | container_environment(out)
    return subprocess.run(
        [str(gateway()), *container["args"], "--check-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


# Value sets beyond the structural matrix: edges of what the schema
# accepts, and values the binary refuses, which the chart must refuse first.
EDGES = {
    "zero-durations-that-mean-off": {
        "rateLimit": {"maxWait": "0"},
        "config": {"retryBaseDelay": "0s", "retryMaxDelay": 0},
        "connections": {"keepaliveInterval": 0, "handshakeTimeout": "0s", "idleTimeout": "0", "maxConnectionAge": "0m"},
    },
    "smallest-positive-durations": {
        "reloadInterval": "1ms",
        "config": {"upstreamTimeout": "1ms", "connectTimeout": "1ms", "ejectFor": "1ms"},
        "rateLimit": {"redis": {"timeout": "1ms"}},
        "spend": {"idempotencyTtl": "1ms"},
    },
    "largest-counts": {
        "config": {
            "maxInFlight": 4294967295,
            "batchConcurrency": 4294967295,
            "batchGlobalConcurrency": 1,
            "batchMaxItems": 9007199254740991,
            "ejectAfter": 4294967295,
            "maxAttempts": 10,
            "simulatorRateLimit": 4294967295,
        },
        "connections": {"maxConcurrentStreams": 1, "maxConnections": 1},
        "spend": {"budgetDay": 9007199254740991, "budgetMonth": 9007199254740991, "idempotencyCacheSize": 1},
        "rateLimit": {"perSecond": 1, "burst": 0, "fallbackShare": 1},
    },
    "account-limit-raised": {"rateLimit": {"perSecond": 1000000, "accountLimit": 1000000}},
    "endpoints-of-every-form": {
        "config": {
            "endpoint": [
                "https://faceid.intl.tencentcloudapi.com/",
                "https://faceid.tencentcloudapi.com:443",
                "http://127.0.0.1:9000",
                "http://[::1]:9000/",
                "http://simulator",
                "https://faceid.ap-singapore.tencentcloudapi.com.",
            ],
            "region": "ap-guangzhou",
        }
    },
    "role-with-every-setting": {
        "credentials": {
            "roleArn": "qcs::cam::uin/100000000001:roleName/faceid-gateway",
            "roleSessionName": "a" * 64,
            "roleDuration": "12h",
            "stsEndpoint": "https://sts.ap-singapore.tencentcloudapi.com/",
        }
    },
    "oidc-projected-with-region": {
        "credentials": {
            "mode": "oidc",
            "oidc": {"roleArn": "qcs::cam::uin/1:roleName/r", "webhook": False, "providerId": "p", "region": "ap-singapore"},
        }
    },
    "otel-grpc-plaintext": {"otel": {"endpoint": "http://otel-collector:4317", "protocol": "grpc", "sampler": "always_off"}},
    "otel-http-https": {"otel": {"endpoint": "https://otlp.example.com:4318", "protocol": "http/protobuf"}},
    "otel-numbers": {"otel": {"endpoint": "http://otel:4318/v1", "samplerArg": 1, "sampler": "traceidratio"}},
    "billable-results": {"spend": {"billableResults": ["Success", "FailedOperation.IdNameMisMatch", "InternalError"]}},
    "encryption-off-as-yaml-boolean": {"upstreamEncryption": {"mode": False, "algorithm": "sm4-gcm"}},
    "match-threshold-fraction": {"config": {"matchThreshold": 99.5, "logFormat": "text", "logLevel": "warn"}},
    "drain-and-grace": {"drainTimeoutSeconds": 1, "preStopSleepSeconds": 0, "terminationGracePeriodSeconds": 2},
    "redis-tls-everything": merge(HPA, REDIS_TLS, {"rateLimit": {"fallbackShare": 0.01, "redis": {"key": "k"}}}),
    "tls-tokens-reflection": merge(
        TLS, {"auth": {"tokensSecret": {"name": "callers"}, "allowReflection": True}, "input": {"allowPrivateImageUrls": True}}
    ),
    # What the binary refuses: the chart must refuse it first.
    "refused-endpoint-with-path": {"config": {"endpoint": "https://faceid.tencentcloudapi.com/v2"}},
    "refused-endpoint-with-query": {"config": {"endpoint": ["https://faceid.tencentcloudapi.com/?a=b"]}},
    "refused-endpoint-with-user": {"config": {"endpoint": "https://user@faceid.tencentcloudapi.com"}},
    "refused-endpoint-twice": {"config": {"endpoint": [ENDPOINTS[0], ENDPOINTS[0] + "/"]}},
    "refused-endpoint-port": {"config": {"endpoint": "https://faceid.tencentcloudapi.com:65536"}},
    "refused-region": {"config": {"region": "ap guangzhou"}},
    "refused-zero-reload-interval": {"reloadInterval": "0s"},
    "refused-zero-upstream-timeout": {"config": {"upstreamTimeout": "0ms"}},
    "refused-zero-eject-for": {"config": {"ejectFor": "0s"}},
    "refused-zero-idempotency-ttl": {"spend": {"idempotencyTtl": "0"}},
    "refused-role-duration": {"credentials": {"roleArn": "qcs::cam::uin/1:roleName/r", "roleDuration": "13h"}},
    "refused-session-name": {"credentials": {"roleArn": "qcs::cam::uin/1:roleName/r", "roleSessionName": "a"}},
    "refused-max-in-flight": {"config": {"maxInFlight": 4294967296}},
    "refused-eject-after": {"config": {"ejectAfter": 0}},
    "refused-fallback-share": {"rateLimit": {"fallbackShare": 1.5}},
    "refused-redis-port": {"rateLimit": {"redis": {"url": "redis://redis:70000/0"}}},
    "refused-redis-ca-plaintext": merge(HPA, REDIS, {"rateLimit": {"redis": {"ca": {"existingSecret": "ca"}}}}),
    "refused-otel-protocol": {"otel": {"endpoint": "http://otel:4318", "protocol": "http/json"}},
    "refused-otel-grpc-over-tls": {"otel": {"endpoint": "https://otlp.example.com:4317", "protocol": "grpc"}},
    "refused-role-duration-short": {"credentials": {"roleArn": "qcs::cam::uin/1:roleName/r", "roleDuration": "500ms"}},
    "refused-match-threshold": {"config": {"matchThreshold": 100.5}},
}
VALUE_SETS = {**MATRIX, **EDGES}


@pytest.mark.parametrize("case", VALUE_SETS)
def test_every_rendered_configuration_starts_the_binary(render, tmp_path, case):
    values = VALUE_SETS[case]
    try:
        out = render(values)
    except (helm.HelmValuesError, helm.HelmRenderError):
        assert case.startswith("refused-"), f"{case}: the chart refused values it should render"
        return
    assert not case.startswith("refused-"), f"{case}: the chart rendered values the binary refuses"
    result = check_config(out, tmp_path)
    assert (result.returncode, result.stdout) == (0, "configuration ok\n"), (
        f"{case}: the binary refuses what the chart rendered:\n{result.stderr}"
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"FACEID_ENDPOINT": "https://faceid.tencentcloudapi.com/v2"},
        {"FACEID_ENDPOINT": "https://user@faceid.tencentcloudapi.com"},
        {"FACEID_ENDPOINT": "https://faceid.tencentcloudapi.com,https://faceid.tencentcloudapi.com/"},
        {"FACEID_ENDPOINT": "https://faceid.tencentcloudapi.com:65536"},
        {"FACEID_REGION": "ap\x7fguangzhou"},
        {"FACEID_RELOAD_INTERVAL": "0s"},
        {"FACEID_RATE_LIMIT_REDIS": "redis://redis:70000/0"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "https://otlp.example.com:4317"},
        {"FACEID_ROLE_ARN": "qcs::cam::uin/1:roleName/r", "FACEID_ROLE_DURATION": "13h"},
    ],
    ids=lambda changes: ",".join(f"{k}={v}" for k, v in changes.items()),
)
def test_the_refused_value_sets_are_ones_the_binary_refuses(render, tmp_path, changes):
    """The refusals above are not idle: a rendering of the defaults with the
    setting changed by hand in its ConfigMap makes the binary refuse to start."""
    out = render({"otel": {"endpoint": "http://otel:4318"}})
    assert check_config(out, tmp_path).returncode == 0
    out.one("ConfigMap")["data"].update(changes)
    result = check_config(out, tmp_path)
    assert result.returncode != 0 and result.stdout == "", (changes, result.stdout)
    assert result.stderr.strip(), changes


def test_the_value_sets_cover_refusals_and_every_matrix_case():
    refused = [case for case in VALUE_SETS if case.startswith("refused-")]
    assert len(refused) >= 15
    assert set(MATRIX) <= set(VALUE_SETS)
