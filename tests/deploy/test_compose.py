"""docker-compose.yml: Kafka (KRaft), Redis, the five services, Prometheus and Grafana, wired right."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from agents.topics import SERVICES
from apps.settings import DEFAULT_WEB_PORTS
from tests.deploy.support import REPO, check_is_a_setting, settings_from_env

COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
DATA_DIR = (
    "/var/lib/riskstream"  # the image's RISKSTREAM_DATA_DIR (tests/deploy/test_dockerfile.py)
)


def service(name: str) -> dict:
    return COMPOSE["services"][name]


def environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def depends_on(svc: dict) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):
        return {d: "service_started" for d in deps}
    return {d: (spec or {}).get("condition", "service_started") for d, spec in deps.items()}


def mounts(svc: dict) -> list[tuple[str, str]]:
    """(source, target) of each volume entry, in short or long syntax."""
    out = []
    for entry in svc.get("volumes") or []:
        if isinstance(entry, str):
            source, target = entry.split(":")[:2]
        else:
            source, target = entry.get("source", ""), entry["target"]
        out.append((source, target))
    return out


def runs_riskstream_image(svc: dict) -> bool:
    build = svc.get("build")
    context = build if isinstance(build, str) else (build or {}).get("context")
    return context == "." or svc.get("image") == service("orchestrator").get("image")


def riskstream_invocations(svc: dict) -> list[list[str]]:
    """Each `riskstream ...` argv a service runs: through the image's entrypoint or `sh -c`."""
    entrypoint = svc.get("entrypoint")
    if entrypoint in (["sh", "-c"], ["/bin/sh", "-c"]):
        script = " ".join(command(svc))
        argvs = [shlex.split(part) for part in re.split(r"&&|;|\|\|", script) if part.strip()]
        for argv in argvs:
            assert argv[0] == "riskstream", f"{argv}: only riskstream commands run in this image"
        return [argv[1:] for argv in argvs]
    assert entrypoint is None, "the image's ENTRYPOINT is riskstream"
    return [command(svc)]


def test_the_file_follows_the_compose_specification_without_a_version_key():
    assert "version" not in COMPOSE
    assert set(COMPOSE) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | {
        k for k in COMPOSE if k.startswith("x-")
    }


def test_kafka_redis_the_five_services_and_monitoring_are_all_there():
    expected = {"kafka", "topics", "redis", "prometheus", "grafana", *SERVICES}
    assert expected <= set(COMPOSE["services"])


def test_every_service_has_an_image_and_every_build_context_has_a_dockerfile():
    for name, svc in COMPOSE["services"].items():
        assert svc.get("image") or svc.get("build"), name
        build = svc.get("build")
        if build is not None:
            context = REPO / (build if isinstance(build, str) else build["context"])
            dockerfile = (
                "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            )
            assert (context / dockerfile).is_file(), f"{name}: no {context / dockerfile}"


def test_every_volume_network_and_dependency_referenced_is_defined():
    volumes = set(COMPOSE.get("volumes") or {})
    networks = set(COMPOSE.get("networks") or {}) | {"default"}
    for name, svc in COMPOSE["services"].items():
        for source, _ in mounts(svc):
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in volumes, f"{name}: volume {source} is not declared"
        for network in svc.get("networks") or []:
            assert network in networks, f"{name}: network {network} is not declared"
        for dependency, condition in depends_on(svc).items():
            assert dependency in COMPOSE["services"], f"{name} depends on unknown {dependency}"
            assert condition in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }
            if condition == "service_healthy":
                assert "healthcheck" in service(dependency), f"{dependency} has no healthcheck"


@pytest.mark.parametrize(
    "name", [n for n, s in COMPOSE["services"].items() if runs_riskstream_image(s)]
)
def test_every_command_of_the_riskstream_image_is_a_riskstream_command(name, parse_riskstream):
    for argv in riskstream_invocations(service(name)):
        parse_riskstream(argv)


@pytest.mark.parametrize("name", SERVICES)
def test_each_worker_runs_its_own_service(name, parse_riskstream):
    parsed = parse_riskstream(command(service(name)))
    assert (parsed.command, parsed.service) == ("worker", name)


def test_topics_are_created_once_kafka_is_healthy_and_before_any_worker_starts(parse_riskstream):
    topics = service("topics")
    parsed = parse_riskstream(command(topics))
    assert (parsed.command, parsed.topics_command) == ("topics", "create")
    assert depends_on(topics) == {"kafka": "service_healthy"}
    assert topics.get("restart") in ("no", None)
    for name in SERVICES:
        assert depends_on(service(name))["topics"] == "service_completed_successfully"


