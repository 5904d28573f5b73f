"""The Helm chart, linted and rendered by Helm's Go SDK (helm-python-sdk), without a cluster.

Built-in kinds are validated against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields fail). The custom resources (ServiceMonitor, ScaledObject,
TriggerAuthentication) are not in those schemas: a small check of their apiVersion,
kind and required fields stands in for their CRDs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from agents import topics
from agents.topics import SERVICES
from apps.settings import DEFAULT_WEB_PORTS
from tests.deploy.support import REPO, check_is_a_setting, settings_from_env

CHART = REPO / "helm/riskstream"
ALL_ON = yaml.safe_load((REPO / "tests/deploy/values-all-on.yaml").read_text())
RELEASE, NAMESPACE = "riskstream", "risk"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest schemas.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())

CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("selector", "endpoints"),
    ("keda.sh/v1alpha1", "ScaledObject"): ("scaleTargetRef", "triggers"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"): (),
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict | None = None) -> dict[str, str]:
    return chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)


def manifests(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


@pytest.fixture(scope="module")
def default(chart) -> list[dict]:
    return manifests(render(chart))


@pytest.fixture(scope="module")
def all_on(chart) -> list[dict]:
    return manifests(render(chart, ALL_ON))


@pytest.fixture(scope="module", params=["default values", "every option on"])
def each(request, default, all_on) -> list[dict]:
    return default if request.param == "default values" else all_on


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def statefulset(docs: list[dict], service: str) -> dict:
    (found,) = [
        d
        for d in of_kind(docs, "StatefulSet")
        if d["spec"]["template"]["spec"]["containers"][0]["args"][-1] == service
    ]
    return found


def container(sts: dict) -> dict:
    return sts["spec"]["template"]["spec"]["containers"][0]


def env_entries(c: dict) -> list[dict]:
    return c.get("env", [])


def plain_env(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in env_entries(c) if "value" in e}


# --- Helm itself


@pytest.mark.parametrize("values", [None, ALL_ON], ids=["default values", "every option on"])
def test_the_chart_lints_clean(values):
    report = helm.lint(CHART, values, strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_the_chart_version_follows_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert metadata["appVersion"] == project["version"]


@pytest.mark.parametrize(
    "bad",
    [
        {"kafka": {"partitions": 0}},
        {"kafka": {"partitions": "twelve"}},
        {"kafka": {"broker": "my-kafka:9092"}},
        {"kafka": {"sasl": {"enabled": True, "mechanism": "GSSAPI"}}},
        {"decision": {"missingAgentPolicy": "shrug"}},
        {"services": {"velocity": {"replicas": -1}}},
        {"services": {"velocityy": {"replicas": 1}}},
        {"logLevel": "verbose"},
        {"replicas": 3},
    ],
    ids=lambda v: yaml.safe_dump(v, default_flow_style=True).strip(),
)
def test_values_the_schema_rejects_fail_the_render(chart, bad):
    with pytest.raises(helm.HelmValuesError):
        render(chart, bad)


def test_tls_client_certificates_without_a_secret_fail_the_render(chart):
    values = {"kafka": {"tls": {"enabled": True, "clientCert": {"enabled": True}}}}
    with pytest.raises(helm.HelmError, match="clientCert.secretName"):
        render(chart, values)


# --- Kubernetes schemas


def check_custom_resource(doc: dict) -> None:
    required = CUSTOM_RESOURCES[(doc["apiVersion"], doc["kind"])]
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    assert doc["metadata"]["namespace"] == NAMESPACE
    spec = doc["spec"]
    for name in required:
        assert spec.get(name), f"{doc['kind']} without spec.{name}"
    if doc["kind"] == "ScaledObject":
        assert {"name"} <= set(spec["scaleTargetRef"])
        for trigger in spec["triggers"]:
            assert trigger["type"] and isinstance(trigger["metadata"], dict)
            assert all(isinstance(v, str) for v in trigger["metadata"].values())
    if doc["kind"] == "TriggerAuthentication":
        assert spec.get("env") or spec.get("secretTargetRef")
    if doc["kind"] == "ServiceMonitor":
        assert all(e.get("port") for e in spec["endpoints"])


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_manifest_is_valid_for_kubernetes(each, kube_version):
    for doc in each:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCES:
            check_custom_resource(doc)
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {path}: {exc.message}")


def test_every_option_on_renders_every_kind(all_on):
    kinds = {d["kind"] for d in all_on}
    assert kinds == {
        "StatefulSet",
        "Service",
        "PodDisruptionBudget",
        "Job",
        "ServiceMonitor",
        "ScaledObject",
        "TriggerAuthentication",
        "NetworkPolicy",
    }


def test_default_values_render_no_optional_resources(default):
    kinds = {d["kind"] for d in default}
    assert kinds == {"StatefulSet", "Service", "PodDisruptionBudget", "Job"}


# --- the workers


def test_there_is_one_statefulset_per_service(each, parse_riskstream):
    statefulsets = of_kind(each, "StatefulSet")
    assert len(statefulsets) == 5
    ran = set()
    for sts in statefulsets:
        c = container(sts)
        assert c["command"] == ["riskstream"]
        parsed = parse_riskstream(c["args"])
        assert parsed.command == "worker"
        ran.add(parsed.service)
    assert ran == set(SERVICES)


def test_the_default_ports_are_the_contract_ports(default):
    for service in SERVICES:
        c = container(statefulset(default, service))
        assert c["ports"] == [
            {"name": "http", "containerPort": DEFAULT_WEB_PORTS[service], "protocol": "TCP"}
        ]
        assert plain_env(c)["RISKSTREAM_WEB_PORT"] == str(DEFAULT_WEB_PORTS[service])


@pytest.mark.parametrize("service", SERVICES)
def test_web_host_is_the_pods_dns_name_under_a_headless_service(each, service):
    sts = statefulset(each, service)
    env = env_entries(container(sts))
    names = [e["name"] for e in env]
    # $(VAR) expands only variables defined earlier in the list
    assert names.index("POD_NAME") < names.index("RISKSTREAM_WEB_HOST")
    assert names.index("POD_NAMESPACE") < names.index("RISKSTREAM_WEB_HOST")
    by_name = {e["name"]: e for e in env}
    assert by_name["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert by_name["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    headless = sts["spec"]["serviceName"]
    assert by_name["RISKSTREAM_WEB_HOST"]["value"] == (
        f"$(POD_NAME).{headless}.$(POD_NAMESPACE).svc.cluster.local"
    )
    (svc,) = [s for s in of_kind(each, "Service") if s["metadata"]["name"] == headless]
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_also_has_a_cluster_ip_service_for_lookups(each, service):
    sts = statefulset(each, service)
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    selecting = [
        s
        for s in of_kind(each, "Service")
        if s["spec"]["selector"].items() <= pod_labels.items()
        and s["spec"].get("clusterIP") != "None"
    ]
    assert len(selecting) == 1
    assert selecting[0]["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("service", SERVICES)
def test_probes_wait_for_ready_tables_and_restart_only_a_dead_process(each, service):
    c = container(statefulset(each, service))
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/ready", "port": "http"}
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60, (
        "a table recovery from the changelogs may take many minutes"
    )


@pytest.mark.parametrize("service", SERVICES)
def test_state_is_on_a_volume_claim_per_pod_at_the_data_dir(each, service):
    sts = statefulset(each, service)
    c = container(sts)
    data_dir = plain_env(c)["RISKSTREAM_DATA_DIR"]
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[data_dir] in claims
    assert claims[mounts[data_dir]]["spec"]["resources"]["requests"]["storage"]


@pytest.mark.parametrize("service", SERVICES)
def test_workers_run_unprivileged_on_a_read_only_root(each, service):
    pod = statefulset(each, service)["spec"]["template"]["spec"]
    c = container(statefulset(each, service))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    volume = next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume


@pytest.mark.parametrize("service", SERVICES)
def test_every_worker_has_resource_requests_and_limits(each, service):
    resources = container(statefulset(each, service))["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_has_a_disruption_budget_over_its_pods(each, service):
    pod_labels = statefulset(each, service)["spec"]["template"]["metadata"]["labels"]
    budgets = [
        b
        for b in of_kind(each, "PodDisruptionBudget")
        if b["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ]
    assert len(budgets) == 1 and budgets[0]["spec"]["maxUnavailable"] == 1


@pytest.mark.parametrize("service", SERVICES)
def test_the_default_environment_is_a_valid_configuration(default, service, monkeypatch):
    env = plain_env(container(statefulset(default, service)))
    env = {
        k: v.replace("$(POD_NAME)", f"{service}-0").replace("$(POD_NAMESPACE)", NAMESPACE)
        for k, v in env.items()
    }
    settings = settings_from_env(env, monkeypatch)
    assert (
        settings.web_host
        == f"{service}-0.{RELEASE}-{service}-headless.{NAMESPACE}.svc.cluster.local"
    )
    assert settings.port_for(service) == DEFAULT_WEB_PORTS[service]
    assert settings.fetch_max_wait_ms == 500


def _chart_variables() -> list[str]:
    with helm.Chart.load(CHART) as loaded:
        docs = manifests(render(loaded)) + manifests(render(loaded, ALL_ON))
    names = set()
    for doc in docs:
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            names |= {e["name"] for e in env_entries(c) if e["name"].startswith("RISKSTREAM_")}
    return sorted(names)


@pytest.mark.parametrize("variable", _chart_variables())
def test_every_riskstream_variable_the_chart_sets_is_a_setting(variable):
    check_is_a_setting(variable)


# --- Kafka security, Redis, the topics job


def test_tls_files_and_sasl_secrets_reach_every_kafka_client(all_on):
    pods = [s["spec"]["template"]["spec"] for s in of_kind(all_on, "StatefulSet")]
    pods += [j["spec"]["template"]["spec"] for j in of_kind(all_on, "Job")]
    for pod in pods:
        c = pod["containers"][0]
        env = {e["name"]: e for e in env_entries(c)}
        assert env["RISKSTREAM_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["RISKSTREAM_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
        assert env["RISKSTREAM_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "riskstream-scram",
            "key": "password",
        }
        mount = next(m for m in c["volumeMounts"] if m["name"] == "kafka-tls")
        volume = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
        projected = {
            item["path"]: (source["secret"]["name"], item["key"])
            for source in volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        for variable, secret in [
            ("RISKSTREAM_SSL_CAFILE", ("prod-cluster-ca-cert", "ca.crt")),
            ("RISKSTREAM_SSL_CERTFILE", ("riskstream-user", "user.crt")),
            ("RISKSTREAM_SSL_KEYFILE", ("riskstream-user", "user.key")),
        ]:
            path = env[variable]["value"]
            assert path.startswith(mount["mountPath"] + "/")
            assert projected[path.removeprefix(mount["mountPath"] + "/")] == secret


def test_without_tls_or_sasl_the_workers_speak_plaintext_and_mount_no_certificates(default):
    for sts in of_kind(default, "StatefulSet"):
        env = plain_env(container(sts))
        assert env["RISKSTREAM_SECURITY_PROTOCOL"] == "PLAINTEXT"
        assert not any(k.startswith(("RISKSTREAM_SSL_", "RISKSTREAM_SASL_")) for k in env)


def test_only_the_decision_service_is_given_redis(chart, all_on):
    for service in SERVICES:
        env = {e["name"]: e for e in env_entries(container(statefulset(all_on, service)))}
        if service == "decision":
            assert env["RISKSTREAM_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
                "name": "riskstream-redis",
                "key": "redis-url",
            }
            assert env["RISKSTREAM_REDIS_TTL_S"]["value"] == "2592000", "an integer, not 2.592e+06"
        else:
            assert "RISKSTREAM_REDIS_URL" not in env
    docs = manifests(render(chart, {"redis": {"url": "redis://redis-master:6379/0"}}))
    env = plain_env(container(statefulset(docs, "decision")))
    assert env["RISKSTREAM_REDIS_URL"] == "redis://redis-master:6379/0"


def test_the_topics_job_runs_topics_create_before_install_and_upgrade(each, parse_riskstream):
    (job,) = of_kind(each, "Job")
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    c = job["spec"]["template"]["spec"]["containers"][0]
    parsed = parse_riskstream(c["command"][1:] + c["args"])
    assert (parsed.command, parsed.topics_command) == ("topics", "create")
    workers = plain_env(container(of_kind(each, "StatefulSet")[0]))
    env = plain_env(c)
    for variable in ("RISKSTREAM_BROKER", "RISKSTREAM_PARTITIONS", "RISKSTREAM_REPLICATION_FACTOR"):
        assert env[variable] == workers[variable], "topics are made for the workers' settings"


# --- the options


def test_keda_never_scales_a_service_beyond_the_partition_count(all_on):
    partitions = ALL_ON["kafka"]["partitions"]
    scaled = of_kind(all_on, "ScaledObject")
    assert len(scaled) == 5
    statefulsets = {s["metadata"]["name"]: s for s in of_kind(all_on, "StatefulSet")}
    for so in scaled:
        spec = so["spec"]
        assert spec["scaleTargetRef"]["kind"] == "StatefulSet"
        sts = statefulsets[spec["scaleTargetRef"]["name"]]
        assert "replicas" not in sts["spec"], "KEDA owns the replica count"
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
        (trigger,) = spec["triggers"]
        service = container(sts)["args"][-1]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == service, "Faust's group is the app id"
        assert trigger["metadata"]["topic"] in topics.contract_topics()
        assert trigger["metadata"]["bootstrapServers"] == (
            "prod-kafka-bootstrap.kafka.svc:9093,prod-kafka-brokers.kafka.svc:9093"
        )
        assert trigger["metadata"]["sasl"] == "scram_sha512"
        assert trigger["metadata"]["tls"] == "enable"
        auth = next(
            a
            for a in of_kind(all_on, "TriggerAuthentication")
            if a["metadata"]["name"] == trigger["authenticationRef"]["name"]
        )
        assert {p["parameter"] for p in auth["spec"]["env"]} == {"username", "password"}
        assert {p["parameter"] for p in auth["spec"]["secretTargetRef"]} == {"ca", "cert", "key"}
    velocity = next(
        so for so in scaled if so["spec"]["scaleTargetRef"]["name"].endswith("velocity")
    )
    assert ALL_ON["services"]["velocity"]["autoscaling"]["maxReplicas"] > partitions
    assert velocity["spec"]["maxReplicaCount"] == partitions


def test_the_service_monitor_scrapes_each_service_once_as_a_job_named_after_it(all_on):
    (monitor,) = of_kind(all_on, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [
        s for s in of_kind(all_on, "Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert len(selected) == 5
    assert all(s["spec"].get("clusterIP") != "None" for s in selected)
    job_label = monitor["spec"]["jobLabel"]
    assert sorted(s["metadata"]["labels"][job_label] for s in selected) == sorted(SERVICES)
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_network_policy_admits_the_release_and_the_configured_peers_on_every_web_port(all_on):
    (policy,) = of_kind(all_on, "NetworkPolicy")
    spec = policy["spec"]
    for sts in of_kind(all_on, "StatefulSet"):
        assert (
            spec["podSelector"]["matchLabels"].items()
            <= sts["spec"]["template"]["metadata"]["labels"].items()
        )
    (rule,) = spec["ingress"]
    assert {p["port"] for p in rule["ports"]} == set(DEFAULT_WEB_PORTS.values())
    assert {"podSelector", "namespaceSelector"} <= {k for peer in rule["from"] for k in peer}


def test_the_notes_say_how_to_reach_each_service_and_that_kafka_is_external(chart):
    notes = render(chart)["riskstream/templates/NOTES.txt"]
    assert "Kafka is not part of this chart" in notes
    assert "Strimzi" in notes
    for service in SERVICES:
        assert f"http://{RELEASE}-{service}.{NAMESPACE}.svc:{DEFAULT_WEB_PORTS[service]}" in notes
