"""What chart 0.5.0 adds for production (issue 20): memory that fits the
concurrency, rollouts within the account limit, gRPC load spreading, use as
a subchart, values the binary refuses refused first, the admin port kept off
exposed Services, NetworkPolicy ports from the URLs, and escape hatches.

Run: python -m pytest -q tests/helm   (see tests/helm/requirements.txt)
"""

from __future__ import annotations

import re
import shutil

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from conftest import BASE_VALUES, CHART, FULLNAME, IMAGE_REPOSITORY, RELEASE, merge

REPO = CHART.parents[1]
REDIS = {"rateLimit": {"redis": {"url": "redis://redis.cache.svc:6379/0"}}}
HPA = {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}
NETWORK_POLICY = {"networkPolicy": {"enabled": True}}
KUBE_VERSIONS = ["1.30", ".".join(kubernetes_validate.latest_version().split(".")[:2])]


def validate(objects, where):
    """Every object against the Kubernetes 1.30 and latest schemas."""
    for obj in objects:
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                assert obj["kind"] == "ServiceMonitor", obj["kind"]
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{where}: {obj['kind']}/{obj['metadata']['name']} on {version}: {error}")


def memory(out):
    resources = out.container["resources"]
    return resources["requests"]["memory"], resources["limits"]["memory"]


# ------------------------------------------------ 1. memory vs concurrency


def rust_constant(path, name):
    """The value of a `const NAME: usize = <product or quotient of integers
    and earlier constants>;` in a Rust source file of the binary."""
    source = (REPO / path).read_text()
    expression = re.search(rf"const {name}: usize = ([^;]+);", source).group(1)
    for other in re.findall(r"\b[A-Z][A-Z0-9_]+\b", expression):
        expression = expression.replace(other, str(rust_constant(path, other)))
    assert re.fullmatch(r"[0-9_ */]+", expression), expression
    return eval(expression.replace("_", "").replace("/", "//"))  # integers only, checked above


def serve_default(variable):
    """The default of a `serve` flag in src/config/cli.rs, as an integer."""
    source = (REPO / "src/config/cli.rs").read_text()
    serve = source[source.index("pub struct ServeArgs") : source.index("impl ServeArgs")]
    for attribute in re.findall(r"#\[arg\((.*?)\)\]\s*pub \w+", serve, re.S):
        if f'env = "{variable}"' in attribute:
            product = re.search(r"default_value_t = ([0-9_ *]+?)\s*(?:,|$)", attribute).group(1)
            value = 1
            for factor in product.split("*"):
                value *= int(factor.strip().replace("_", ""))
            return value
    raise AssertionError(f"{variable} is not a flag of serve")


