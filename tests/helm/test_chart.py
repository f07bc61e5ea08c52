"""The Helm chart: strict lint, renderings that validate against the
Kubernetes API schemas, and the properties the chart promises (probes that
follow TLS, locked-down pods, keys only in a Secret, read-only mounted files
for TLS, tokens and public keys, the scaling rule, schema checks).

Run: python -m pytest -q tests/helm   (see tests/helm/requirements.txt)
"""

from __future__ import annotations

import base64
import json
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from yamllint import config as yamllint_config
from yamllint import linter as yamllint_linter

from conftest import (
    BASE_VALUES,
    CHART,
    FAKE_REDIS_PASSWORD,
    FAKE_SECRET_ID,
    FAKE_SECRET_KEY,
    FAKE_SESSION_TOKEN,
    FULLNAME,
    INLINE_KEYS,
    RELEASE,
    merge,
    strings_in,
)

REDIS = {"rateLimit": {"redis": {"url": "redis://redis.cache.svc:6379/0"}}}
REDIS_TLS = {
    "rateLimit": {"redis": {"url": "rediss://redis.cache.svc:6380/0", "ca": {"existingSecret": "redis-ca", "key": "ca.pem"}}}
}
HPA = {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}
TLS = {"tls": {"enabled": True, "existingSecret": "gw-tls"}}
MTLS = merge(
    TLS,
    {
        "tls": {"clientCA": {"existingSecret": "gw-client-ca", "key": "bundle.pem"}},
        "tests": {"tls": {"clientSecret": "gw-test-client"}},
    },
)
TOKENS = {"auth": {"tokensSecret": {"name": "gw-callers", "key": "tokens.txt"}}}
ENCRYPTION = {
    "upstreamEncryption": {
        "mode": "response",
        "algorithm": "sm4-gcm",
        "tencentPublicKeys": {"existingConfigMap": "tencent-keys", "rsaKey": "rsa.pem", "sm2Key": "sm2-2026.pem"},
    }
}

ROLE_ARN = "qcs::cam::uin/100000000001:roleName/faceid-gateway"
OIDC = {"credentials": {"mode": "oidc", "oidc": {"roleArn": ROLE_ARN}}}
OIDC_PROJECTED = {
    "credentials": {
        "mode": "oidc",
        "oidc": {
            "roleArn": ROLE_ARN,
            "webhook": False,
            "providerId": "cls-abc123-oidc",
            "region": "ap-singapore",
            "audience": "sts.cloud.tencent.com",
            "tokenExpirationSeconds": 3600,
        },
    }
}
CVM_ROLE = {"credentials": {"mode": "cvm-role"}}
NETWORK_POLICY = {"networkPolicy": {"enabled": True}}
ENDPOINTS = [
    "https://faceid.intl.tencentcloudapi.com",
    "https://faceid.ap-singapore.tencentcloudapi.com",
    "https://faceid.ap-hongkong.tencentcloudapi.com",
]
SPEND = {
    "spend": {
        "billableResults": ["Success", "FailedOperation.IdNameMisMatch"],
        "budgetDay": 5000,
        "budgetMonth": 120000,
        "idempotencyTtl": "48h",
        "idempotencyCacheSize": 67108864,
    }
}

# The renderings every structural test runs over.
MATRIX = {
    "defaults": {},
    "existing-secret-env": {"credentials": {"existingSecret": "tencent-keys"}},
    "chart-secret-env": {"credentials": dict(INLINE_KEYS)},
    "chart-secret-file": {"credentials": {"mode": "file", **INLINE_KEYS}},
    "existing-secret-file": {"credentials": {"mode": "file", "existingSecret": "tencent-ini"}},
    "hpa-redis": merge(HPA, REDIS),
    "hpa-redis-from-secret": merge(
        HPA, {"rateLimit": {"redis": {"existingSecret": "redis-url", "existingSecretKey": "url"}}}
    ),
    "redis-tls-ca-secret": merge(HPA, REDIS_TLS),
    "redis-tls-ca-configmap": merge(
        HPA,
        {"rateLimit": {"redis": {"existingSecret": "redis-url", "ca": {"existingConfigMap": "trust-bundle"}}}},
    ),
    "replicas-3-per-replica": {
        "replicaCount": 3,
        "rateLimit": {"perReplica": True, "perSecond": 33},
    },
    "network-policy": merge(
        HPA,
        REDIS,
        {
            "networkPolicy": {"enabled": True},
            "otel": {"endpoint": "http://otel-collector.observability.svc:4317", "protocol": "grpc"},
        },
    ),
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    # Gateway-wide budgets on one replica need no Redis.
    "spend-one-replica": merge(TOKENS, SPEND),
    "spend-hpa-redis": merge(HPA, REDIS, SPEND),
    "endpoint-list": merge(NETWORK_POLICY, {"config": {"endpoint": ENDPOINTS}}),
    "simulate": {"simulate": True, "credentials": {"existingSecret": ""}},
    "oidc": merge(OIDC, NETWORK_POLICY),
    "oidc-projected-token": merge(OIDC_PROJECTED, NETWORK_POLICY),
    "cvm-role": merge(CVM_ROLE, NETWORK_POLICY),
    "role-arn-over-env": merge(
        NETWORK_POLICY, {"credentials": {"roleArn": ROLE_ARN, "roleDuration": "1h"}}
    ),
    "tls": TLS,
    "tls-mtls-secret": MTLS,
    "tls-mtls-configmap": merge(
        TLS,
        {
            "tls": {"clientCA": {"existingConfigMap": "trust-bundle"}},
            "tests": {"tls": {"clientSecret": "gw-test-client"}},
        },
    ),
    "tokens": merge(TOKENS, {"auth": {"allowReflection": True}}),
    "tls-tokens": merge(TLS, TOKENS),
    "encryption": ENCRYPTION,
    "encryption-rsa-only": {
        "upstreamEncryption": {
            "mode": "fields",
            "tencentPublicKeys": {"existingConfigMap": "tencent-keys", "rsaKey": "rsa.pem"},
        }
    },
    "connections-hpa": merge(
        HPA,
        REDIS,
        {
            "connections": {
                "maxConcurrentStreams": 100,
                "keepaliveInterval": "20s",
                "maxConnectionAge": "5m",
                "handshakeTimeout": "5s",
                "idleTimeout": "0",
                "maxConnections": 2000,
            }
        },
    ),
    # Chart 0.5.0: exposure outside the cluster, client-side balancing.
    "load-balancer": {
        "service": {
            "type": "LoadBalancer",
            "nodePort": 30051,
            "loadBalancerSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
            "externalTrafficPolicy": "Local",
            "headless": True,
        },
        "serviceMonitor": {"enabled": True, "interval": "1m", "scrapeTimeout": "1m"},
    },
    "node-port": {"service": {"type": "NodePort", "externalTrafficPolicy": "Cluster"}},
    # Escape hatches and Kubernetes fields passed through.
    "escape-hatches": {
        "image": {"tag": 2},
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
        "extraEnv": [{"name": "CORPORATE_CA_DIR", "value": "/etc/corporate-ca"}],
        "extraEnvFrom": [{"configMapRef": {"name": "gateway-extra-env"}}],
        "extraVolumes": [{"name": "corporate-ca", "configMap": {"name": "corporate-ca-bundle"}}],
        "extraVolumeMounts": [{"name": "corporate-ca", "mountPath": "/etc/corporate-ca", "readOnly": True}],
        "initContainers": [
            {
                "name": "wait",
                "image": "registry.example.com/busybox:1.37",
                "command": ["true"],
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
            }
        ],
        "sidecars": [
            {
                "name": "proxy",
                "image": "registry.example.com/proxy:1.0",
                "ports": [{"name": "proxy", "containerPort": 8443}],
                "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
            }
        ],
        "podSecurityContext": {"supplementalGroups": [1000], "fsGroupChangePolicy": "OnRootMismatch"},
        "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
        "probes": {"readiness": {"successThreshold": 1}},
        "resources": {"limits": {"memory": "2Gi"}, "requests": {"memory": "512Mi", "ephemeral-storage": "64Mi"}},
        "otel": {"endpoint": "https://otel.example.com", "samplerArg": 0.25, "sampler": "traceidratio"},
    },
    "hpa-custom-metrics": merge(
        HPA,
        REDIS,
        {
            "autoscaling": {
                "targetCPUUtilizationPercentage": None,
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            "metric": {"name": "faceid_upstream_in_flight"},
                            "target": {"type": "AverageValue", "averageValue": "64"},
                        },
                    }
                ],
            },
            "podDisruptionBudget": {"minAvailable": "50%"},
        },
    ),
    "everything": merge(
        HPA,
        REDIS,
        MTLS,
        TOKENS,
        ENCRYPTION,
        SPEND,
        {
            "reloadInterval": "30s",
            "connections": {
                "maxConcurrentStreams": 64,
                "keepaliveInterval": "1m 30s",
                "maxConnectionAge": "10m",
                "handshakeTimeout": "0s",
                "idleTimeout": "15m",
                "maxConnections": 4294967295,
            },
            "credentials": {"mode": "file", **INLINE_KEYS},
            "image": {
                "repository": "registry.example.com/faceid-gateway",
                "digest": "sha256:" + "ab" * 32,
            },
            "imagePullSecrets": [{"name": "registry"}],
            "config": {
                "endpoint": ENDPOINTS[:2],
                "ejectAfter": 3,
                "ejectFor": "1m",
                "region": "ap-singapore",
                "logLevel": "info,faceid_gateway=debug",
                "batchMaxItems": 1000000,
            },
            "otel": {
                "endpoint": "http://otel-collector:4318",
                "protocol": "http/protobuf",
                "sampler": "parentbased_traceidratio",
                "samplerArg": "0.1",
                "resourceAttributes": {"deployment.environment": "staging"},
            },
            "extraEnv": [
                {"name": "RUST_BACKTRACE", "value": "1"},
                {
                    "name": "NODE_NAME",
                    "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                },
            ],
            "podAnnotations": {"example.com/team": "identity"},
            "podLabels": {"example.com/tier": "backend"},
            "commonLabels": {"example.com/owner": "identity"},
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [
                {"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"}
            ],
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}
                                ]
                            }
                        ]
                    }
                }
            },
            "priorityClassName": "high",
            "serviceAccount": {"annotations": {"example.com/role": "gateway"}},
            "service": {"annotations": {"example.com/lb": "internal"}},
            "networkPolicy": {
                "enabled": True,
                "ingress": {
                    "from": [
                        {"namespaceSelector": {"matchLabels": {"team": "payments"}}},
                        {"podSelector": {"matchLabels": {"app": "onboarding"}}},
                    ]
                },
                "egress": {
                    "redis": {"to": [{"podSelector": {"matchLabels": {"app": "redis"}}}]},
                    "extra": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 8443}]}],
                },
            },
            "serviceMonitor": {"enabled": True},
            "drainTimeoutSeconds": 45,
        },
    ),
}

KUBE_VERSIONS = ["1.30", ".".join(kubernetes_validate.latest_version().split(".")[:2])]


@pytest.fixture(scope="module")
def rendered(render):
    """Every matrix entry rendered once."""
    return {case: render(values) for case, values in MATRIX.items()}


# ---------------------------------------------------------------- lint, schema


@pytest.mark.parametrize("case", MATRIX)
def test_strict_lint_passes(case):
    report = helm.lint(str(CHART), merge(BASE_VALUES, MATRIX[case]), strict=True, kube_version="v1.30.0")
    assert report["errors"] == [], report
    # Only informational messages (severity 1, e.g. "icon is recommended").
    assert [m for m in report["messages"] if m["severity"] > 1] == [], report