@pytest.mark.parametrize("name", SERVICES)
def test_each_worker_keeps_its_state_on_its_own_named_volume(name):
    data = [source for source, target in mounts(service(name)) if target == DATA_DIR]
    assert len(data) == 1 and data[0] in COMPOSE["volumes"]
    others = [s for n in SERVICES if n != name for s, t in mounts(service(n)) if t == DATA_DIR]
    assert data[0] not in others, "a volume per service"


@pytest.mark.parametrize("name", SERVICES)
def test_each_worker_is_reachable_by_its_service_name_on_its_contract_port(name):
    svc = service(name)
    env = environment(svc)
    assert env["RISKSTREAM_WEB_HOST"] == name
    port = DEFAULT_WEB_PORTS[name]
    assert env.get("RISKSTREAM_WEB_PORT", str(port)) == str(port)
    assert f"{port}:{port}" in [str(p) for p in svc["ports"]]


@pytest.mark.parametrize("name", [*SERVICES, "topics"])
def test_each_riskstream_container_uses_the_kafka_service_with_a_real_kafka_fetch_wait(name):
    env = environment(service(name))
    assert env["RISKSTREAM_BROKER"] == "kafka://kafka:9092"
    assert int(env["RISKSTREAM_FETCH_MAX_WAIT_MS"]) >= 100


@pytest.mark.parametrize("name", [*SERVICES, "topics"])
def test_each_riskstream_containers_environment_is_a_valid_configuration(name, monkeypatch):
    settings = settings_from_env(environment(service(name)), monkeypatch)
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.partitions >= 1


def test_only_the_decision_service_writes_to_redis_and_waits_for_it():
    env = environment(service("decision"))
    url = env["RISKSTREAM_REDIS_URL"]
    host = re.match(r"redis://([^:/]+)", url).group(1)
    assert host == "redis" and host in COMPOSE["services"]
    assert depends_on(service("decision"))["redis"] == "service_healthy"
    for name in SERVICES[:-1]:
        assert "RISKSTREAM_REDIS_URL" not in environment(service(name))


VARIABLES = sorted(
    {
        variable
        for svc in COMPOSE["services"].values()
        for variable in environment(svc)
        if variable.startswith("RISKSTREAM_")
    }
)


@pytest.mark.parametrize("variable", VARIABLES)
def test_every_riskstream_variable_compose_sets_is_a_setting(variable):
    check_is_a_setting(variable)


def test_kafka_runs_in_kraft_mode_with_consistent_listeners():
    kafka = service("kafka")
    assert kafka["image"].startswith("apache/kafka:")
    env = environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id, controller = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split("@")
    assert node_id == env["KAFKA_NODE_ID"]
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = dict(entry.split("://") for entry in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(entry.split("://") for entry in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    assert set(listeners) <= set(protocols)
    assert set(advertised) <= set(listeners)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert (
        controller.split(":")[1] == listeners[env["KAFKA_CONTROLLER_LISTENER_NAMES"]].split(":")[1]
    )
    # the workers' broker address is what Kafka advertises inside the compose network
    assert "kafka:9092" in advertised.values()
    assert env["CLUSTER_ID"]
    log_dirs = env["KAFKA_LOG_DIRS"]
    assert any(target == log_dirs for _, target in mounts(kafka)), "Kafka's data on a volume"


def test_prometheus_scrapes_each_service_as_a_job_named_after_it():
    prometheus = service("prometheus")
    config_dir = next(
        REPO / source for source, target in mounts(prometheus) if target == "/etc/prometheus"
    )
    config = yaml.safe_load((config_dir / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for name in SERVICES:
        targets = [t for sc in jobs[name]["static_configs"] for t in sc["targets"]]
        assert targets == [f"{name}:{DEFAULT_WEB_PORTS[name]}"]
    for rule_file in config["rule_files"]:
        assert (config_dir / rule_file).is_file()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


def test_grafana_is_provisioned_with_the_prometheus_data_source_and_the_dashboard():
    grafana = service("grafana")
    targets = {
        target: REPO / source for source, target in mounts(grafana) if source.startswith(".")
    }
    provisioning = targets["/etc/grafana/provisioning"]
    datasources = [
        ds
        for f in sorted((provisioning / "datasources").glob("*.yml"))
        for ds in yaml.safe_load(f.read_text())["datasources"]
    ]
    prometheus = next(ds for ds in datasources if ds["type"] == "prometheus")
    host_port = re.match(r"http://([^/]+)", prometheus["url"]).group(1)
    assert host_port.split(":")[0] in COMPOSE["services"]
    providers = [
        p
        for f in sorted((provisioning / "dashboards").glob("*.yml"))
        for p in yaml.safe_load(f.read_text())["providers"]
    ]
    dashboards_dir = targets[providers[0]["options"]["path"]]
    assert (dashboards_dir / "riskstream.json").is_file()
    home = environment(grafana).get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home is None or Path(home).parent.as_posix() == providers[0]["options"]["path"]