def expected_memory_mib(max_in_flight=128, batch_global=32, connections=None, streams=None, cache=None, redis=False):
    """The formula of values.yaml, from the binary's own constants and
    defaults: (request MiB, limit MiB)."""
    largest_image = rust_constant("src/tencent/image.rs", "MAX_IMAGE_BYTES")
    connections = connections or serve_default("FACEID_MAX_CONNECTIONS")
    streams = streams or serve_default("FACEID_MAX_CONCURRENT_STREAMS")
    cache = 0 if redis else (cache or serve_default("FACEID_IDEMPOTENCY_CACHE_SIZE"))
    calls = min(max_in_flight, connections * streams) + batch_global
    base = 64 * 1024 * 1024
    need = base + cache + calls * largest_image * 3 // 2
    mib = 1024 * 1024
    return -(-(base + cache) // mib), -(-need // mib)


def test_the_formula_uses_the_binarys_largest_image_and_defaults():
    """The template's constants are the binary's: 1.5 x MAX_IMAGE_BYTES per
    call (8064 KiB) and the defaults of the settings it leaves unset."""
    assert rust_constant("src/tencent/image.rs", "MAX_IMAGE_BYTES") == 5_505_024
    helpers = (CHART / "templates/_helpers.tpl").read_text()
    per_call_kib = rust_constant("src/tencent/image.rs", "MAX_IMAGE_BYTES") * 3 // 2 // 1024
    assert 'define "faceid-gateway.memory.callKiB" -}}%d{{- end' % per_call_kib in helpers
    assert "{{- $connections := %d -}}" % serve_default("FACEID_MAX_CONNECTIONS") in helpers
    assert "{{- $streams := %d -}}" % serve_default("FACEID_MAX_CONCURRENT_STREAMS") in helpers
    assert "\n%d\n" % (serve_default("FACEID_IDEMPOTENCY_CACHE_SIZE") // 1024) in helpers


@pytest.mark.parametrize(
    "values, formula",
    [
        ({}, {}),
        (REDIS, {"redis": True}),
        ({"config": {"maxInFlight": 64}}, {"max_in_flight": 64}),
        ({"config": {"maxInFlight": 256, "batchGlobalConcurrency": 128}}, {"max_in_flight": 256, "batch_global": 128}),
        ({"spend": {"idempotencyCacheSize": 67108864}}, {"cache": 67108864}),
        # The connection limits bound the calls when they are the smaller bound.
        (
            {"connections": {"maxConnections": 4, "maxConcurrentStreams": 8}},
            {"connections": 4, "streams": 8},
        ),
    ],
    ids=["defaults", "redis", "max-in-flight-64", "binary-defaults", "cache-64mib", "connection-bound"],
)
def test_memory_is_derived_from_the_concurrency(render, values, formula):
    request, limit = expected_memory_mib(**formula)
    assert memory(render(values)) == (f"{request}Mi", f"{limit}Mi")


def test_the_default_memory_is_what_values_yaml_says(render):
    assert memory(render({})) == ("320Mi", "1580Mi")
    assert memory(render(REDIS)) == ("64Mi", "1324Mi")
    text = (CHART / "values.yaml").read_text()
    assert "a 1580Mi limit and a 320Mi request (1324Mi\n# and 64Mi with Redis)" in text


@pytest.mark.parametrize(
    "values, message",
    [
        # The 0.4.0 defaults: 512Mi against 256 + 128 calls of the largest image.
        (
            {"resources": {"limits": {"memory": "512Mi"}}, "config": {"maxInFlight": 256, "batchGlobalConcurrency": 128}},
            "384 calls (config.maxInFlight=256 + config.batchGlobalConcurrency=128) x 7.875 MiB",
        ),
        ({"resources": {"limits": {"memory": "512Mi"}}}, "at least 1580Mi"),
        ({"resources": {"limits": {"memory": "512Mi"}}}, "512Mi holds 24 calls"),
        ({"resources": {"limits": {"memory": "1579Mi"}}}, "at least 1580Mi"),
        ({"resources": {"limits": {"memory": "1656000000"}}}, "at least 1580Mi"),
        ({"resources": {"limits": {"memory": 1656000000}}}, "at least 1580Mi"),
        (
            merge(REDIS, {"resources": {"limits": {"memory": "256Mi"}}, "connections": {"maxConnections": 2, "maxConcurrentStreams": 10}}),
            "52 calls (connections.maxConnections x connections.maxConcurrentStreams=20 + config.batchGlobalConcurrency=32)",
        ),
    ],
    ids=["0.4.0-defaults", "512Mi", "512Mi-holds", "one-short", "bytes", "number", "connection-bound"],
)
def test_a_memory_limit_that_cannot_hold_the_calls_is_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)) as error:
        render(values)
    text = str(error.value)
    assert "OOM-killed" in text and "lower config.maxInFlight or config.batchGlobalConcurrency" in text


@pytest.mark.parametrize("limit", ["1580Mi", "1.6Gi", "1700M", 2147483648, "2Gi"])
def test_a_memory_limit_that_holds_the_calls_is_kept(render, limit):
    out = render({"resources": {"limits": {"memory": limit}}})
    assert memory(out) == ("320Mi", limit)


def test_derived_and_given_memory_never_contradict(render):
    # A request above the derived limit lifts the limit to it.
    assert memory(render({"resources": {"requests": {"memory": "2Gi"}}})) == ("2Gi", "2048Mi")
    # A given request is kept as it is; the limit is still derived.
    assert memory(render({"resources": {"requests": {"memory": "100Mi"}}})) == ("100Mi", "1580Mi")
    # Other resources are left alone.
    out = render({"resources": {"requests": {"cpu": "250m"}, "limits": {"cpu": "2"}}})
    resources = out.container["resources"]
    assert resources["requests"]["cpu"] == "250m" and resources["limits"]["cpu"] == "2"


# ------------------------------------------------------ 2. as a subchart


def umbrella(tmp_path, values=None):
    """An umbrella chart in tmp_path that depends on this chart (a copy in
    its charts/) and sets only `values`."""
    root = tmp_path / "platform"
    (root / "charts").mkdir(parents=True)
    shutil.copytree(CHART, root / "charts" / "faceid-gateway")
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    (root / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 1.0.0\n"
        f"dependencies:\n  - name: faceid-gateway\n    version: {version}\n"
    )
    (root / "values.yaml").write_text(yaml.safe_dump(values or {}))
    return root