@pytest.mark.parametrize("case", MATRIX)
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_object_validates_against_kubernetes(rendered, case, kube_version):
    objects = rendered[case].objects
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Only the Prometheus Operator CRD has no built-in schema.
            assert obj["kind"] == "ServiceMonitor", obj["kind"]
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{case}: {obj['kind']}/{obj['metadata']['name']} on {kube_version}: {error}")


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCount": "three"},
        {"simulate": "yes"},
        {"replicaCuont": 2},
        {"rateLimit": {"perSecnd": 50}},
        {"rateLimit": {"perSecond": 0}},
        {"rateLimit": {"fallbackShare": 0}},
        {"rateLimit": {"redis": {"url": "localhost:6379"}}},
        {"rateLimit": {"redis": {"url": "http://redis:6379"}}},
        {"rateLimit": {"redis": {"url": "rediss//redis:6380"}}},
        {"rateLimit": {"redis": {"url": "redis+tls://redis:6380"}}},
        {"rateLimit": {"redis": {"ca": {"bundle": "-----BEGIN CERTIFICATE-----"}}}},
        {"rateLimit": {"redis": {"ca": {"existingSecret": "Redis_CA"}}}},
        {"rateLimit": {"redis": {"ca": {"existingConfigMap": "ca", "key": "a/b"}}}},
        {"rateLimit": {"redis": {"ca": "redis-ca"}}},
        {"credentials": {"mode": "vault"}},
        {"credentials": {"secretID": "x"}},
        {"config": {"upstreamTimeout": "ten seconds"}},
        {"config": {"logFormat": "xml"}},
        {"config": {"matchThreshold": 101}},
        {"config": {"maxAttempts": 0}},
        {"drainTimeoutSeconds": "20s"},
        {"service": {"grpcPort": 70000}},
        {"image": {"digest": "latest"}},
        {"autoscaling": {"enabeld": True}},
        {"networkPolicy": {"ingress": {"form": []}}},
        {"networkPolicy": {"ingress": {"from": [{"podSelectr": {}}]}}},
        {"securityContext": {"runAsUser": "root"}},
        {"extraEnv": [{"value": "no name"}]},
        {"otel": {"protocol": "udp"}},
        {"reloadInterval": "5"},
        {"credentials": {"reloadInterval": "soon"}},
        {"tls": {"enabled": "yes"}},
        {"tls": {"key": "-----BEGIN PRIVATE KEY-----"}},  # no inline key material
        {"tls": {"existingSecret": "Gateway_TLS"}},
        {"tls": {"clientCA": {"existingSecret": "ca", "key": "a/b"}}},
        {"tls": {"clientCA": {"bundle": "-----BEGIN CERTIFICATE-----"}}},
        {"auth": {"tokens": "billing 9f86d081"}},  # tokens only from a Secret
        {"auth": {"tokensSecret": {"nmae": "callers"}}},
        {"auth": {"allowReflection": "true"}},
        {"connections": {"maxConcurrentStreams": 0}},
        {"connections": {"maxConcurrentStreams": "256"}},
        {"connections": {"keepaliveInterval": "30"}},
        {"connections": {"maxConnectionAge": "five minutes"}},
        {"connections": {"handshakeTimeout": "10"}},
        {"connections": {"idleTimeout": "five minutes"}},
        {"connections": {"idleTimeout": True}},
        {"connections": {"maxConnections": 0}},
        {"connections": {"maxConnections": "10000"}},
        {"connections": {"maxConnections": 4294967296}},
        {"connections": {"maxConnectionsPerIp": 10}},
        {"upstreamEncryption": {"mode": "on"}},
        {"upstreamEncryption": {"mode": True}},
        {"upstreamEncryption": {"mode": "Response"}},
        {"upstreamEncryption": {"algorithm": "aes-128-cbc"}},
        {"upstreamEncryption": {"algorithm": "sm4"}},
        {"upstreamEncryption": {"tencentPublicKeys": {"rsaPem": "-----BEGIN"}}},
        {"service": {"grpcAppProtocol": "grpc over tls"}},
        {"tests": {"enabled": "no"}},
        {"input": {"allowPrivateImageUrls": "true"}},
        {"input": {"allowPrivateUrls": True}},
        {"tests": {"tls": {"clientCert": "x"}}},
        {"credentials": {"mode": "oidc", "oidc": {"roleArn": "arn:aws:iam::1:role/x"}}},
        {"credentials": {"oidc": {"tokenExpirationSeconds": 60}}},
        {"credentials": {"oidc": {"webhook": "yes"}}},
        {"credentials": {"oidc": {"roleARN": ROLE_ARN}}},
        {"credentials": {"roleArn": "faceid-gateway"}},
        {"credentials": {"roleDuration": "2 hours"}},
        {"credentials": {"roleSessionName": "with space"}},
        {"credentials": {"stsEndpoint": "sts.tencentcloudapi.com"}},
        {"credentials": {"mode": "cvm"}},
        {"networkPolicy": {"egress": {"metadata": {"cidr": "169.254.0.23/32"}}}},
        {"spend": {"budgetDay": 0}},
        {"spend": {"budgetMonth": 0}},
        {"spend": {"budgetDay": -1}},
        {"spend": {"budgetMonth": 2.5}},
        {"spend": {"budgetDay": "5000"}},
        {"spend": {"budgetDay": 9007199254740992}},
        {"spend": {"idempotencyTtl": "0s"}},
        {"spend": {"idempotencyTtl": "0"}},
        {"spend": {"idempotencyTtl": 0}},
        {"spend": {"idempotencyTtl": "a day"}},
        {"spend": {"idempotencyCacheSize": 0}},
        {"spend": {"idempotencyCacheSize": "256Mi"}},
        {"spend": {"billableResults": "Success"}},
        {"spend": {"billableResults": ["Success,FailedOperation.IdNameMisMatch"]}},
        {"spend": {"billableResults": [""]}},
        {"spend": {"billableResults": ["Success", "Success"]}},
        {"spend": {"budget": {"day": 10}}},
        {"config": {"endpoint": "faceid.intl.tencentcloudapi.com"}},
        {"config": {"endpoint": ""}},
        {"config": {"endpoint": []}},
        {"config": {"endpoint": ["https://faceid.intl.tencentcloudapi.com", "faceid.ap-singapore.tencentcloudapi.com"]}},
        {"config": {"endpoint": ["https://faceid.intl.tencentcloudapi.com", "ftp://faceid.example"]}},
        {"config": {"endpoint": ["https://faceid.intl.tencentcloudapi.com", ""]}},
        {"config": {"endpoint": ["https://faceid.intl.tencentcloudapi.com,https://faceid.ap-singapore.tencentcloudapi.com"]}},
        {"config": {"endpoint": "https://faceid.intl.tencentcloudapi.com,https://faceid.ap-singapore.tencentcloudapi.com"}},
        {"config": {"endpoint": ["https://faceid.intl.tencentcloudapi.com", " https://faceid.ap-singapore.tencentcloudapi.com"]}},
        {"config": {"endpoint": ["https://faceid.intl.tencentcloudapi.com", "https://faceid.intl.tencentcloudapi.com"]}},
        {"config": {"endpoint": [443]}},
        {"config": {"endpoints": ["https://faceid.intl.tencentcloudapi.com"]}},
        {"config": {"ejectAfter": 0}},
        {"config": {"ejectAfter": "5"}},
        {"config": {"ejectAfter": 4294967296}},
        {"config": {"ejectFor": "0s"}},
        {"config": {"ejectFor": "30"}},
        {"config": {"ejectFor": 30}},
    ],
    ids=lambda bad: yaml.safe_dump(bad, default_flow_style=True, width=200).strip(),
)
def test_schema_rejects_bad_values(chart, render, bad):
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)
    # The schema also guards rendering (install, upgrade, template).
    with pytest.raises(helm.HelmValuesError):
        render(bad)


# Kubernetes objects passed through as they are: the fields listed in the
# schema are checked there, any other field Kubernetes knows is let through
# (Kubernetes checks it at install; the tests validate every rendering).
PASS_THROUGH = {
    "values.podSecurityContext",
    "values.securityContext",
    "values.resources.requests",
    "values.resources.limits",
    "values.probes.startup",
    "values.probes.liveness",
    "values.probes.readiness",
}


def test_schema_covers_every_default_value():
    """Each key of values.yaml is declared in values.schema.json (and objects
    there refuse unknown keys, but the Kubernetes objects passed through), so
    the schema and the defaults stay in step."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    definitions = schema["definitions"]

    def resolve(node):
        while "$ref" in node:
            node = definitions[node["$ref"].rsplit("/", 1)[1]]
        return node

    def walk(value, node, path):
        node = resolve(node)
        if isinstance(value, dict) and "properties" in node:
            if path in PASS_THROUGH:
                assert node.get("additionalProperties") is not False, f"{path} refuses Kubernetes fields"
            else:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in the schema"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "values")


# ------------------------------------------------------------ the pod template


def _tls_on(case: str) -> bool:
    return bool(MATRIX[case].get("tls", {}).get("enabled"))


def test_the_matrix_covers_both_probe_kinds():
    assert {_tls_on(case) for case in MATRIX} == {True, False}


@pytest.mark.parametrize("case", MATRIX)
def test_probes_use_grpc_health_without_tls_and_http_with_it(rendered, case):
    container = rendered[case].container
    if not _tls_on(case):
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = container[probe]
            assert spec["grpc"]["port"] == 50051, probe
            assert not {"httpGet", "exec", "tcpSocket"} & spec.keys(), probe
        assert container["livenessProbe"]["grpc"]["service"] == ""
        assert container["startupProbe"]["grpc"]["service"] == ""
        assert container["readinessProbe"]["grpc"]["service"] == "faceid.v1.IdCardVerificationService"
        return
    # The kubelet's gRPC probe cannot speak TLS: the plain-HTTP admin port
    # answers instead (/healthz = process up, /readyz = 503 once draining).
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        spec = container[probe]
        assert spec["httpGet"] == {"path": path, "port": "metrics"}, probe
        assert not {"grpc", "exec", "tcpSocket"} & spec.keys(), probe
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == 9090
    # Probe timing values still apply.
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert container["startupProbe"]["failureThreshold"] == 30


def test_pods_are_locked_down(rendered):
    for case, out in rendered.items():
        pod = out.pod_spec
        assert pod["automountServiceAccountToken"] is False, case
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] == 65532, case
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, case
        sc = out.container["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, case
        assert sc["readOnlyRootFilesystem"] is True, case
        assert sc["allowPrivilegeEscalation"] is False, case
        assert sc["privileged"] is False, case
        assert sc["capabilities"] == {"drop": ["ALL"]}, case
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, case
        # The one writable place.
        mounts = {m["name"]: m for m in out.container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"], case
        resources = out.container["resources"]
        assert resources["requests"]["cpu"] and resources["requests"]["memory"], case
        assert resources["limits"]["memory"], case


def test_the_container_runs_serve_with_the_image_entrypoint(rendered):
    out = rendered["defaults"]
    assert out.container["args"] == ["serve"]
    assert "command" not in out.container
    assert out.container["image"] == "registry.example.com/faceid-gateway:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in out.container["ports"]}
    assert ports == {"grpc": 50051, "metrics": 9090}
    pinned = rendered["everything"].container["image"]
    assert pinned == "registry.example.com/faceid-gateway@sha256:" + "ab" * 32


def test_pods_spread_over_zones_and_nodes(rendered):
    constraints = rendered["defaults"].pod_spec["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in constraints] == [
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    ]
    for c in constraints:
        assert c["whenUnsatisfiable"] == "ScheduleAnyway"
        assert c["labelSelector"]["matchLabels"] == {
            "app.kubernetes.io/name": "faceid-gateway",
            "app.kubernetes.io/instance": RELEASE,
        }


def test_grace_period_outlasts_preStop_and_drain(render, rendered):
    out = rendered["defaults"]
    assert out.config["FACEID_DRAIN_TIMEOUT"] == "20s"
    assert out.container["lifecycle"]["preStop"]["sleep"]["seconds"] == 5
    assert out.pod_spec["terminationGracePeriodSeconds"] == 5 + 20 + 10

    out = rendered["everything"]
    assert out.config["FACEID_DRAIN_TIMEOUT"] == "45s"
    assert out.pod_spec["terminationGracePeriodSeconds"] == 5 + 45 + 10

    out = render({"drainTimeoutSeconds": 30, "preStopSleepSeconds": 0, "terminationGracePeriodSeconds": 31})
    assert out.pod_spec["terminationGracePeriodSeconds"] == 31
    assert "lifecycle" not in out.container

    for values in (
        {"terminationGracePeriodSeconds": 25},  # = 5 + 20: nothing left for the kill
        {"drainTimeoutSeconds": 60, "terminationGracePeriodSeconds": 30},
    ):
        with pytest.raises(helm.HelmRenderError, match="must be larger than preStopSleepSeconds"):
            render(values)


# -------------------------------------------------------------- configuration


def test_settings_reach_the_process_through_a_configmap(rendered):
    out = rendered["defaults"]
    assert out.container["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    config = out.config
    expected = {
        "FACEID_LISTEN": "0.0.0.0:50051",
        "FACEID_ADMIN_LISTEN": "0.0.0.0:9090",
        "FACEID_ENDPOINT": "https://faceid.intl.tencentcloudapi.com",
        "FACEID_RATE_LIMIT": "100",
        "FACEID_RATE_BURST": "0",
        "FACEID_RATE_LIMIT_MAX_WAIT": "5s",
        "FACEID_RATE_LIMIT_REDIS_KEY": "faceid-gateway:rate-limit:CheckIdCardInformation",
        "FACEID_RATE_LIMIT_FALLBACK_SHARE": "0.25",
        "FACEID_MAX_IN_FLIGHT": "128",
        "FACEID_MAX_ATTEMPTS": "3",
        "FACEID_UPSTREAM_TIMEOUT": "10s",
        "FACEID_MATCH_THRESHOLD": "70",
        "FACEID_DRAIN_TIMEOUT": "20s",
        "FACEID_LOG_FORMAT": "json",
        "FACEID_BATCH_CONCURRENCY": "16",
        "FACEID_BATCH_GLOBAL_CONCURRENCY": "32",
        "OTEL_SERVICE_NAME": "faceid-gateway",
    }
    assert {k: config.get(k) for k in expected} == expected
    # Unset options stay unset, so the binary's own defaults apply.
    for absent in (
        "FACEID_REGION",
        "FACEID_RATE_LIMIT_REDIS",
        "FACEID_SIMULATE",
        "FACEID_BATCH_MAX_ITEMS",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        assert absent not in config
    # Every value is a string (ConfigMap data), never a YAML number or bool.
    assert all(isinstance(v, str) for v in config.values())


def test_optional_settings_are_mapped(rendered):
    config = rendered["everything"].config
    assert config["FACEID_REGION"] == "ap-singapore"
    assert config["FACEID_BATCH_MAX_ITEMS"] == "1000000"  # never 1e+06
    assert config["FACEID_RATE_LIMIT_REDIS"] == "redis://redis.cache.svc:6379/0"
    assert config["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert config["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert config["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert config["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    assert config["RUST_LOG"] == "info,faceid_gateway=debug"
    env = rendered["everything"].env
    assert env["RUST_BACKTRACE"] == {"name": "RUST_BACKTRACE", "value": "1"}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"].split(",")
    assert "k8s.pod.name=$(K8S_POD_NAME)" in attributes
    assert "deployment.environment=staging" in attributes


def test_redis_url_from_a_secret_stays_out_of_the_configmap(rendered):
    out = rendered["hpa-redis-from-secret"]
    assert "FACEID_RATE_LIMIT_REDIS" not in out.config
    assert out.env["FACEID_RATE_LIMIT_REDIS"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-url", "key": "url"}
    }


@pytest.mark.parametrize("scheme", ["redis", "rediss"])
def test_a_redis_url_with_a_password_is_refused(render, scheme):
    url = f"{scheme}://:{FAKE_REDIS_PASSWORD}@redis:6379/0"
    with pytest.raises(helm.HelmRenderError, match="rateLimit.redis.existingSecret") as error:
        render(merge(HPA, {"rateLimit": {"redis": {"url": url}}}))
    assert FAKE_REDIS_PASSWORD not in str(error.value)


def test_checksum_rolls_pods_when_a_setting_changes(render):
    base = render().pod_annotations["checksum/config"]
    assert render().pod_annotations["checksum/config"] == base  # deterministic
    changed = render({"config": {"maxAttempts": 5}}).pod_annotations["checksum/config"]
    assert changed != base
    assert render({"drainTimeoutSeconds": 25}).pod_annotations["checksum/config"] != base


def test_secret_checksum_follows_env_keys_but_not_the_reloaded_file(render):
    env_a = render({"credentials": dict(INLINE_KEYS)}).pod_annotations
    env_b = render({"credentials": {**INLINE_KEYS, "secretKey": "fakeKey-rotated-0000"}}).pod_annotations
    assert env_a["checksum/secret"] != env_b["checksum/secret"]
    assert env_a["checksum/config"] == env_b["checksum/config"]

    # Mode file: the gateway re-reads the mounted file, so a rotation must
    # not restart the pods (the pod template stays identical).
    file_a = render({"credentials": {"mode": "file", **INLINE_KEYS}})
    file_b = render({"credentials": {"mode": "file", **INLINE_KEYS, "secretKey": "fakeKey-rotated-0000"}})
    assert "checksum/secret" not in file_a.pod_annotations
    assert file_a.deployment == file_b.deployment
    assert file_a.one("Secret") != file_b.one("Secret")


# ----------------------------------------------------------------- credentials


def _b64_cores(secret: str) -> set[str]:
    """Substrings every base64 encoding containing `secret` must contain, for
    each of the three byte alignments it can start at."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret.encode()).decode()
        start = 4 if offset else 0  # the first quantum mixes in foreign bytes
        cores.add(encoded[start:-4])  # so may the last one
    return cores


