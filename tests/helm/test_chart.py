"""The Helm chart: strict lint, renderings that validate against the
Kubernetes API schemas, and the properties the chart promises (gRPC probes,
locked-down pods, keys only in a Secret, the scaling rule, schema checks).

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
HPA = {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}

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
    "simulate": {"simulate": True, "credentials": {"existingSecret": ""}},
    "everything": merge(
        HPA,
        REDIS,
        {
            "credentials": {"mode": "file", **INLINE_KEYS},
            "image": {
                "repository": "registry.example.com/faceid-gateway",
                "digest": "sha256:" + "ab" * 32,
            },
            "imagePullSecrets": [{"name": "registry"}],
            "config": {
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
    report = helm.lint(str(CHART), MATRIX[case], strict=True, kube_version="v1.30.0")
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
    ],
    ids=lambda bad: yaml.safe_dump(bad, default_flow_style=True, width=200).strip(),
)
def test_schema_rejects_bad_values(chart, render, bad):
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(bad)
    # The schema also guards rendering (install, upgrade, template).
    with pytest.raises(helm.HelmValuesError):
        render(bad)


def test_schema_covers_every_default_value():
    """Each key of values.yaml is declared in values.schema.json (and objects
    there refuse unknown keys), so the schema and the defaults stay in step."""
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
            assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
            for key, child in value.items():
                assert key in node["properties"], f"{path}.{key} is not in the schema"
                walk(child, node["properties"][key], f"{path}.{key}")

    walk(values, schema, "values")


# ------------------------------------------------------------ the pod template


def test_probes_use_grpc_health(rendered):
    for case, out in rendered.items():
        container = out.container
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            spec = container[probe]
            assert spec["grpc"]["port"] == 50051, (case, probe)
            assert not {"httpGet", "exec", "tcpSocket"} & spec.keys(), (case, probe)
        assert container["livenessProbe"]["grpc"]["service"] == ""
        assert container["readinessProbe"]["grpc"]["service"] == "faceid.v1.IdCardVerificationService"


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
    assert out.container["image"] == "faceid-gateway:0.1.0"
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
        "FACEID_MAX_IN_FLIGHT": "256",
        "FACEID_MAX_ATTEMPTS": "3",
        "FACEID_UPSTREAM_TIMEOUT": "10s",
        "FACEID_MATCH_THRESHOLD": "70",
        "FACEID_DRAIN_TIMEOUT": "20s",
        "FACEID_LOG_FORMAT": "json",
        "FACEID_BATCH_CONCURRENCY": "32",
        "FACEID_BATCH_GLOBAL_CONCURRENCY": "128",
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


def test_a_redis_url_with_a_password_is_refused(render):
    url = f"redis://:{FAKE_REDIS_PASSWORD}@redis:6379/0"
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
            assert labels["app.kubernetes.io/version"] == "0.1.0", where
            assert labels["app.kubernetes.io/managed-by"] == "Helm", where
            assert labels["app.kubernetes.io/name"].startswith("faceid-gateway"), where
            assert labels["helm.sh/chart"] == "faceid-gateway-0.1.0", where
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
    assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6379, "TCP"), (4317, "TCP"), (4318, "TCP")} <= egress_ports

    # Chosen peers and extra rules are kept as given.
    policy = rendered["everything"].one("NetworkPolicy")["spec"]
    assert {"namespaceSelector": {"matchLabels": {"team": "payments"}}} in policy["ingress"][0]["from"]
    egress_ports = {p["port"] for rule in policy["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 443, 6379, 4317, 4318, 8443}
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
    assert monitor["spec"]["selector"]["matchLabels"] == rendered["service-monitor"].one("Service")["spec"]["selector"]


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
    assert [p.name for p in tmp_path.iterdir()] == ["faceid-gateway-0.1.0.tgz"]