def test_an_umbrella_chart_installs_this_chart_as_a_subchart(tmp_path):
    """Helm gives every subchart `global`; the schema accepts it. With no
    values at all the only refusal is the chart's own request for the image
    repository (no image is published); naming it is the one thing to add."""
    with helm.Chart.load(str(umbrella(tmp_path))) as chart:
        with pytest.raises(helm.HelmRenderError, match="set image.repository"):
            chart.render({}, name="platform", namespace="apps", is_install=True)

    values = {
        "global": {"imageRegistry": "registry.example.com", "labels": {"team": "identity"}},
        "faceid-gateway": {"image": {"repository": IMAGE_REPOSITORY}},
    }
    with helm.Chart.load(str(umbrella(tmp_path / "with-image", values))) as chart:
        files = chart.render({}, name="platform", namespace="apps", is_install=True)
        # And values passed at install time, `global` included, as an umbrella's users pass them.
        files_at_install = chart.render(
            {"global": {"environment": "prod"}}, name="platform", namespace="apps", is_install=True
        )
    for rendered in (files, files_at_install):
        objects = [
            doc
            for path, text in rendered.items()
            if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text)
            if doc
        ]
        kinds = sorted(obj["kind"] for obj in objects)
        assert kinds == ["ConfigMap", "Deployment", "Pod", "Service", "ServiceAccount"], kinds
        validate(objects, "umbrella")
        (deployment,) = [obj for obj in objects if obj["kind"] == "Deployment"]
        assert deployment["metadata"]["name"] == "platform-faceid-gateway"


def test_global_is_accepted_and_other_unknown_keys_still_refused(chart):
    chart.validate_schema(merge(BASE_VALUES, {"global": {"anything": {"nested": [1, 2]}}}))
    for bad in (
        {"globals": {}},
        {"image": {"repo": "x"}},
        {"service": {"headles": True}},
        {"strategy": {"rollingUpdate": {"maxSurg": 1}}},
        {"podSecurityContext": {"runAsUser": "root"}},
        {"securityContext": {"privileged": "no"}},
        {"probes": {"readiness": {"periodSeconds": 0}}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(merge(BASE_VALUES, bad))


def test_kubernetes_fields_pass_through(render):
    out = render(
        {
            "podSecurityContext": {"supplementalGroups": [1000, 2000], "sysctls": []},
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}, "procMount": "Default"},
            "probes": {"liveness": {"successThreshold": 1, "terminationGracePeriodSeconds": 30}},
            "resources": {"limits": {"hugepages-2Mi": "64Mi"}, "requests": {"hugepages-2Mi": "64Mi"}},
        }
    )
    assert out.pod_spec["securityContext"]["supplementalGroups"] == [1000, 2000]
    assert out.pod_spec["securityContext"]["runAsUser"] == 65532  # the defaults stay
    assert out.container["securityContext"]["appArmorProfile"] == {"type": "RuntimeDefault"}
    assert out.container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert out.container["livenessProbe"]["terminationGracePeriodSeconds"] == 30
    assert out.container["resources"]["limits"]["hugepages-2Mi"] == "64Mi"
    validate(out.objects, "pass-through")


def test_numbers_given_with_set_are_taken_as_text(render):
    """`--set image.tag=2` and `--set otel.samplerArg=1` arrive as numbers;
    `--set image.tag=1.0` stays text. A values file may give a number too."""
    values = helm.parse_set_string("image.tag=2,otel.samplerArg=1,otel.endpoint=http://otel:4318")
    assert values["image"]["tag"] == 2 and values["otel"]["samplerArg"] == 1
    out = render(values)
    assert out.container["image"] == f"{IMAGE_REPOSITORY}:2"
    assert out.deployment["metadata"]["labels"]["app.kubernetes.io/version"] == "2"
    assert out.config["OTEL_TRACES_SAMPLER_ARG"] == "1"

    values = helm.parse_set_string("image.tag=1.0,otel.samplerArg=0.1,otel.endpoint=http://otel:4318")
    out = render(values)
    assert out.container["image"] == f"{IMAGE_REPOSITORY}:1.0"
    assert out.config["OTEL_TRACES_SAMPLER_ARG"] == "0.1"

    values = helm.values_from_yaml("otel:\n  endpoint: http://otel:4318\n  samplerArg: 0.25\n")
    assert render(values).config["OTEL_TRACES_SAMPLER_ARG"] == "0.25"


# ------------------------------------------- 3. rollouts within the limit


def strategy(out):
    return out.deployment["spec"]["strategy"]