FAKES = (FAKE_SECRET_ID, FAKE_SECRET_KEY, FAKE_SESSION_TOKEN)


def _assert_no_key_material(text: str, where: str):
    for fake in FAKES:
        assert fake not in text, f"{fake} leaked into {where}"
        for core in _b64_cores(fake):
            assert core not in text, f"base64 of {fake} leaked into {where}"


@pytest.mark.parametrize("case", ["chart-secret-env", "chart-secret-file", "everything"])
def test_key_material_appears_only_in_the_secret(rendered, case):
    out = rendered[case]
    _assert_no_key_material(out.notes, "NOTES.txt")
    secrets = out.all("Secret")
    assert len(secrets) == 1
    for obj in out.objects:
        if obj["kind"] == "Secret":
            continue
        text = yaml.safe_dump(obj)
        _assert_no_key_material(text, f"{obj['kind']}/{obj['metadata']['name']}")
        for value in strings_in(obj):
            try:
                decoded = base64.b64decode(value, validate=True).decode("utf-8", "replace")
            except ValueError:
                continue
            _assert_no_key_material(decoded, f"decoded base64 in {obj['kind']}")

    # The Secret holds them base64-encoded only, never in clear text.
    secret = secrets[0]
    assert "stringData" not in secret
    _assert_no_key_material(yaml.safe_dump(secret["metadata"]), "the Secret's metadata")
    for value in secret["data"].values():
        for fake in FAKES:
            assert fake not in value
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    if MATRIX[case]["credentials"].get("mode") == "file":
        assert decoded == {
            "credentials.ini": (
                f"[default]\nsecret_id = {FAKE_SECRET_ID}\nsecret_key = {FAKE_SECRET_KEY}\n"
                f"token = {FAKE_SESSION_TOKEN}\n"
            )
        }
    else:
        assert decoded == {
            "TENCENTCLOUD_SECRET_ID": FAKE_SECRET_ID,
            "TENCENTCLOUD_SECRET_KEY": FAKE_SECRET_KEY,
            "TENCENTCLOUD_SESSION_TOKEN": FAKE_SESSION_TOKEN,
        }


def test_env_credentials_come_from_secret_key_refs(rendered):
    for case, secret_name in (
        ("defaults", "faceid-gateway-credentials"),
        ("existing-secret-env", "tencent-keys"),
        ("chart-secret-env", f"{FULLNAME}-credentials"),
    ):
        env = rendered[case].env
        for name in ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_SESSION_TOKEN"):
            assert "value" not in env[name], (case, name)
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret_name and ref["key"] == name, (case, name)
        assert "TENCENTCLOUD_CREDENTIALS_FILE" not in env
    # The token is optional in a Secret the operator manages.
    assert rendered["existing-secret-env"].env["TENCENTCLOUD_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"][
        "optional"
    ]
    assert rendered["defaults"].maybe("Secret") is None
    assert rendered["existing-secret-env"].maybe("Secret") is None


@pytest.mark.parametrize(
    "case, secret_name",
    [("chart-secret-file", f"{FULLNAME}-credentials"), ("existing-secret-file", "tencent-ini")],
)
def test_file_credentials_are_a_read_only_directory_mount(rendered, case, secret_name):
    out = rendered[case]
    env = out.env
    assert env["TENCENTCLOUD_CREDENTIALS_FILE"]["value"] == "/etc/faceid-gateway/credentials/credentials.ini"
    assert not {"TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY"} & env.keys()
    mount = next(m for m in out.container["volumeMounts"] if m["name"] == "credentials")
    # A directory mount (never subPath), so kubelet swaps in updated keys.
    assert mount == {"name": "credentials", "mountPath": "/etc/faceid-gateway/credentials", "readOnly": True}
    volume = next(v for v in out.pod_spec["volumes"] if v["name"] == "credentials")
    assert volume["secret"]["secretName"] == secret_name
    assert volume["secret"]["items"] == [{"key": "credentials.ini", "path": "credentials.ini"}]
    assert volume["secret"]["defaultMode"] == 0o440


def test_simulate_runs_without_credentials(rendered):
    out = rendered["simulate"]
    assert out.container["args"] == ["serve", "--simulate"]
    assert out.config["FACEID_SIMULATE"] == "true"
    assert not [name for name in out.env if name.startswith("TENCENTCLOUD_")]
    assert out.maybe("Secret") is None
    assert [v["name"] for v in out.pod_spec["volumes"]] == ["tmp"]
    assert "SIMULATOR MODE" in out.notes


def test_rendering_without_credentials_fails_clearly(render):
    with pytest.raises(helm.HelmRenderError, match="no Tencent Cloud credentials") as error:
        render({"credentials": {"existingSecret": ""}})
    message = str(error.value)
    assert "credentials.existingSecret" in message and "simulate=true" in message
    with pytest.raises(helm.HelmRenderError, match="must be set together"):
        render({"credentials": {"secretId": FAKE_SECRET_ID}})


# ---------------------------------------------------------------- scaling rule


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 2},
        {"autoscaling": {"enabled": True}},
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}},
    ],
    ids=["replicas-2", "hpa", "hpa-max-1"],
)
def test_scaling_without_a_shared_limit_is_refused(render, values):
    with pytest.raises(helm.HelmRenderError) as error:
        render(values)
    message = str(error.value)
    assert "without a shared rate limit" in message
    assert "100 CheckIdCardInformation calls per second per account" in message
    assert "rateLimit.redis.url" in message and "rateLimit.perReplica=true" in message


def test_per_replica_limits_must_add_up_to_the_account_limit(render):
    with pytest.raises(helm.HelmRenderError, match=r"100 x 3 replicas = 300 exceeds"):
        render({"replicaCount": 3, "rateLimit": {"perReplica": True}})
    with pytest.raises(helm.HelmRenderError, match=r"at most 25"):
        render(merge(HPA, {"rateLimit": {"perReplica": True, "perSecond": 30}}))
    out = render(merge(HPA, {"rateLimit": {"perReplica": True, "perSecond": 25}}))
    assert out.config["FACEID_RATE_LIMIT"] == "25"


def test_scaled_out_renderings(rendered):
    out = rendered["hpa-redis"]
    hpa = out.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert "replicas" not in out.deployment["spec"]  # the HPA owns it
    pdb = out.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 1

    out = rendered["replicas-3-per-replica"]
    assert out.deployment["spec"]["replicas"] == 3
    assert out.maybe("HorizontalPodAutoscaler") is None
    assert out.one("PodDisruptionBudget")

    # One pod: no PDB that would block every node drain.
    assert rendered["defaults"].maybe("PodDisruptionBudget") is None
    assert rendered["defaults"].maybe("HorizontalPodAutoscaler") is None


# ------------------------------------------------------ service and extras


def test_service_speaks_grpc(rendered):
    service = rendered["defaults"].one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["grpc"]["port"] == 50051 and ports["grpc"]["appProtocol"] == "grpc"
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["metrics"]["port"] == 9090 and ports["metrics"]["appProtocol"] == "http"
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "faceid-gateway",
        "app.kubernetes.io/instance": RELEASE,
    }


def test_standard_labels_everywhere(rendered):
    for case, out in rendered.items():
        for obj in out.objects:
            labels = obj["metadata"]["labels"]
            where = (case, obj["kind"])
            assert labels["app.kubernetes.io/instance"] == RELEASE, where
            # The image tag when set (a number from --set is its text), else appVersion.
            assert labels["app.kubernetes.io/version"] == str(MATRIX[case].get("image", {}).get("tag", "0.1.0")), where
            assert labels["app.kubernetes.io/managed-by"] == "Helm", where
            assert labels["app.kubernetes.io/name"].startswith("faceid-gateway"), where
            assert labels["helm.sh/chart"] == "faceid-gateway-0.5.0", where
    template_labels = rendered["everything"].deployment["spec"]["template"]["metadata"]["labels"]
    assert template_labels["example.com/tier"] == "backend"
    assert template_labels["example.com/owner"] == "identity"