def test_without_redis_the_default_rollout_runs_no_extra_pod(render):
    assert strategy(render({})) == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}}
    per_replica = {"replicaCount": 3, "rateLimit": {"perReplica": True, "perSecond": 33}}
    assert strategy(render(per_replica))["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    # With Redis the shared limit holds whatever the pod count: surge for availability.
    assert strategy(render(merge(HPA, REDIS))) == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    # A strategy given is used as it is.
    assert strategy(render({"strategy": {"type": "Recreate"}})) == {"type": "Recreate"}


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
            "refusing to run 2 pods (1 replica + maxSurge 1 during a rollout)",
        ),
        (
            {
                "replicaCount": 3,
                "rateLimit": {"perReplica": True, "perSecond": 33},
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            },
            "rateLimit.perSecond=33 x 4 pods (3 replicas + maxSurge 1 during a rollout) = 132 exceeds "
            "rateLimit.accountLimit=100. Lower rateLimit.perSecond to at most 25, or set a strategy with maxSurge 0",
        ),
        (
            # 25% of 4 rounds up to one surge pod, as the Deployment controller rounds it.
            merge(HPA, {"rateLimit": {"perReplica": True, "perSecond": 25}, "strategy": {"type": "RollingUpdate"}}),
            "x 5 pods (4 replicas + maxSurge 1 during a rollout) = 125 exceeds",
        ),
        (
            {"replicaCount": 2, "rateLimit": {"perReplica": True, "perSecond": 40, "burst": 20}},
            "rateLimit.perSecond=40 + rateLimit.burst=20 x 2 replicas = 120 exceeds",
        ),
        ({"rateLimit": {"perSecond": 100, "burst": 10}}, "x 1 replica = 110 exceeds"),
        (merge(REDIS, {"rateLimit": {"perSecond": 150}}), "rateLimit.perSecond=150 exceeds rateLimit.accountLimit=100"),
        (merge(REDIS, {"rateLimit": {"burst": 1}}), "rateLimit.perSecond=100 + rateLimit.burst=1 exceeds"),
        ({"strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}, "strategy.type=Recreate takes no"),
        ({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}, "both 0"),
        (
            merge(REDIS, HPA, {"strategy": {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "20%"}}}),
            "both 0",  # 20% of 4 rounds down to 0
        ),
    ],
    ids=[
        "surge-single",
        "surge-per-replica",
        "surge-percent",
        "burst-per-replica",
        "burst-single",
        "redis-above-account",
        "redis-burst",
        "recreate-with-rolling",
        "both-zero",
        "both-zero-percent",
    ],
)
def test_rollouts_and_bursts_that_exceed_the_account_limit_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 3, "rateLimit": {"perReplica": True, "perSecond": 25}, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}},
        merge(HPA, {"rateLimit": {"perReplica": True, "perSecond": 20}, "strategy": {"type": "RollingUpdate"}}),
        merge(HPA, {"rateLimit": {"perReplica": True, "perSecond": 25}, "strategy": {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "25%"}}}),
        {"strategy": {"type": "Recreate"}, "rateLimit": {"perSecond": 90, "burst": 10}},
        merge(REDIS, HPA, {"strategy": {"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}}}),
    ],
    ids=["surge-fits", "percent-fits", "no-surge-percent", "recreate-burst-fits", "redis-any-surge"],
)
def test_rollouts_within_the_account_limit_render(render, values):
    out = render(values)
    validate(out.objects, "rollout")


# -------------------------------------------------- 4. gRPC load spreading


def test_a_headless_service_spreads_calls_over_every_pod(render):
    out = render({"service": {"headless": True}})
    headless = out.service(f"{FULLNAME}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False
    assert headless["spec"]["selector"] == out.service()["spec"]["selector"]
    assert [(p["name"], p["port"], p["targetPort"], p["appProtocol"]) for p in headless["spec"]["ports"]] == [
        ("grpc", 50051, "grpc", "grpc")
    ]
    assert f"dns:///{FULLNAME}-headless.faceid.svc:50051" in out.notes
    # Off by default.
    assert [s["metadata"]["name"] for s in render({}).all("Service")] == [FULLNAME]
    validate(out.objects, "headless")


@pytest.mark.parametrize(
    "values, age",
    [
        ({}, None),
        (merge(HPA, REDIS), "5m"),
        ({"replicaCount": 2, "rateLimit": {"perReplica": True, "perSecond": 50}}, "5m"),
        (merge(HPA, REDIS, {"connections": {"maxConnectionAge": "10m"}}), "10m"),
        (merge(HPA, REDIS, {"connections": {"maxConnectionAge": 0}}), "0"),
        (merge(HPA, REDIS, {"connections": {"maxConnectionAge": "0s"}}), "0s"),
        ({"connections": {"maxConnectionAge": "1h"}}, "1h"),
    ],
    ids=["one-pod", "hpa", "replicas-2", "given", "off", "off-0s", "one-pod-given"],
)
def test_connections_are_aged_out_by_default_with_several_pods(render, values, age):
    assert render(values).config.get("FACEID_MAX_CONNECTION_AGE") == age


def test_the_autoscaler_scales_down_slowly_and_takes_custom_metrics(render):
    hpa = render(merge(HPA, REDIS)).one("HorizontalPodAutoscaler")["spec"]
    assert hpa["behavior"] == {
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "policies": [{"type": "Pods", "value": 1, "periodSeconds": 300}],
        }
    }
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["cpu"]

    custom = {
        "type": "Pods",
        "pods": {
            "metric": {"name": "faceid_upstream_in_flight"},
            "target": {"type": "AverageValue", "averageValue": "64"},
        },
    }
    out = render(
        merge(
            HPA,
            REDIS,
            {
                "autoscaling": {
                    "targetCPUUtilizationPercentage": None,
                    "metrics": [custom],
                    "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1800}},
                }
            },
        )
    )
    hpa = out.one("HorizontalPodAutoscaler")["spec"]
    assert hpa["metrics"] == [custom]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 1800
    validate(out.objects, "hpa")
    # null removes it (Helm drops a key set to null).
    assert "behavior" not in render(merge(HPA, REDIS, {"autoscaling": {"behavior": None}})).one(
        "HorizontalPodAutoscaler"
    )["spec"]


# ------------------------------------------- 5. values the binary refuses


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://faceid.tencentcloudapi.com/v2",
        "https://faceid.tencentcloudapi.com/?action=x",
        "https://faceid.tencentcloudapi.com/#x",
        "https://user@faceid.tencentcloudapi.com",
        "https://faceid.tencentcloudapi.com:99999",
        "https://:443",
        "https://faceid.tencentcloudapi.com\\path",
        "https://1.2.3.999",
    ],
)
def test_an_endpoint_the_binary_refuses_is_refused_by_the_schema(chart, endpoint):
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(merge(BASE_VALUES, {"config": {"endpoint": endpoint}}))
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(merge(BASE_VALUES, {"config": {"endpoint": ["https://faceid.tencentcloudapi.com", endpoint]}}))