def test_service_account_has_no_token(rendered):
    account = rendered["defaults"].one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert rendered["defaults"].pod_spec["serviceAccountName"] == account["metadata"]["name"] == FULLNAME


def test_network_policy(rendered):
    assert rendered["defaults"].maybe("NetworkPolicy") is None
    policy = rendered["network-policy"].one("NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    grpc_rule, metrics_rule = policy["ingress"]
    assert grpc_rule["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert {"podSelector": {}} in grpc_rule["from"]
    assert metrics_rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    # OTLP: the port of otel.endpoint (gRPC, 4317), no other.
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6379, "TCP"), (4317, "TCP")}

    # Chosen peers and extra rules are kept as given.
    policy = rendered["everything"].one("NetworkPolicy")["spec"]
    assert {"namespaceSelector": {"matchLabels": {"team": "payments"}}} in policy["ingress"][0]["from"]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6379, 4318, 8443}
    redis_rule = next(r for r in policy["egress"] if r["ports"][0]["port"] == 6379)
    assert redis_rule["to"] == [{"podSelector": {"matchLabels": {"app": "redis"}}}]


def test_network_policy_opens_only_what_is_configured(render):
    policy = render({"networkPolicy": {"enabled": True}}).one("NetworkPolicy")["spec"]
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {53, 443}
    policy = render({"networkPolicy": {"enabled": True}, "simulate": True}).one("NetworkPolicy")["spec"]
    assert {p["port"] for rule in policy["egress"] for p in rule["ports"]} == {53}


def test_service_monitor_is_gated_by_a_value(rendered):
    assert rendered["defaults"].maybe("ServiceMonitor") is None
    monitor = rendered["service-monitor"].one("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    # It selects the Service that carries the metrics port.
    service = rendered["service-monitor"].one("Service")
    assert monitor["spec"]["selector"]["matchLabels"] == {**service["spec"]["selector"], "faceid-gateway/metrics": "true"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_helm_test_pod_checks_grpc_health(rendered):
    out = rendered["defaults"]
    pod = out.one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("ghcr.io/grpc-ecosystem/grpc-health-probe:")
    assert f"-addr={FULLNAME}:50051" in container["args"]
    assert "-service=faceid.v1.IdCardVerificationService" in container["args"]
    # Its labels must not match the Service's or the Deployment's selector.
    selector = out.one("Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items()
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_notes_show_port_forward_and_grpcurl(rendered):
    notes = rendered["defaults"].notes
    assert f"port-forward service/{FULLNAME} 50051:50051" in notes
    assert "grpcurl -plaintext" in notes and "grpc.health.v1.Health/Check" in notes
    assert "faceid-gateway-credentials" in notes


# --------------------------------------------------------------------- yamllint


# yamllint's relaxed preset, with warnings treated as failures too. Only the
# sequence-indent style may vary: toYaml writes `key:\n- item` while the
# templates indent their own lists, and both are plain YAML.
RELAXED = yamllint_config.YamlLintConfig(
    "extends: relaxed\nrules:\n  indentation:\n    indent-sequences: whatever\n"
)


def _lint(text: str, name: str):
    problems = list(yamllint_linter.run(text, RELAXED))
    assert problems == [], f"{name}: " + "; ".join(f"{p.line}:{p.column} {p.desc} ({p.rule})" for p in problems)


@pytest.mark.parametrize("name", ["values.yaml", "Chart.yaml"])
def test_yamllint_chart_files(name):
    _lint((CHART / name).read_text(), name)


@pytest.mark.parametrize("case", MATRIX)
def test_yamllint_rendered_output(rendered, case):
    _lint(rendered[case].yaml_text, f"rendered {case}")


def test_no_template_leaves_stray_whitespace(rendered):
    for case, out in rendered.items():
        for path, text in out.files.items():
            assert not re.search(r"[ \t]+$", text, re.MULTILINE), (case, path)


def test_notes_warn_when_the_redis_fallback_would_exceed_the_limit(render):
    quiet = render(merge(HPA, REDIS))  # 4 replicas x 0.25 = the limit, no more
    assert "WARNING" not in quiet.notes
    loud = render(merge(HPA, REDIS, {"autoscaling": {"maxReplicas": 6}}))
    assert "WARNING" in loud.notes and "rateLimit.fallbackShare=0.25" in loud.notes


def test_chart_packages(tmp_path):
    helm.package(str(CHART), destination=str(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["faceid-gateway-0.5.0.tgz"]


# ------------------------------------- TLS, caller tokens, encryption, limits

# Variables that name a file the gateway reads. Each must point into a
# read-only volume mounted whole (no subPath), never carry the content.
FILE_VARS = (
    "TENCENTCLOUD_CREDENTIALS_FILE",
    "FACEID_TLS_CERT",
    "FACEID_TLS_KEY",
    "FACEID_TLS_CLIENT_CA",
    "FACEID_AUTH_TOKENS_FILE",
    "FACEID_TENCENT_RSA_PUBLIC_KEY",
    "FACEID_TENCENT_SM2_PUBLIC_KEY",
    "FACEID_RATE_LIMIT_REDIS_CA",
)
CONFIG_RS = CHART.parents[1] / "src" / "config" / "cli.rs"


def _volume_items(volume: dict) -> dict[str, tuple[str, str, str]]:
    """path in the volume -> (kind, object name, key) for every projected key."""
    out = {}

    def add(kind, source, name_field):
        for item in source.get("items", []):
            out[item["path"]] = (kind, source[name_field], item["key"])

    if "secret" in volume:
        add("secret", volume["secret"], "secretName")
    if "configMap" in volume:
        add("configMap", volume["configMap"], "name")
    for source in volume.get("projected", {}).get("sources", []):
        if "secret" in source:
            add("secret", source["secret"], "name")
        if "configMap" in source:
            add("configMap", source["configMap"], "name")
    return out


def mounted_file(out, path: str) -> tuple[str, str, str]:
    """Asserts `path` lies in a read-only whole-volume mount of the gateway
    container and returns where its content comes from (kind, name, key)."""
    mounts = [m for m in out.container["volumeMounts"] if path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert len(mounts) == 1, (path, out.container["volumeMounts"])
    (mount,) = mounts
    assert mount.get("readOnly") is True, mount
    assert "subPath" not in mount and "subPathExpr" not in mount, mount  # kubelet could not update it
    volume = next(v for v in out.pod_spec["volumes"] if v["name"] == mount["name"])
    relative = path[len(mount["mountPath"].rstrip("/")) + 1 :]
    items = _volume_items(volume)
    assert relative in items, (path, items)
    return items[relative]


def file_sources(out) -> dict[str, tuple[str, str, str]]:
    env = out.env
    return {name: mounted_file(out, env[name]["value"]) for name in FILE_VARS if name in env}


@pytest.mark.parametrize("case", MATRIX)
def test_file_variables_point_into_read_only_mounts(rendered, case):
    out = rendered[case]
    for name in FILE_VARS:
        if name in out.env:
            entry = out.env[name]
            assert set(entry) == {"name", "value"}, entry  # a plain path, not a secretKeyRef
            assert entry["value"].startswith("/etc/faceid-gateway/"), entry
        # Paths live next to their volumes, not in the ConfigMap.
        assert name not in out.config, name
    file_sources(out)
    # Every volume but /tmp is mounted read-only.
    for mount in out.container["volumeMounts"]:
        assert mount["name"] == "tmp" or mount.get("readOnly") is True, (case, mount)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("defaults", {}),
        (
            "tls",
            {
                "FACEID_TLS_CERT": ("secret", "gw-tls", "tls.crt"),
                "FACEID_TLS_KEY": ("secret", "gw-tls", "tls.key"),
            },
        ),
        (
            "tls-mtls-secret",
            {
                "FACEID_TLS_CERT": ("secret", "gw-tls", "tls.crt"),
                "FACEID_TLS_KEY": ("secret", "gw-tls", "tls.key"),
                "FACEID_TLS_CLIENT_CA": ("secret", "gw-client-ca", "bundle.pem"),
            },
        ),
        (
            "tls-mtls-configmap",
            {
                "FACEID_TLS_CERT": ("secret", "gw-tls", "tls.crt"),
                "FACEID_TLS_KEY": ("secret", "gw-tls", "tls.key"),
                "FACEID_TLS_CLIENT_CA": ("configMap", "trust-bundle", "ca.crt"),
            },
        ),
        ("tokens", {"FACEID_AUTH_TOKENS_FILE": ("secret", "gw-callers", "tokens.txt")}),
        (
            "encryption",
            {
                "FACEID_TENCENT_RSA_PUBLIC_KEY": ("configMap", "tencent-keys", "rsa.pem"),
                "FACEID_TENCENT_SM2_PUBLIC_KEY": ("configMap", "tencent-keys", "sm2-2026.pem"),
            },
        ),
        ("encryption-rsa-only", {"FACEID_TENCENT_RSA_PUBLIC_KEY": ("configMap", "tencent-keys", "rsa.pem")}),
        ("redis-tls-ca-secret", {"FACEID_RATE_LIMIT_REDIS_CA": ("secret", "redis-ca", "ca.pem")}),
        ("redis-tls-ca-configmap", {"FACEID_RATE_LIMIT_REDIS_CA": ("configMap", "trust-bundle", "ca.crt")}),
        (
            "everything",
            {
                "TENCENTCLOUD_CREDENTIALS_FILE": ("secret", f"{FULLNAME}-credentials", "credentials.ini"),
                "FACEID_TLS_CERT": ("secret", "gw-tls", "tls.crt"),
                "FACEID_TLS_KEY": ("secret", "gw-tls", "tls.key"),
                "FACEID_TLS_CLIENT_CA": ("secret", "gw-client-ca", "bundle.pem"),
                "FACEID_AUTH_TOKENS_FILE": ("secret", "gw-callers", "tokens.txt"),
                "FACEID_TENCENT_RSA_PUBLIC_KEY": ("configMap", "tencent-keys", "rsa.pem"),
                "FACEID_TENCENT_SM2_PUBLIC_KEY": ("configMap", "tencent-keys", "sm2-2026.pem"),
            },
        ),
    ],
)
def test_mounted_files_come_from_the_named_objects(rendered, case, expected):
    assert file_sources(rendered[case]) == expected


def test_tls_volume_is_one_read_only_projected_directory(rendered):
    out = rendered["tls-mtls-configmap"]
    mount = next(m for m in out.container["volumeMounts"] if m["name"] == "tls")
    assert mount == {"name": "tls", "mountPath": "/etc/faceid-gateway/tls", "readOnly": True}
    volume = next(v for v in out.pod_spec["volumes"] if v["name"] == "tls")
    assert volume["projected"]["defaultMode"] == 0o440  # group-readable through fsGroup 65532
    assert out.pod_spec["securityContext"]["fsGroup"] == 65532
    tokens = next(v for v in rendered["tokens"].pod_spec["volumes"] if v["name"] == "auth-tokens")
    assert tokens["secret"]["defaultMode"] == 0o440
    assert "FACEID_TLS_CLIENT_CA" not in rendered["tls"].env


@pytest.mark.parametrize(
    "case", ["tls", "tls-mtls-secret", "tokens", "encryption", "redis-tls-ca-secret", "redis-tls-ca-configmap", "everything"]
)
def test_watched_files_roll_no_pods(rendered, case):
    """Renewed certificates and edited tokens are re-read by the gateway, so
    no checksum of them (the chart cannot see them anyway) sits on the pods."""
    annotations = rendered[case].pod_annotations
    assert [k for k in annotations if k.startswith("checksum/")] == ["checksum/config"]


PEM_OR_HASH = re.compile(r"-----BEGIN|PRIVATE KEY|\bfgw_[A-Za-z0-9_-]+|\b[0-9a-f]{64}\b")


@pytest.mark.parametrize("case", MATRIX)
def test_no_key_material_in_configmaps_or_env_values(rendered, case):
    out = rendered[case]
    for cm in out.all("ConfigMap"):
        for key, value in cm["data"].items():
            assert not PEM_OR_HASH.search(value), (key, value)
    for entry in out.container.get("env", []):
        value = entry.get("value", "")
        assert not PEM_OR_HASH.search(value), entry
    # The chart makes no TLS, token or public-key object: it only points at yours.
    tencent_keys = {"TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY", "TENCENTCLOUD_SESSION_TOKEN", "credentials.ini"}
    for obj in out.all("Secret"):
        assert set(obj["data"]) <= tencent_keys
    assert [cm["metadata"]["name"] for cm in out.all("ConfigMap")] == [FULLNAME]


def test_serve_variables_exist_in_the_binary(rendered):
    """Every FACEID_* variable the chart sets is one `serve` reads (an old or
    misspelt name, such as FACEID_CREDENTIALS_RELOAD_INTERVAL, is ignored by
    the binary without a word)."""
    assert CONFIG_RS.exists(), f"{CONFIG_RS} (the binary's flags) is not next to the chart"
    source = CONFIG_RS.read_text()
    serve = source[source.index("pub struct ServeArgs") : source.index("impl ServeArgs")]
    known = set(re.findall(r'env = "(FACEID_[A-Z0-9_]+)"', serve))
    assert "FACEID_RELOAD_INTERVAL" in known
    for case, out in rendered.items():
        names = set(out.config) | set(out.env)
        for name in names:
            if name.startswith("FACEID_"):
                assert name in known, (case, name)


def test_reload_interval_governs_every_watched_file(render, rendered):
    for case, out in rendered.items():
        assert "FACEID_CREDENTIALS_RELOAD_INTERVAL" not in out.config, case
    assert rendered["defaults"].config["FACEID_RELOAD_INTERVAL"] == "5s"
    assert rendered["everything"].config["FACEID_RELOAD_INTERVAL"] == "30s"
    assert "DEPRECATED" not in rendered["everything"].notes
    # Values saved by an older release (credentials.reloadInterval) still
    # work, win, and the notes ask for the new name.
    old = render({"credentials": {"reloadInterval": "10s"}})
    assert old.config["FACEID_RELOAD_INTERVAL"] == "10s"
    assert "DEPRECATED: credentials.reloadInterval=10s" in old.notes and "reloadInterval" in old.notes


def test_new_settings_default_to_the_binary_defaults(rendered):
    config = rendered["defaults"].config
    assert config["FACEID_UPSTREAM_ENCRYPTION"] == "off"
    assert config["FACEID_ENCRYPTION_ALGORITHM"] == "aes-256-cbc"
    for absent in (
        "FACEID_MAX_CONCURRENT_STREAMS",
        "FACEID_KEEPALIVE_INTERVAL",
        "FACEID_MAX_CONNECTION_AGE",
        "FACEID_HANDSHAKE_TIMEOUT",
        "FACEID_IDLE_TIMEOUT",
        "FACEID_MAX_CONNECTIONS",
        "FACEID_AUTH_ALLOW_REFLECTION",
        "FACEID_ALLOW_PRIVATE_IMAGE_URLS",
    ):
        assert absent not in config
    for absent in FILE_VARS:
        assert absent not in rendered["defaults"].env
    assert [v["name"] for v in rendered["defaults"].pod_spec["volumes"]] == ["tmp"]


def test_connection_and_encryption_settings_are_mapped(rendered):
    config = rendered["connections-hpa"].config
    assert config["FACEID_MAX_CONCURRENT_STREAMS"] == "100"
    assert config["FACEID_KEEPALIVE_INTERVAL"] == "20s"
    assert config["FACEID_MAX_CONNECTION_AGE"] == "5m"
    assert config["FACEID_HANDSHAKE_TIMEOUT"] == "5s"
    assert config["FACEID_IDLE_TIMEOUT"] == "0"  # off
    assert config["FACEID_MAX_CONNECTIONS"] == "2000"
    config = rendered["everything"].config
    assert config["FACEID_MAX_CONCURRENT_STREAMS"] == "64"
    assert config["FACEID_KEEPALIVE_INTERVAL"] == "1m 30s"
    assert config["FACEID_MAX_CONNECTION_AGE"] == "10m"
    assert config["FACEID_HANDSHAKE_TIMEOUT"] == "0s"  # off
    assert config["FACEID_IDLE_TIMEOUT"] == "15m"
    assert config["FACEID_MAX_CONNECTIONS"] == "4294967295"  # never 4.294967295e+09
    assert config["FACEID_UPSTREAM_ENCRYPTION"] == "response"
    assert config["FACEID_ENCRYPTION_ALGORITHM"] == "sm4-gcm"
    assert rendered["encryption-rsa-only"].config["FACEID_UPSTREAM_ENCRYPTION"] == "fields"
    assert rendered["tokens"].config["FACEID_AUTH_ALLOW_REFLECTION"] == "true"
    assert "FACEID_AUTH_ALLOW_REFLECTION" not in rendered["tls-tokens"].config


def test_a_bare_yaml_off_means_off(chart, render):
    values = yaml.safe_load("upstreamEncryption:\n  mode: off\n")  # YAML 1.1: the boolean false
    assert values == {"upstreamEncryption": {"mode": False}}
    chart.validate_schema(values)
    assert render(values).config["FACEID_UPSTREAM_ENCRYPTION"] == "off"
    with pytest.raises(helm.HelmValuesError):
        render(yaml.safe_load("upstreamEncryption:\n  mode: on\n"))


def test_tokens_leave_the_probes_alone(rendered):
    # Health answers without a token, so the gRPC probes stay as they are.
    assert rendered["tokens"].container["readinessProbe"] == rendered["defaults"].container["readinessProbe"]
    assert rendered["tokens"].container["livenessProbe"] == rendered["defaults"].container["livenessProbe"]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"tls": {"enabled": True}}, "tls.enabled=true needs tls.existingSecret"),
        (
            merge(TLS, {"tls": {"clientCA": {"existingSecret": "a", "existingConfigMap": "b"}}}),
            "either tls.clientCA.existingSecret or tls.clientCA.existingConfigMap",
        ),
        ({"tls": {"clientCA": {"existingSecret": "ca"}}}, "mutual TLS, which needs TLS"),
        (merge(TLS, {"tls": {"clientCA": {"existingSecret": "ca"}}}), "tests.tls.clientSecret"),
        (
            {"upstreamEncryption": {"tencentPublicKeys": {"existingConfigMap": "keys"}}},
            "neither rsaKey nor sm2Key",
        ),
        ({"upstreamEncryption": {"tencentPublicKeys": {"sm2Key": "sm2.pem"}}}, "need existingConfigMap"),
        (
            merge(TLS, {"credentials": {"mode": "file", "file": {"mountPath": "/etc/faceid-gateway/tls/"}}}),
            "credentials.file.mountPath=/etc/faceid-gateway/tls is where the chart mounts",
        ),
    ],
    ids=["tls-no-secret", "ca-twice", "ca-without-tls", "mtls-test-no-cert", "keys-cm-empty", "keys-no-cm", "mount-clash"],
)
def test_inconsistent_tls_and_key_settings_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_mtls_without_a_test_certificate_renders_with_tests_off(render):
    out = render(merge(TLS, {"tls": {"clientCA": {"existingSecret": "ca"}}, "tests": {"enabled": False}}))
    assert out.maybe("Pod") is None
    assert "FACEID_TLS_CLIENT_CA" in out.env
    assert "tests.enabled=false" in out.notes and "helm test fg" not in out.notes


def test_helm_test_pod_speaks_tls_when_the_port_does(rendered):
    def test_pod(case):
        (container,) = rendered[case].one("Pod")["spec"]["containers"]
        return rendered[case].one("Pod")["spec"], container

    _, plain = test_pod("defaults")
    assert not [a for a in plain["args"] if a.startswith("-tls")]

    spec, container = test_pod("tls")
    assert {"-tls", "-tls-no-verify"} <= set(container["args"])
    assert f"-addr={FULLNAME}:50051" in container["args"]
    assert not [a for a in container["args"] if a.startswith("-tls-client")]
    assert "volumes" not in spec

    spec, container = test_pod("tls-mtls-secret")
    assert "-tls-client-cert=/etc/faceid-gateway-test/tls.crt" in container["args"]
    assert "-tls-client-key=/etc/faceid-gateway-test/tls.key" in container["args"]
    assert container["volumeMounts"] == [
        {"name": "client-tls", "mountPath": "/etc/faceid-gateway-test", "readOnly": True}
    ]
    (volume,) = spec["volumes"]
    assert volume["secret"]["secretName"] == "gw-test-client"
    assert spec["securityContext"]["fsGroup"] == 65532
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_app_protocol_follows_tls(rendered, render):
    def grpc_port(out):
        return next(p for p in out.one("Service")["spec"]["ports"] if p["name"] == "grpc")

    assert grpc_port(rendered["defaults"])["appProtocol"] == "grpc"
    assert grpc_port(rendered["tls"])["appProtocol"] == "https"
    assert grpc_port(render(merge(TLS, {"service": {"grpcAppProtocol": "tls"}})))["appProtocol"] == "tls"


def test_notes_for_tls_and_tokens(rendered):
    notes = rendered["tls"].notes
    assert "-plaintext" not in notes
    assert f"grpcurl -cacert ca.crt -servername {FULLNAME}.faceid.svc -d" in notes
    assert "(TLS)" in notes and "/healthz" in notes
    notes = rendered["tls-mtls-secret"].notes
    assert "-cert client.crt -key client.key" in notes and "(mutual TLS)" in notes
    assert 'Secret "gw-client-ca"' in notes
    notes = rendered["tls-tokens"].notes
    assert '-H "authorization: Bearer $FACEID_TOKEN" localhost:50051 describe' in notes
    assert "faceid-gateway token --name NAME [--quota N]" in notes and 'Secret "gw-callers"' in notes
    # Health needs no token, so its line carries none.
    health = next(line for line in notes.splitlines() if "Health/Check" in line)
    assert "authorization" not in health
    assert "authorization" not in rendered["defaults"].notes
    assert "except health and reflection" in rendered["tokens"].notes


def _values_of_0_1_0(values):
    del values["spend"]
    for key in ("reloadInterval", "tls", "auth", "connections", "upstreamEncryption", "input"):
        del values[key]
    values["credentials"]["reloadInterval"] = "5s"
    del values["tests"]["enabled"], values["tests"]["tls"]
    del values["rateLimit"]["redis"]["ca"]


def _values_of_0_2_0(values):
    _values_of_0_3_0(values)
    del values["input"]
    del values["rateLimit"]["redis"]["ca"]
    for key in ("handshakeTimeout", "idleTimeout", "maxConnections"):
        del values["connections"][key]


def _values_of_0_3_0(values):
    del values["spend"]


@pytest.mark.parametrize(
    "old_defaults, missing",
    [
        (
            _values_of_0_1_0,
            "reloadInterval, tls, auth, connections, upstreamEncryption, input, rateLimit.redis.ca, spend",
        ),
        (_values_of_0_2_0, "input, rateLimit.redis.ca, spend"),
        (_values_of_0_3_0, "spend"),
    ],
    ids=["from-0.1.0", "from-0.2.0", "from-0.3.0"],
)
def test_reused_values_of_an_older_release_fail_with_advice(tmp_path, old_defaults, missing):
    """`helm upgrade --reuse-values` renders with the old chart's defaults
    (Helm's reuseValues sets chart.Values to them). Rebuild that situation:
    this chart with the defaults of an older version, which lacked keys."""
    import shutil

    old = tmp_path / "faceid-gateway"
    shutil.copytree(CHART, old)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    old_defaults(values)
    (old / "values.yaml").write_text(yaml.safe_dump(values))
    with helm.Chart.load(str(old)) as chart:
        with pytest.raises(helm.HelmRenderError) as error:
            chart.render({}, name=RELEASE, namespace="faceid", is_install=False)
    message = str(error.value)
    assert "--reset-then-reuse-values" in message
    assert f"the values lack {missing}, which chart 0.5.0 defines" in message
    assert "nil pointer" not in message


# ------------------------------------------------------------------ durations