@pytest.mark.parametrize(
    "endpoints",
    [
        ["https://faceid.tencentcloudapi.com", "https://faceid.tencentcloudapi.com/"],
        ["https://faceid.tencentcloudapi.com", "https://FACEID.tencentcloudapi.com:443"],
        ["http://simulator.test:80", "http://simulator.test"],
    ],
)
def test_the_same_endpoint_twice_is_refused(render, endpoints):
    with pytest.raises(helm.HelmRenderError, match="config.endpoint lists .* twice"):
        render({"config": {"endpoint": endpoints}})


def test_another_port_is_another_endpoint(render):
    endpoints = ["https://faceid.tencentcloudapi.com", "https://faceid.tencentcloudapi.com:8443", "http://faceid.tencentcloudapi.com"]
    assert render({"config": {"endpoint": endpoints}}).config["FACEID_ENDPOINT"] == ",".join(endpoints)


@pytest.mark.parametrize(
    "bad",
    [
        {"rateLimit": {"perSecond": 1000001}},
        {"rateLimit": {"burst": -1}},
        {"rateLimit": {"burst": 1000001}},
        {"rateLimit": {"accountLimit": 0}},
        {"config": {"maxInFlight": 4294967296}},
        {"config": {"batchGlobalConcurrency": 4294967296}},
        {"config": {"region": "ap guangzhou"}},
        {"config": {"region": "ap-guangzhou\n"}},
        {"otel": {"endpoint": "http://otel collector:4318"}},
        {"service": {"nodePort": 70000}},
        {"service": {"externalTrafficPolicy": "local"}},
        {"service": {"loadBalancerSourceRanges": ["everyone"]}},
        {"networkPolicy": {"egress": {"https": {"cidrs": ["anywhere"]}}}},
        {"networkPolicy": {"egress": {"redis": {"port": 0}}}},
        {"strategy": {"type": "BlueGreen"}},
        {"strategy": {"rollingUpdate": {"maxSurge": "one"}}},
        {"extraVolumes": [{"configMap": {"name": "no-name"}}]},
        {"extraVolumeMounts": [{"name": "ca", "mountPath": "relative"}]},
        {"sidecars": [{"image": "no-name"}]},
        {"image": {"tag": True}},
        {"otel": {"samplerArg": [0.1]}},
    ],
    ids=lambda bad: yaml.safe_dump(bad, default_flow_style=True, width=200).strip(),
)
def test_schema_refuses_new_bad_values(chart, bad):
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(merge(BASE_VALUES, bad))


ROLE_ARN = "qcs::cam::uin/100000000001:roleName/faceid-gateway"


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"otel": {"endpoint": "https://otlp.example.com:4317", "protocol": "grpc"}},
            "otel.protocol=grpc with an https:// otel.endpoint",
        ),
        ({"credentials": {"roleArn": ROLE_ARN, "roleDuration": "13h"}}, "credentials.roleDuration=13h: STS issues"),
        ({"credentials": {"roleArn": ROLE_ARN, "roleDuration": "12h 1s"}}, "credentials.roleDuration=12h 1s"),
        ({"credentials": {"roleArn": ROLE_ARN, "roleDuration": "999ms"}}, "credentials.roleDuration=999ms"),
    ],
    ids=["otlp-grpc-tls", "role-13h", "role-above-12h", "role-below-1s"],
)
def test_settings_the_binary_cannot_start_with_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values",
    [
        {"otel": {"endpoint": "https://otlp.example.com", "protocol": "http/protobuf"}},
        {"otel": {"endpoint": "http://otel-collector:4317", "protocol": "grpc"}},
        {"credentials": {"roleArn": ROLE_ARN, "roleDuration": "12h"}},
        {"credentials": {"roleArn": ROLE_ARN, "roleDuration": "1s"}},
        # Without a role the duration is not used (nor set).
        {"credentials": {"roleDuration": "13h"}},
    ],
    ids=["otlp-http-tls", "otlp-grpc-plaintext", "role-12h", "role-1s", "no-role"],
)
def test_their_neighbours_render(render, values):
    render(values)