# Every duration the chart hands to the binary: value path -> variable. The
# schema definition of each must match how `serve` parses the variable, so a
# zero the binary refuses at start-up fails `helm install` instead of leaving
# a pod in CrashLoopBackOff, and a zero that means "off" is let through.
DURATION_SETTINGS = {
    "reloadInterval": "FACEID_RELOAD_INTERVAL",
    "credentials.reloadInterval": "FACEID_RELOAD_INTERVAL",
    "rateLimit.maxWait": "FACEID_RATE_LIMIT_MAX_WAIT",
    "rateLimit.redis.timeout": "FACEID_RATE_LIMIT_REDIS_TIMEOUT",
    "config.retryBaseDelay": "FACEID_RETRY_BASE_DELAY",
    "config.retryMaxDelay": "FACEID_RETRY_MAX_DELAY",
    "config.upstreamTimeout": "FACEID_UPSTREAM_TIMEOUT",
    "config.connectTimeout": "FACEID_CONNECT_TIMEOUT",
    "connections.keepaliveInterval": "FACEID_KEEPALIVE_INTERVAL",
    "connections.maxConnectionAge": "FACEID_MAX_CONNECTION_AGE",
    "connections.handshakeTimeout": "FACEID_HANDSHAKE_TIMEOUT",
    "connections.idleTimeout": "FACEID_IDLE_TIMEOUT",
    "credentials.roleDuration": "FACEID_ROLE_DURATION",
    "spend.idempotencyTtl": "FACEID_IDEMPOTENCY_TTL",
    "config.ejectFor": "FACEID_EJECT_FOR",
}
# The binary's parser -> the schema definition that accepts what it accepts.
DURATION_DEFINITION = {
    "parse_positive_duration": "duration",
    "parse_duration": "durationOrZero",
    "parse_duration_or_off": "optionalDurationOrOff",
    # Above zero and at most STS's 12 hours; the schema checks the first.
    "parse_role_duration": "duration",
}
# A value that may also be left empty (no variable: the binary's default)
# uses the optional form of the definition, which accepts the same durations.
OPTIONAL_DEFINITION = {"duration": "optionalDuration"}


def serve_arg_attributes() -> list[str]:
    """The text inside each #[arg(...)] of a ServeArgs field."""
    source = CONFIG_RS.read_text()
    serve = source[source.index("pub struct ServeArgs") : source.index("impl ServeArgs")]
    return re.findall(r"#\[arg\((.*?)\)\]\s*pub \w+", serve, re.S)


def serve_parsers() -> dict[str, str]:
    """FACEID_* variable -> the name of its value parser in ServeArgs."""
    parsers = {}
    for attribute in serve_arg_attributes():
        env = re.search(r'env = "(FACEID_[A-Z0-9_]+)"', attribute)
        parser = re.search(r"value_parser = ([a-z_]+)\b", attribute)
        if env and parser:
            parsers[env.group(1)] = parser.group(1)
    return parsers


def schema_refs() -> dict[str, str]:
    """Dotted value path -> the definition it refers to, for every property
    of values.schema.json that is a $ref."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    found = {}

    def walk(node, path):
        if "$ref" in node:
            found[path] = node["$ref"].rsplit("/", 1)[1]
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}" if path else key)

    walk(schema, "")
    return found


def with_value(path: str, value) -> dict:
    """{"a": {"b": value}} for "a.b"."""
    out = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return out


def test_every_duration_of_the_schema_matches_the_binarys_parser():
    parsers = serve_parsers()
    refs = schema_refs()
    durations = {path: ref for path, ref in refs.items() if "uration" in ref and ref != "prometheusDuration"}
    # A new duration value must be classified here (and so checked below).
    assert set(durations) == set(DURATION_SETTINGS), set(durations) ^ set(DURATION_SETTINGS)
    for path, variable in DURATION_SETTINGS.items():
        assert variable in parsers, (path, variable)
        expected = DURATION_DEFINITION[parsers[variable]]
        assert durations[path] in (expected, OPTIONAL_DEFINITION.get(expected)), (path, variable, parsers[variable])
    # And no duration flag of `serve` is left out of the chart
    # (FACEID_DRAIN_TIMEOUT is set from drainTimeoutSeconds, an integer >= 1).
    for variable, parser in parsers.items():
        if parser in DURATION_DEFINITION and variable != "FACEID_DRAIN_TIMEOUT":
            assert variable in DURATION_SETTINGS.values(), variable
    assert refs["serviceMonitor.interval"] == refs["serviceMonitor.scrapeTimeout"] == "prometheusDuration"


@pytest.mark.parametrize("path", DURATION_SETTINGS)
@pytest.mark.parametrize("zero", ["0s", "0", "0ms", "0m 0s"])
def test_a_zero_duration_is_refused_exactly_where_the_binary_refuses_it(chart, render, path, zero):
    variable = DURATION_SETTINGS[path]
    values = with_value(path, zero)
    parsers = serve_parsers()
    assert variable in parsers, f"{variable} is not a flag of `serve` in {CONFIG_RS}"
    if parsers[variable] in ("parse_positive_duration", "parse_role_duration"):
        with pytest.raises(helm.HelmValuesError, match=re.escape(path.replace(".", "/"))):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError):
            render(values)
    else:
        chart.validate_schema(values)
        assert render(values).config[variable] == zero


@pytest.mark.parametrize(
    "path",
    [
        "rateLimit.maxWait",
        "config.retryBaseDelay",
        "connections.keepaliveInterval",
        "connections.maxConnectionAge",
        "connections.handshakeTimeout",
        "connections.idleTimeout",
    ],
)
def test_a_bare_integer_zero_reaches_the_binary_as_0(render, path):
    """`--set connections.keepaliveInterval=0` arrives as the integer 0: it
    must turn the setting off, not vanish (which would keep the default)."""
    assert render(with_value(path, 0)).config[DURATION_SETTINGS[path]] == "0"


@pytest.mark.parametrize(
    "values",
    [
        {"reloadInterval": "0s"},
        {"reloadInterval": "00ms"},
        {"reloadInterval": 0},
        {"credentials": {"reloadInterval": "0m"}},
        {"config": {"upstreamTimeout": "0s"}},
        {"config": {"upstreamTimeout": 10}},
        {"config": {"connectTimeout": "0ms"}},
        {"rateLimit": {"redis": {"timeout": "0s"}}},
        {"rateLimit": {"maxWait": 5}},
        {"rateLimit": {"maxWait": "-1s"}},
        {"config": {"retryMaxDelay": "2 s"}},
        {"connections": {"keepaliveInterval": 30}},
        {"connections": {"keepaliveInterval": "off"}},
        {"connections": {"maxConnectionAge": "-5m"}},
        {"serviceMonitor": {"interval": "1m 30s"}},
        {"serviceMonitor": {"scrapeTimeout": ""}},
    ],
    ids=lambda bad: yaml.safe_dump(bad, default_flow_style=True, width=200).strip(),
)
def test_schema_rejects_bad_durations(chart, values):
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


@pytest.mark.parametrize(
    "good",
    ["1s", "10s", "100ms", "1m 30s", "1m30s", "0m 30s", "0s 1ms", "2h", "01s"],
)
def test_positive_durations_pass_the_schema(render, good):
    assert render({"config": {"upstreamTimeout": good}}).config["FACEID_UPSTREAM_TIMEOUT"] == good


# --------------------------------------------------------- private image URLs


def test_private_image_urls_stay_refused_unless_switched_on(render, rendered):
    for case, out in rendered.items():
        assert "FACEID_ALLOW_PRIVATE_IMAGE_URLS" not in out.config, case
        assert "allowPrivateImageUrls" not in out.notes, case
    out = render({"input": {"allowPrivateImageUrls": True}})
    assert out.config["FACEID_ALLOW_PRIVATE_IMAGE_URLS"] == "true"
    assert "WARNING: input.allowPrivateImageUrls=true" in out.notes
    assert "Tencent fetches image URLs with your" in out.notes
    assert "FACEID_ALLOW_PRIVATE_IMAGE_URLS" not in render({"input": {"allowPrivateImageUrls": False}}).config


# ---------------------------------------------------------------- Redis TLS


def test_a_rediss_url_without_credentials_goes_in_the_configmap(rendered):
    out = rendered["redis-tls-ca-secret"]
    assert out.config["FACEID_RATE_LIMIT_REDIS"] == "rediss://redis.cache.svc:6380/0"
    assert "FACEID_RATE_LIMIT_REDIS" not in out.env


def test_the_redis_ca_is_a_read_only_directory_mount(rendered):
    for case, volume_source, mode in (
        ("redis-tls-ca-secret", "secret", 0o440),
        ("redis-tls-ca-configmap", "configMap", 0o444),
    ):
        out = rendered[case]
        assert out.env["FACEID_RATE_LIMIT_REDIS_CA"] == {
            "name": "FACEID_RATE_LIMIT_REDIS_CA",
            "value": "/etc/faceid-gateway/redis-ca/ca.crt",
        }
        mount = next(m for m in out.container["volumeMounts"] if m["name"] == "redis-ca")
        # The whole directory (never subPath), so kubelet delivers a new bundle.
        assert mount == {"name": "redis-ca", "mountPath": "/etc/faceid-gateway/redis-ca", "readOnly": True}
        volume = next(v for v in out.pod_spec["volumes"] if v["name"] == "redis-ca")
        assert set(volume) == {"name", volume_source}, case
        assert volume[volume_source]["defaultMode"] == mode, case
        assert len(volume[volume_source]["items"]) == 1, case
    # The URL itself still comes from its own Secret.
    assert rendered["redis-tls-ca-configmap"].env["FACEID_RATE_LIMIT_REDIS"]["valueFrom"] == {
        "secretKeyRef": {"name": "redis-url", "key": "url"}
    }
    for case, out in rendered.items():
        if not MATRIX[case].get("rateLimit", {}).get("redis", {}).get("ca"):
            assert "FACEID_RATE_LIMIT_REDIS_CA" not in out.env, case
            assert "redis-ca" not in [v["name"] for v in out.pod_spec["volumes"]], case


# ------------------------------------------------- the pods' own identity


def _egress_rules(out) -> list[dict]:
    return out.one("NetworkPolicy")["spec"]["egress"]


@pytest.mark.parametrize("case", ["oidc", "oidc-projected-token", "cvm-role"])
def test_identity_modes_store_and_pass_no_key(rendered, case):
    out = rendered[case]
    assert out.maybe("Secret") is None
    assert not [name for name in out.env if name.startswith("TENCENTCLOUD_")]
    assert "checksum/secret" not in out.pod_annotations
    mode = MATRIX[case]["credentials"]["mode"]
    assert out.config["FACEID_CREDENTIALS_SOURCE"] == mode
    # The API token stays off: the OIDC token (when the chart mounts it) is
    # a volume of its own, with the STS audience.
    assert out.pod_spec["automountServiceAccountToken"] is False


def test_oidc_mode_annotates_the_service_account_for_tkes_webhook(render, rendered):
    out = rendered["oidc"]
    account = out.one("ServiceAccount")
    # The names TKE's pod-identity-webhook reads
    # (https://www.tencentcloud.com/document/product/457/57285).
    assert account["metadata"]["annotations"] == {
        "tke.cloud.tencent.com/role-arn": ROLE_ARN,
        "tke.cloud.tencent.com/audience": "sts.cloud.tencent.com",
        "tke.cloud.tencent.com/token-expiration": "86400",
    }
    assert account["automountServiceAccountToken"] is False
    # The webhook injects TKE_* and the token: the chart adds neither.
    assert not [name for name in out.env if name.startswith("TKE_")]
    assert [v["name"] for v in out.pod_spec["volumes"]] == ["tmp"]
    assert out.config["FACEID_STS_ENDPOINT"] == "https://sts.tencentcloudapi.com"
    assert "FACEID_METADATA_ENDPOINT" not in out.config
    assert "TKE OIDC" in out.notes and "pod-identity-webhook" in out.notes

    # serviceAccount.annotations are kept, and win over the chart's.
    out = render(
        merge(
            OIDC,
            {
                "serviceAccount": {
                    "annotations": {
                        "example.com/team": "identity",
                        "tke.cloud.tencent.com/token-expiration": "7200",
                    }
                }
            },
        )
    )
    annotations = out.one("ServiceAccount")["metadata"]["annotations"]
    assert annotations["example.com/team"] == "identity"
    assert annotations["tke.cloud.tencent.com/token-expiration"] == "7200"
    assert annotations["tke.cloud.tencent.com/role-arn"] == ROLE_ARN
    # Other modes leave the ServiceAccount as configured.
    assert "annotations" not in rendered["defaults"].one("ServiceAccount")["metadata"]
    assert "annotations" not in rendered["cvm-role"].one("ServiceAccount")["metadata"]


def test_oidc_without_the_webhook_mounts_the_projected_token_itself(rendered):
    out = rendered["oidc-projected-token"]
    env = out.env
    assert env["TKE_ROLE_ARN"]["value"] == ROLE_ARN
    assert env["TKE_PROVIDER_ID"]["value"] == "cls-abc123-oidc"
    assert env["TKE_REGION"]["value"] == "ap-singapore"
    assert env["TKE_WEB_IDENTITY_TOKEN_FILE"]["value"] == "/etc/faceid-gateway/oidc/token"
    mount = next(m for m in out.container["volumeMounts"] if m["name"] == "oidc-token")
    assert mount == {"name": "oidc-token", "mountPath": "/etc/faceid-gateway/oidc", "readOnly": True}
    volume = next(v for v in out.pod_spec["volumes"] if v["name"] == "oidc-token")
    assert volume["projected"]["sources"] == [
        {
            "serviceAccountToken": {
                "audience": "sts.cloud.tencent.com",
                "expirationSeconds": 3600,
                "path": "token",
            }
        }
    ]
    # No webhook reads annotations here.
    assert "annotations" not in out.one("ServiceAccount")["metadata"]


def test_cvm_role_mode_asks_the_metadata_server(rendered):
    out = rendered["cvm-role"]
    assert out.config["FACEID_METADATA_ENDPOINT"] == "http://metadata.tencentyun.com"
    assert "FACEID_STS_ENDPOINT" not in out.config
    assert [v["name"] for v in out.pod_spec["volumes"]] == ["tmp"]
    assert "CVM instances" in out.notes


def test_role_arn_is_assumed_over_any_source(rendered):
    config = rendered["role-arn-over-env"].config
    assert config["FACEID_CREDENTIALS_SOURCE"] == "env"
    assert config["FACEID_ROLE_ARN"] == ROLE_ARN
    assert config["FACEID_ROLE_SESSION_NAME"] == "faceid-gateway"
    assert config["FACEID_ROLE_DURATION"] == "1h"
    assert config["FACEID_STS_ENDPOINT"] == "https://sts.tencentcloudapi.com"
    assert "TENCENTCLOUD_SECRET_KEY" in rendered["role-arn-over-env"].env
    for case in ("defaults", "oidc", "cvm-role"):
        assert "FACEID_ROLE_ARN" not in rendered[case].config, case
    assert "FACEID_CREDENTIALS_SOURCE" not in rendered["simulate"].config


def test_network_policy_lets_sts_and_the_metadata_server_through_only_when_used(render, rendered):
    def ports(out):
        return {(p["port"], p["protocol"]) for rule in _egress_rules(out) for p in rule["ports"]}

    def rule_for(out, comment_port, cidr):
        return [
            rule
            for rule in _egress_rules(out)
            if rule["ports"] == [{"port": comment_port, "protocol": "TCP"}]
            and {"ipBlock": {"cidr": cidr}} in rule.get("to", [])
        ]

    # STS: its own HTTPS rule, so narrowing networkPolicy.egress.https to
    # FaceID's addresses does not cut the key renewals off.
    narrowed = {"networkPolicy": {"egress": {"https": {"cidrs": ["203.0.113.0/24"]}}}}
    for case in ("oidc", "oidc-projected-token", "role-arn-over-env"):
        out = render(merge(MATRIX[case], narrowed))
        assert rule_for(out, 443, "0.0.0.0/0"), case
        assert (80, "TCP") not in ports(out), case
    out = render(
        merge(OIDC, NETWORK_POLICY, {"networkPolicy": {"egress": {"sts": {"cidrs": ["198.51.100.7/32"]}}}})
    )
    assert rule_for(out, 443, "198.51.100.7/32")

    # The metadata server: port 80 of 169.254.0.23 only, in mode cvm-role.
    out = render(merge(MATRIX["cvm-role"], narrowed))
    assert rule_for(out, 80, "169.254.0.23/32")
    assert not rule_for(out, 443, "0.0.0.0/0"), "no STS rule without STS"
    for case in ("network-policy", "oidc", "role-arn-over-env"):
        assert (80, "TCP") not in ports(rendered[case]), case
    # Keys from a Secret need neither.
    out = render(merge(NETWORK_POLICY, narrowed))
    assert not rule_for(out, 443, "0.0.0.0/0")
    assert ports(out) == {(53, "UDP"), (53, "TCP"), (443, "TCP")}


@pytest.mark.parametrize(
    "values, message",
    [
        (
            merge(REDIS_TLS, HPA, {"rateLimit": {"redis": {"ca": {"existingConfigMap": "bundle"}}}}),
            "either rateLimit.redis.ca.existingSecret or rateLimit.redis.ca.existingConfigMap",
        ),
        ({"rateLimit": {"redis": {"ca": {"existingSecret": "redis-ca"}}}}, "but no Redis is set"),
        (
            merge(HPA, REDIS, {"rateLimit": {"redis": {"ca": {"existingSecret": "redis-ca"}}}}),
            "rateLimit.redis.url is redis:// (plaintext)",
        ),
        (
            merge(
                HPA,
                REDIS_TLS,
                {"credentials": {"mode": "file", "file": {"mountPath": "/etc/faceid-gateway/redis-ca"}}},
            ),
            "credentials.file.mountPath=/etc/faceid-gateway/redis-ca is where the chart mounts the Redis CA",
        ),
    ],
    ids=["ca-twice", "ca-without-redis", "ca-with-plaintext-redis", "mount-clash"],
)
def test_inconsistent_redis_tls_settings_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            merge(OIDC, {"credentials": dict(INLINE_KEYS)}),
            "credentials.mode=oidc uses the pods' own CAM role",
        ),
        (merge(CVM_ROLE, {"credentials": {"secretKey": FAKE_SECRET_KEY}}), "remove credentials.secretId"),
        ({"credentials": {"mode": "oidc"}}, "credentials.mode=oidc needs credentials.oidc.roleArn"),
        (
            {"credentials": {"mode": "oidc", "oidc": {"webhook": False, "roleArn": ROLE_ARN}}},
            "needs credentials.oidc.roleArn and credentials.oidc.providerId",
        ),
        (
            {"credentials": {"mode": "file", "file": {"mountPath": "/etc/faceid-gateway/oidc"}}},
            "credentials.file.mountPath=/etc/faceid-gateway/oidc",
        ),
    ],
)
def test_inconsistent_identity_settings_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


def test_notes_name_the_redis_ca(rendered):
    notes = rendered["redis-tls-ca-secret"].notes
    assert 'CA bundle in the Secret "redis-ca"\n(key ca.pem), re-read every 5s.' in notes
    assert 'ConfigMap "trust-bundle"' in rendered["redis-tls-ca-configmap"].notes
    assert "Redis TLS" not in rendered["hpa-redis"].notes


# ------------------------------------------------------- notes: health, HTTP/JSON


def _line(notes: str, marker: str) -> str:
    (line,) = [line for line in notes.splitlines() if marker in line]
    return line


@pytest.mark.parametrize("case", ["defaults", "tokens", "tls-tokens", "tls-mtls-secret", "everything"])
def test_notes_health_check_needs_no_token(rendered, case):
    """Health answers without a token, and reflection shows the health service
    to a caller without one, so the grpcurl health line is the plain one
    whatever the caller tokens."""
    notes = rendered[case].notes
    health = _line(notes, "grpc.health.v1.Health/Check")
    assert "authorization" not in health and "FACEID_TOKEN" not in health
    assert health.strip().startswith("grpcurl ")


def test_notes_describe_carries_a_token_only_where_reflection_needs_one(rendered):
    def describe(case):
        return _line(rendered[case].notes, " describe ")

    assert "authorization" not in describe("defaults")
    assert "authorization" not in describe("tokens")  # auth.allowReflection=true
    assert '-H "authorization: Bearer $FACEID_TOKEN" localhost:50051 describe' in describe("tls-tokens")
    assert "shows only the health service" in rendered["tls-tokens"].notes
    assert "shows only the health service" not in rendered["tokens"].notes


def test_notes_show_http_json_on_the_grpc_port(rendered):
    line = _line(rendered["defaults"].notes, "/v1/idcard:verify")
    assert line.strip().startswith("curl ")
    assert "--data-binary @request.json" in line and "content-type: application/json" in line
    assert line.endswith(" http://localhost:50051/v1/idcard:verify")
    assert "authorization" not in line
    notes = rendered["defaults"].notes
    assert "HTTP/JSON on the same port (HTTP/1.1 or HTTP/2)" in notes
    assert f"gRPC and HTTP/JSON clients use: {FULLNAME}.faceid.svc:50051" in notes

    # Calls need the token over HTTP too, whatever reflection allows.
    line = _line(rendered["tokens"].notes, "/v1/idcard:verify")
    assert '-H "authorization: Bearer $FACEID_TOKEN"' in line

    # TLS: the name in the certificate, resolved to the port-forward.
    host = f"{FULLNAME}.faceid.svc"
    line = _line(rendered["tls-tokens"].notes, "/v1/idcard:verify")
    assert f"--cacert ca.crt --resolve {host}:50051:127.0.0.1" in line
    assert line.endswith(f" https://{host}:50051/v1/idcard:verify")
    assert '-H "authorization: Bearer $FACEID_TOKEN"' in line
    assert "--cert" not in line
    line = _line(rendered["tls-mtls-secret"].notes, "/v1/idcard:verify")
    assert "--cert client.crt --key client.key" in line


def test_the_service_port_keeps_its_name_and_warns_against_http_only(rendered, render):
    """The gRPC port also serves HTTP/1.1 now. appProtocol stays grpc (https
    with TLS): a mesh then speaks HTTP/2 to the pods, which carries gRPC and
    HTTP/JSON alike; `http` would make it forward gRPC as HTTP/1.1."""
    for case, out in rendered.items():
        port = next(p for p in out.service()["spec"]["ports"] if p["targetPort"] == "grpc")
        assert port["name"] == "grpc", case
        assert port["appProtocol"] in ("grpc", "https"), case
        assert "grpcAppProtocol" not in out.notes, case
    for value in ("http", "HTTP"):
        notes = render({"service": {"grpcAppProtocol": value}}).notes
        assert f"WARNING: service.grpcAppProtocol={value} tells service meshes" in notes
    assert "WARNING" not in render({"service": {"grpcAppProtocol": "kubernetes.io/h2c"}}).notes


def test_oidc_with_an_unmanaged_service_account_leaves_the_annotations_to_you(render):
    out = render({"credentials": {"mode": "oidc"}, "serviceAccount": {"create": False, "name": "tke-identity"}})
    assert out.maybe("ServiceAccount") is None
    assert out.pod_spec["serviceAccountName"] == "tke-identity"
    assert "Annotate the ServiceAccount tke-identity yourself" in out.notes


def test_the_chart_readme_cites_tkes_pod_identity_documentation():
    readme = (CHART / "README.md").read_text()
    assert "https://www.tencentcloud.com/document/product/457/57285" in readme
    for name in (
        "tke.cloud.tencent.com/role-arn",
        "tke.cloud.tencent.com/audience",
        "tke.cloud.tencent.com/token-expiration",
        "TKE_WEB_IDENTITY_TOKEN_FILE",
    ):
        assert name in readme, name


# ------------------------------------------------------------- spend control

SPEND_VARIABLES = (
    "FACEID_BILLABLE_RESULTS",
    "FACEID_BUDGET_DAY",
    "FACEID_BUDGET_MONTH",
    "FACEID_IDEMPOTENCY_TTL",
    "FACEID_IDEMPOTENCY_CACHE_SIZE",
)


def serve_defaults() -> dict[str, str]:
    """FACEID_* variable -> its default in ServeArgs, as text (a product of
    integers such as 256 * 1024 * 1024 is worked out)."""
    defaults = {}
    for attribute in serve_arg_attributes():
        env = re.search(r'env = "(FACEID_[A-Z0-9_]+)"', attribute)
        text = re.search(r'default_value = "([^"]*)"', attribute)
        product = re.search(r"default_value_t = ([0-9_ *]+?)\s*(?:,|$)", attribute)
        if env and text:
            defaults[env.group(1)] = text.group(1)
        elif env and product:
            value = 1
            for factor in product.group(1).split("*"):
                value *= int(factor.strip().replace("_", ""))
            defaults[env.group(1)] = str(value)
    return defaults


def test_spend_control_is_left_to_the_binarys_defaults(rendered):
    """Unset, no spend variable reaches the pods: Tencent's billing table, no
    gateway-wide budget, and the binary's TTL and cache size. The defaults
    values.yaml names are the binary's."""
    for case in ("defaults", "hpa-redis", "tokens", "simulate"):
        config = rendered[case].config
        for name in SPEND_VARIABLES:
            assert name not in config, (case, name)
    # No default for these in the binary either: unset means none.
    assert not {"FACEID_BILLABLE_RESULTS", "FACEID_BUDGET_DAY", "FACEID_BUDGET_MONTH"} & serve_defaults().keys()