def test_a_redis_url_port_the_binary_refuses_is_refused(render):
    with pytest.raises(helm.HelmRenderError, match="port above 65535"):
        render({"rateLimit": {"redis": {"url": "redis://redis:99999/0"}}})


# ------------------------------- 6. the admin port off exposed Services


@pytest.mark.parametrize("service_type", ["LoadBalancer", "NodePort"])
def test_an_exposed_service_carries_no_metrics_port(render, service_type):
    out = render({"service": {"type": service_type}, "serviceMonitor": {"enabled": True}})
    main = out.service()
    assert main["spec"]["type"] == service_type
    assert [p["name"] for p in main["spec"]["ports"]] == ["grpc"]
    metrics = out.service(f"{FULLNAME}-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert [(p["name"], p["port"], p["targetPort"]) for p in metrics["spec"]["ports"]] == [("metrics", 9090, "metrics")]
    assert metrics["spec"]["selector"] == main["spec"]["selector"]
    # The ServiceMonitor selects the metrics Service and not the exposed one.
    selector = out.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics["metadata"]["labels"].items()
    assert not selector.items() <= main["metadata"]["labels"].items()
    assert f"http://{FULLNAME}-metrics.faceid.svc:9090/metrics" in out.notes
    validate(out.objects, service_type)


def test_a_cluster_ip_service_keeps_both_ports(render):
    out = render({"serviceMonitor": {"enabled": True}})
    assert [s["metadata"]["name"] for s in out.all("Service")] == [FULLNAME]
    assert [p["name"] for p in out.service()["spec"]["ports"]] == ["grpc", "metrics"]
    selector = out.one("ServiceMonitor")["spec"]["selector"]["matchLabels"]
    assert selector.items() <= out.service()["metadata"]["labels"].items()


def test_load_balancer_settings_are_rendered(render):
    out = render(
        {
            "service": {
                "type": "LoadBalancer",
                "nodePort": 30051,
                "loadBalancerSourceRanges": ["203.0.113.0/24"],
                "externalTrafficPolicy": "Local",
            }
        }
    )
    spec = out.service()["spec"]
    assert spec["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert spec["externalTrafficPolicy"] == "Local"
    assert spec["ports"][0]["nodePort"] == 30051
    spec = render({}).service()["spec"]
    assert not {"loadBalancerSourceRanges", "externalTrafficPolicy"} & spec.keys()
    assert "nodePort" not in spec["ports"][0]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"service": {"nodePort": 30051}}, "service.nodePort=30051 needs service.type NodePort or LoadBalancer"),
        ({"service": {"externalTrafficPolicy": "Local"}}, "service.externalTrafficPolicy=Local needs service.type"),
        (
            {"service": {"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]}},
            "service.loadBalancerSourceRanges needs service.type LoadBalancer (it is NodePort)",
        ),
    ],
)
def test_exposure_settings_without_their_service_type_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


# ---------------------------------------------------------- 7. NetworkPolicy


def egress_ports(out):
    return {(p["port"], p["protocol"]) for rule in out.one("NetworkPolicy")["spec"]["egress"] for p in rule["ports"]}


def rule_for_port(out, port):
    rules = [r for r in out.one("NetworkPolicy")["spec"]["egress"] if {"port": port, "protocol": "TCP"} in r["ports"]]
    assert len(rules) == 1, (port, rules)
    return rules[0]


@pytest.mark.parametrize(
    "url, port",
    [
        ("rediss://redis.example.internal:6380/0", 6380),
        ("redis://redis.cache.svc:6379/0", 6379),
        ("redis://redis.cache.svc/0", 6379),
        ("rediss://redis.cache.svc", 6379),
        ("redis://[fd00::7]:7000/1", 7000),
    ],
)
def test_the_redis_egress_port_is_the_urls(render, url, port):
    out = render(merge(NETWORK_POLICY, HPA, {"rateLimit": {"redis": {"url": url}}}))
    assert egress_ports(out) == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (port, "TCP")}


def test_a_redis_url_in_a_secret_needs_the_port_named(render):
    secret = merge(NETWORK_POLICY, HPA, {"rateLimit": {"redis": {"existingSecret": "redis-url"}}})
    with pytest.raises(helm.HelmRenderError, match=re.escape("needs networkPolicy.egress.redis.port")):
        render(secret)
    out = render(merge(secret, {"networkPolicy": {"egress": {"redis": {"port": 6380}}}}))
    assert (6380, "TCP") in egress_ports(out)
    # A port given wins over the URL's.
    out = render(merge(NETWORK_POLICY, HPA, REDIS, {"networkPolicy": {"egress": {"redis": {"port": 16379}}}}))
    assert (16379, "TCP") in egress_ports(out) and (6379, "TCP") not in egress_ports(out)
    # Without the NetworkPolicy nothing is asked.
    render(merge(HPA, {"rateLimit": {"redis": {"existingSecret": "redis-url"}}}))