@pytest.mark.parametrize(
    "variable",
    ["FACEID_IDEMPOTENCY_TTL", "FACEID_IDEMPOTENCY_CACHE_SIZE", "FACEID_EJECT_AFTER", "FACEID_EJECT_FOR"],
)
def test_values_yaml_names_the_binarys_default_of_a_setting_it_leaves_unset(variable):
    """values.yaml leaves these unset, so the binary's default applies; the
    default its comment names must be that one."""
    defaults = serve_defaults()
    assert variable in defaults, f"{variable} is not a flag of `serve` in {CONFIG_RS}"
    assert f"({variable}; default {defaults[variable]}," in (CHART / "values.yaml").read_text()


@pytest.mark.parametrize("case", ["spend-one-replica", "spend-hpa-redis", "everything"])
def test_spend_control_settings_are_mapped(rendered, case):
    config = rendered[case].config
    assert config["FACEID_BILLABLE_RESULTS"] == "Success,FailedOperation.IdNameMisMatch"
    assert config["FACEID_BUDGET_DAY"] == "5000"
    assert config["FACEID_BUDGET_MONTH"] == "120000"  # never 1.2e+05
    assert config["FACEID_IDEMPOTENCY_TTL"] == "48h"
    assert config["FACEID_IDEMPOTENCY_CACHE_SIZE"] == "67108864"  # never 6.7108864e+07
    # Settings, not files or secrets: nothing else changes in the pod.
    assert not {name for name in SPEND_VARIABLES if name in rendered[case].env}


def test_spend_control_values_are_independent(render):
    config = render({"spend": {"budgetMonth": 1, "idempotencyCacheSize": 9007199254740991}}).config
    assert config["FACEID_BUDGET_MONTH"] == "1"
    assert config["FACEID_IDEMPOTENCY_CACHE_SIZE"] == "9007199254740991"
    assert not {"FACEID_BUDGET_DAY", "FACEID_BILLABLE_RESULTS", "FACEID_IDEMPOTENCY_TTL"} & config.keys()
    config = render({"spend": {"billableResults": ["Success"], "idempotencyTtl": "1m 30s"}}).config
    assert config["FACEID_BILLABLE_RESULTS"] == "Success"
    assert config["FACEID_IDEMPOTENCY_TTL"] == "1m 30s"
    assert not {"FACEID_BUDGET_DAY", "FACEID_BUDGET_MONTH", "FACEID_IDEMPOTENCY_CACHE_SIZE"} & config.keys()
    # Null is unset too, as `--set spend.idempotencyTtl=null` gives.
    config = render({"spend": {"idempotencyTtl": None, "billableResults": []}}).config
    assert not {"FACEID_IDEMPOTENCY_TTL", "FACEID_BILLABLE_RESULTS"} & config.keys()


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 2, "spend": {"budgetDay": 5000}},
        {"replicaCount": 3, "rateLimit": {"perReplica": True, "perSecond": 33}, "spend": {"budgetMonth": 100}},
        merge(HPA, {"rateLimit": {"perReplica": True, "perSecond": 25}, "spend": {"budgetDay": 1}}),
        {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}, "spend": {"budgetDay": 10}},
    ],
    ids=["replicas-2", "per-replica-limit", "hpa-per-replica-limit", "hpa-max-1"],
)
def test_gateway_budgets_over_several_replicas_need_redis(render, values):
    """Without Redis each replica keeps its own budget counters, so a
    gateway-wide budget would be spent once per replica. Dividing the rate
    limit by hand (rateLimit.perReplica) does not divide a budget, so this
    refusal comes before the rate-limit rule's."""
    with pytest.raises(helm.HelmRenderError) as error:
        render(values)
    message = str(error.value)
    assert "with a gateway-wide budget (spend.budgetDay or spend.budgetMonth) but no Redis" in message
    assert "rateLimit.redis.url" in message and "rateLimit.redis.existingSecret" in message
    assert "without a shared rate limit" not in message


@pytest.mark.parametrize(
    "values",
    [
        merge(SPEND, HPA, REDIS),
        merge(SPEND, HPA, {"rateLimit": {"redis": {"existingSecret": "redis-url"}}}),
        merge(SPEND, {"replicaCount": 1}),
        # Without budgets, the other spend settings need no Redis.
        {
            "replicaCount": 2,
            "rateLimit": {"perReplica": True, "perSecond": 50},
            "spend": {"idempotencyTtl": "1h", "billableResults": ["Success"]},
        },
    ],
    ids=["hpa-redis-url", "hpa-redis-secret", "one-replica", "no-budget"],
)
def test_budgets_render_where_the_counters_are_shared_or_single(render, values):
    render(values)


# ---------------------------------------------------------- endpoint failover


def test_one_endpoint_renders_as_in_every_release(rendered):
    """config.endpoint as one string, as values saved by older releases have
    it, is FACEID_ENDPOINT unchanged; the ejection settings stay unset."""
    for case in ("defaults", "endpoint-list", "hpa-redis", "spend-one-replica"):
        config = rendered[case].config
        assert "FACEID_EJECT_AFTER" not in config and "FACEID_EJECT_FOR" not in config, case
    assert rendered["defaults"].config["FACEID_ENDPOINT"] == "https://faceid.intl.tencentcloudapi.com"


def test_an_endpoint_list_is_joined_with_commas_in_order(render, rendered):
    assert rendered["endpoint-list"].config["FACEID_ENDPOINT"] == ",".join(ENDPOINTS)
    assert rendered["everything"].config["FACEID_ENDPOINT"] == (
        "https://faceid.intl.tencentcloudapi.com,https://faceid.ap-singapore.tencentcloudapi.com"
    )
    # The order is the preference: kept as given.
    assert render({"config": {"endpoint": ENDPOINTS[::-1]}}).config["FACEID_ENDPOINT"] == ",".join(ENDPOINTS[::-1])
    # A list of one is the same as the string.
    one = render({"config": {"endpoint": ["http://simulator.test.svc:9000"]}})
    assert one.config["FACEID_ENDPOINT"] == "http://simulator.test.svc:9000"
    assert one.config == render({"config": {"endpoint": "http://simulator.test.svc:9000"}}).config
    # `--set config.endpoint={a,b}` gives a list too.
    assert render({"config": {"endpoint": ["http://a.test:9000", "http://b.test:9001/"]}}).config[
        "FACEID_ENDPOINT"
    ] == "http://a.test:9000,http://b.test:9001/"


def test_ejection_settings_are_mapped_when_set(render, rendered):
    config = rendered["everything"].config
    assert config["FACEID_EJECT_AFTER"] == "3"
    assert config["FACEID_EJECT_FOR"] == "1m"
    config = render({"config": {"ejectAfter": 4294967295}}).config
    assert config["FACEID_EJECT_AFTER"] == "4294967295"  # never 4.294967295e+09
    assert "FACEID_EJECT_FOR" not in config
    config = render({"config": {"ejectFor": "1m 30s", "ejectAfter": None}}).config
    assert config["FACEID_EJECT_FOR"] == "1m 30s"
    assert "FACEID_EJECT_AFTER" not in config


def test_the_network_policy_treats_an_endpoint_list_like_one_endpoint(rendered):
    """The Tencent egress rule is networkPolicy.egress.https (port and
    CIDRs), whatever config.endpoint lists, as it always was."""
    one = rendered["network-policy"].one("NetworkPolicy")["spec"]["egress"]
    many = rendered["endpoint-list"].one("NetworkPolicy")["spec"]["egress"]
    https = [r for r in many if r["ports"] == [{"port": 443, "protocol": "TCP"}]]
    assert https == [
        {
            "ports": [{"port": 443, "protocol": "TCP"}],
            "to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}],
        }
    ]
    assert https[0] in one


def test_values_saved_by_0_3_0_render_unchanged(render):
    """A values file written for chart 0.3.0 (no spend, no ejection keys,
    config.endpoint a string) renders the settings it had, and the new
    variables stay unset."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["image"]["repository"] = "registry.example.com/faceid-gateway"
    del values["spend"]
    del values["config"]["ejectAfter"], values["config"]["ejectFor"]
    values["config"]["endpoint"] = "https://faceid.tencentcloudapi.com"
    config = render(values).config
    assert config["FACEID_ENDPOINT"] == "https://faceid.tencentcloudapi.com"
    assert not {"FACEID_EJECT_AFTER", "FACEID_EJECT_FOR", *SPEND_VARIABLES} & config.keys()


# ---------------------------------------------------------------------- notes


def test_notes_show_the_gateway_budget_and_where_it_is_counted(render, rendered):
    notes = rendered["spend-one-replica"].notes
    assert "Budget of the whole gateway (billable calls, Beijing time): 5000 a day and 120000 a month,\n" in notes
    assert "counted in the pod's memory." in notes and "GET /budgets on the metrics port" in notes
    notes = rendered["spend-hpa-redis"].notes
    assert "counted in Redis by all replicas together." in notes
    assert "(billable calls, Beijing time): 7 a month," in render({"spend": {"budgetMonth": 7}}).notes
    for case in ("defaults", "hpa-redis", "tokens"):
        assert "Budget of the whole gateway" not in rendered[case].notes, case


def test_notes_warn_that_replicas_without_redis_keep_their_own_idempotency_and_caller_budgets(rendered):
    notes = rendered["replicas-3-per-replica"].notes
    assert "Without Redis each of the up to 3 replicas keeps its own idempotency answers" in notes
    assert "budget_day/budget_month in the tokens file" in notes
    for case in ("defaults", "hpa-redis", "spend-hpa-redis", "spend-one-replica"):
        assert "Without Redis each of" not in rendered[case].notes, case


def test_notes_list_the_endpoints_in_order_of_preference(render, rendered):
    notes = rendered["endpoint-list"].notes
    listed = "Tencent endpoints, the first preferred, the others backups in this order:\n" + "".join(
        f"  {endpoint}\n" for endpoint in ENDPOINTS
    )
    assert listed in notes
    assert "ejected after 5 failures in a row and gets no calls for 30s, doubled" in notes
    notes = rendered["everything"].notes
    assert f"  {ENDPOINTS[0]}\n  {ENDPOINTS[1]}\nAn endpoint is ejected after 3 failures" in notes
    assert "gets no calls for 1m, doubled" in notes
    # One endpoint, as a string or a list of one: nothing to say.
    assert "Tencent endpoints" not in rendered["defaults"].notes
    assert "Tencent endpoints" not in render({"config": {"endpoint": ENDPOINTS[:1]}}).notes
    # The simulator answers in-process: no endpoint is called.
    assert "Tencent endpoints" not in render({"simulate": True, "config": {"endpoint": ENDPOINTS}}).notes


def test_notes_show_the_token_options_for_budgets(rendered):
    notes = rendered["tokens"].notes
    assert "`faceid-gateway token --name NAME [--quota N] [--budget-day N] [--budget-month N]`" in notes


# Values added in chart 0.4.0 -> the variable each sets.
NEW_IN_0_4_0 = {
    "spend.billableResults": "FACEID_BILLABLE_RESULTS",
    "spend.budgetDay": "FACEID_BUDGET_DAY",
    "spend.budgetMonth": "FACEID_BUDGET_MONTH",
    "spend.idempotencyTtl": "FACEID_IDEMPOTENCY_TTL",
    "spend.idempotencyCacheSize": "FACEID_IDEMPOTENCY_CACHE_SIZE",
    "config.endpoint": "FACEID_ENDPOINT",
    "config.ejectAfter": "FACEID_EJECT_AFTER",
    "config.ejectFor": "FACEID_EJECT_FOR",
}


@pytest.mark.parametrize("path", NEW_IN_0_4_0)
def test_the_values_of_0_4_0_are_documented(path):
    """Each has a row of its own in one of the chart README's tables, naming
    its variable, and values.yaml names the variable next to the key."""
    variable = NEW_IN_0_4_0[path]
    readme = (CHART / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith(f"| `{path}` |")]
    assert rows, f"no README table row for {path}"
    assert any(f"`{variable}`" in row for row in rows), rows
    section, key = path.split(".")
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index(f"{section}:")
    at = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(f"  {key}:"))
    # The comment above the key, past sibling keys that share it.
    comment = []
    for line in reversed(lines[start + 1 : at]):
        if line.startswith("  #"):
            comment.append(line)
        elif not re.match(r"  [A-Za-z]+:", line):
            break
        elif comment:
            break
    assert variable in "\n".join(comment), (path, comment)