@pytest.mark.parametrize(
    "endpoint, port",
    [
        ("http://otel-collector.observability:4317", 4317),
        ("http://otel-collector.observability:4318/", 4318),
        ("https://otlp.example.com", 443),
        ("http://otel-collector", 80),
        ("https://otlp.example.com:8443/v1/traces", 8443),
    ],
)
def test_the_otlp_egress_port_is_the_endpoints(render, endpoint, port):
    out = render(merge(NETWORK_POLICY, {"otel": {"endpoint": endpoint}}))
    assert egress_ports(out) == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (port, "TCP")}
    out = render(merge(NETWORK_POLICY, {"otel": {"endpoint": endpoint}, "networkPolicy": {"egress": {"otel": {"ports": [4317, 4318]}}}}))
    assert {(4317, "TCP"), (4318, "TCP")} <= egress_ports(out)


def test_dns_reaches_the_cluster_dns_and_nodelocal_dnscache(render):
    out = render(NETWORK_POLICY)
    dns = next(r for r in out.one("NetworkPolicy")["spec"]["egress"] if {"port": 53, "protocol": "UDP"} in r["ports"])
    assert {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}} in dns["to"]
    assert {"ipBlock": {"cidr": "169.254.20.10/32"}} in dns["to"]
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}}}]
    out = render(merge(NETWORK_POLICY, {"networkPolicy": {"egress": {"dns": {"to": peers}}}}))
    dns = next(r for r in out.one("NetworkPolicy")["spec"]["egress"] if {"port": 53, "protocol": "UDP"} in r["ports"])
    assert dns["to"] == peers


def test_https_and_sts_allow_ipv6_too(render):
    out = render(merge(NETWORK_POLICY, {"credentials": {"roleArn": "qcs::cam::uin/100000000001:roleName/gw"}}))
    https_rules = [r for r in out.one("NetworkPolicy")["spec"]["egress"] if r["ports"] == [{"port": 443, "protocol": "TCP"}]]
    assert len(https_rules) == 2  # Tencent's endpoint, STS
    for rule in https_rules:
        assert rule["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
    validate(out.objects, "ipv6")


# ------------------------------------------------------- 8. escape hatches


def test_escape_hatches_land_in_the_pod(render):
    out = render(
        {
            "extraEnv": [{"name": "CORPORATE_CA_DIR", "value": "/etc/corporate-ca"}],
            "extraEnvFrom": [{"secretRef": {"name": "gateway-extra"}}],
            "extraVolumes": [{"name": "corporate-ca", "configMap": {"name": "corporate-ca-bundle"}}],
            "extraVolumeMounts": [{"name": "corporate-ca", "mountPath": "/etc/corporate-ca", "readOnly": True}],
            "initContainers": [{"name": "wait", "image": "registry.example.com/busybox:1.37"}],
            "sidecars": [{"name": "proxy", "image": "registry.example.com/proxy:1.0"}],
        }
    )
    pod = out.pod_spec
    assert [c["name"] for c in pod["containers"]] == ["gateway", "proxy"]
    assert [c["name"] for c in pod["initContainers"]] == ["wait"]
    assert {"name": "corporate-ca", "configMap": {"name": "corporate-ca-bundle"}} in pod["volumes"]
    assert {"name": "corporate-ca", "mountPath": "/etc/corporate-ca", "readOnly": True} in out.container["volumeMounts"]
    assert out.container["envFrom"][1:] == [{"secretRef": {"name": "gateway-extra"}}]
    assert out.env["CORPORATE_CA_DIR"]["value"] == "/etc/corporate-ca"
    validate(out.objects, "escape hatches")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"extraVolumes": [{"name": "tls", "emptyDir": {}}]}, "extraVolumes has a volume named tls"),
        (
            {"extraVolumes": [{"name": "x", "emptyDir": {}}], "extraVolumeMounts": [{"name": "x", "mountPath": "/tmp"}]},
            "extraVolumeMounts mounts x at /tmp",
        ),
        ({"extraVolumeMounts": [{"name": "x", "mountPath": "/etc/faceid-gateway/tls/"}]}, "mounts x at /etc/faceid-gateway/tls/"),
        ({"sidecars": [{"name": "gateway", "image": "x"}]}, "may not use the name gateway"),
        ({"initContainers": [{"name": "gateway", "image": "x"}]}, "may not use the name gateway"),
    ],
    ids=["volume-name", "mount-tmp", "mount-chart-dir", "sidecar-name", "init-name"],
)
def test_extras_that_clash_with_the_charts_own_are_refused(render, values, message):
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)


@pytest.mark.parametrize(
    "values, refused",
    [
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2}}, True),
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 3}}, True),
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": "100%"}}, True),
        (merge(HPA, {"autoscaling": {"minReplicas": 3}, "podDisruptionBudget": {"minAvailable": 3}}), True),
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 1}}, False),
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": "50%"}}, False),
        ({"replicaCount": 2, "podDisruptionBudget": {"minAvailable": 2, "enabled": False}}, False),
        # No PDB with one pod: nothing to refuse.
        ({"podDisruptionBudget": {"minAvailable": 5}}, False),
    ],
    ids=["equal", "above", "100-percent", "hpa-min", "one-below", "half", "disabled", "single-pod"],
)
def test_a_pdb_that_would_block_every_drain_is_refused(render, values, refused):
    values = merge(REDIS, values)
    if refused:
        with pytest.raises(helm.HelmRenderError, match="lets no pod be evicted"):
            render(values)
    else:
        render(values)


def test_the_helm_test_pod_runs_where_the_release_runs(render):
    values = {
        "imagePullSecrets": [{"name": "registry"}],
        "nodeSelector": {"kubernetes.io/os": "linux", "pool": "gateway"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gw", "effect": "NoSchedule"}],
    }
    spec = render(values).one("Pod")["spec"]
    assert spec["imagePullSecrets"] == values["imagePullSecrets"]
    assert spec["nodeSelector"] == values["nodeSelector"]
    assert spec["tolerations"] == values["tolerations"]
    assert not {"imagePullSecrets", "nodeSelector", "tolerations"} & render({}).one("Pod")["spec"].keys()


def test_the_image_repository_must_be_named(render, chart):
    for values in ({"image": {"repository": ""}}, {"image": {"repository": None}}):
        with pytest.raises(helm.HelmRenderError, match="set image.repository to the registry"):
            render(values)
    # The chart's own defaults name none.
    assert yaml.safe_load((CHART / "values.yaml").read_text())["image"]["repository"] == ""
    with pytest.raises(helm.HelmRenderError, match="set image.repository"):
        chart.render({}, name=RELEASE, namespace="faceid", is_install=True)


@pytest.mark.parametrize(
    "interval, timeout, refused",
    [
        ("30s", "10s", False),
        ("30s", "30s", False),
        ("1m", "59s", False),
        ("1m30s", "1m", False),
        ("30s", "31s", True),
        ("1m", "1m500ms", True),
        ("500ms", "1s", True),
    ],
)
def test_the_scrape_timeout_may_not_exceed_the_interval(render, interval, timeout, refused):
    values = {"serviceMonitor": {"enabled": True, "interval": interval, "scrapeTimeout": timeout}}
    if refused:
        with pytest.raises(helm.HelmRenderError, match="is longer than serviceMonitor.interval"):
            render(values)
    else:
        endpoint = render(values).one("ServiceMonitor")["spec"]["endpoints"][0]
        assert (endpoint["interval"], endpoint["scrapeTimeout"]) == (interval, timeout)


# ------------------------------------------------------------ documentation

# Values added in chart 0.5.0.
NEW_IN_0_5_0 = (
    "strategy",
    "extraEnvFrom",
    "extraVolumes",
    "extraVolumeMounts",
    "initContainers",
    "sidecars",
    "service.nodePort",
    "service.loadBalancerSourceRanges",
    "service.externalTrafficPolicy",
    "service.headless",
    "autoscaling.metrics",
    "autoscaling.behavior",
)


def comment_above(lines, path):
    """The comment lines above the key `path` of values.yaml (past sibling
    keys that share the comment)."""
    indent = 0
    start = 0
    for key in path.split("."):
        prefix = " " * indent + f"{key}:"
        start = next(i for i in range(start, len(lines)) if lines[i].startswith(prefix))
        at = start
        indent += 2
        start += 1
    key_indent = " " * (indent - 2)
    comment = []
    for line in reversed(lines[:at]):
        if line.startswith(key_indent + "#"):
            comment.append(line)
        elif re.match(rf"{key_indent}[A-Za-z]+:", line) and not comment:
            continue
        else:
            break
    return comment


@pytest.mark.parametrize("path", NEW_IN_0_5_0)
def test_the_values_of_0_5_0_are_documented(path):
    """Each has a row in one of the chart README's tables and a comment in
    values.yaml."""
    readme = (CHART / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("|") and f"`{path}`" in line]
    assert rows, f"no README table row names {path}"
    assert comment_above((CHART / "values.yaml").read_text().splitlines(), path), path


def test_the_readme_has_a_production_checklist_and_upgrade_notes():
    readme = (CHART / "README.md").read_text()
    checklist = readme[readme.index("## Production checklist") :]
    checklist = checklist[: checklist.index("\n## ", 1)]
    for topic in ("Memory", "Replicas and the account limit", "gRPC load spreading", "Redis", "Credentials", "NetworkPolicy"):
        assert f"**{topic}" in checklist, topic
    assert "From chart 0.4.0" in readme
    assert "with redis the shared limit already makes rollouts safe" in readme.replace("\n", " ").lower()
