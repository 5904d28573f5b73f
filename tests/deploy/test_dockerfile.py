"""The Dockerfile builds one non-root image for every service, checked without a Docker engine."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents.topics import SERVICES
from apps.settings import DEFAULT_WEB_PORTS
from tests.deploy.support import REPO, check_is_a_setting

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
HEALTHCHECK_SCRIPT = REPO / "deploy/docker/healthcheck.py"


@dataclass
class Instruction:
    keyword: str
    args: str

    @property
    def exec_form(self) -> list[str] | None:
        try:
            value = json.loads(self.args)
        except ValueError:
            return None
        return value if isinstance(value, list) else None

    def flags(self) -> dict[str, str]:
        return dict(re.findall(r"--([a-z-]+)=(\S+)", self.args))

    def without_flags(self) -> list[str]:
        return [w for w in shlex.split(self.args) if not w.startswith("--")]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages: enough of the Dockerfile grammar for these checks."""
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip())
        if instruction.keyword == "FROM":
            words = instruction.without_flags()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and instruction.keyword == "ARG":
            name, _, default = instruction.args.partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(instruction)
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage.all("ENV"):
        for word in shlex.split(instruction.args):
            name, _, value = word.partition("=")
            env[name] = value
    return env


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def matches(pattern: str, candidate: str) -> bool:
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        parts = candidate.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        return any(re.fullmatch(regex, p) for p in prefixes)

    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        if matches(pattern, path):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def runtime(dockerfile) -> Stage:
    return dockerfile[1][-1]


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_the_image_is_built_in_stages_and_runs_on_slim_python_3_11(dockerfile):
    _, stages = dockerfile
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    assert stages[-1].base == "python:3.11-slim"
    builders = {s.name for s in stages[:-1]}
    takes_from_builder = [
        i
        for i in stages[-1].instructions
        if any(re.search(rf"\bfrom={name}\b", i.args) for name in builders)
    ]
    assert takes_from_builder, "the runtime stage installs what the builder built"
    assert not any("pip wheel" in i.args for i in stages[-1].all("RUN"))


def test_the_builder_copies_every_package_pyproject_installs(dockerfile):
    _, stages = dockerfile
    builder = stages[0]
    copied = {w for i in builder.all("COPY") for w in i.without_flags()[:-1]}
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in copied
    assert {"pyproject.toml", "README.md"} <= copied


def test_every_file_copied_from_the_context_exists_and_is_not_dockerignored(
    dockerfile, ignore_patterns
):
    _, stages = dockerfile
    for stage in stages:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            if "from" in instruction.flags():
                continue
            for source in instruction.without_flags()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
                files = (
                    [REPO / source] if (REPO / source).is_file() else (REPO / source).rglob("*.py")
                )
                for f in files:
                    relative = f.relative_to(REPO).as_posix()
                    if "__pycache__" in relative:
                        continue
                    assert not dockerignore_excludes(relative, ignore_patterns), relative


def test_the_dockerignore_keeps_the_virtualenv_git_and_local_state_out(ignore_patterns):
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        "var/data/x",
        "tests/unit/test_x.py",
        "helm/riskstream/Chart.yaml",
    ]:
        assert dockerignore_excludes(path, ignore_patterns), path


def test_the_service_runs_as_an_unprivileged_user_created_in_the_image(runtime):
    users = runtime.all("USER")
    assert users, "a USER instruction"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(i.args for i in runtime.all("RUN"))
    uid = re.search(r"useradd[^&]*--uid (\d+)", created)
    assert uid and (user == uid.group(1) or re.search(rf"useradd[^&]*\b{user}\b", created))


def test_entrypoint_is_riskstream_and_the_default_command_is_a_worker(runtime, parse_riskstream):
    entrypoint = runtime.all("ENTRYPOINT")[-1].exec_form
    assert entrypoint == ["riskstream"]
    cmd = runtime.all("CMD")[-1].exec_form
    assert cmd is not None, "CMD in exec form, so `docker run IMAGE worker geo` replaces it"
    parsed = parse_riskstream(cmd)
    assert parsed.command == "worker" and parsed.service in SERVICES


def test_state_lives_in_the_data_dir_owned_by_the_service_user(runtime):
    env = env_of(runtime)
    assert env["RISKSTREAM_DATA_DIR"] == "/var/lib/riskstream"
    created = " ".join(i.args for i in runtime.all("RUN"))
    assert "chown riskstream:riskstream /var/lib/riskstream" in created


@pytest.mark.parametrize(
    "variable",
    sorted(
        k
        for k in env_of(parse_dockerfile(DOCKERFILE.read_text())[1][-1])
        if k.startswith("RISKSTREAM_")
    ),
)
def test_every_riskstream_variable_the_image_sets_is_a_setting(variable):
    check_is_a_setting(variable)


def test_the_healthcheck_runs_the_script_the_image_copies_in(runtime):
    healthchecks = runtime.all("HEALTHCHECK")
    assert len(healthchecks) == 1
    command = healthchecks[0].args.split("CMD", 1)[1].strip()
    argv = json.loads(command)
    assert argv[0] == "python"
    copies = {i.without_flags()[-1]: i.without_flags()[0] for i in runtime.all("COPY")}
    assert copies.get(argv[1]) == HEALTHCHECK_SCRIPT.relative_to(REPO).as_posix()
    assert "--start-period" in healthchecks[0].args, "workers recover tables before they answer"


def test_every_service_port_is_exposed(runtime):
    exposed = {int(p) for i in runtime.all("EXPOSE") for p in i.args.split()}
    assert set(DEFAULT_WEB_PORTS.values()) <= exposed


# --- the health check script, run as Docker runs it


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    servers = []

    def start(status: int) -> int:
        handler = type("Handler", (_Health,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def run_healthcheck(port: int | None, argv: list[str]) -> int:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import healthcheck; "
        "sys.exit(healthcheck.main(sys.argv[3:], {'RISKSTREAM_WEB_PORT': sys.argv[2]} if sys.argv[2] else {}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(HEALTHCHECK_SCRIPT.parent), str(port or ""), *argv],
        cwd=REPO,
        capture_output=True,
        timeout=30,
    )
    return result.returncode


def test_the_healthcheck_passes_while_health_answers_200(health_server):
    assert run_healthcheck(health_server(200), ["riskstream", "worker", "geo"]) == 0


def test_the_healthcheck_fails_when_health_does_not_answer_200(health_server):
    assert run_healthcheck(health_server(503), ["riskstream", "worker", "geo"]) == 1


def test_the_healthcheck_fails_when_nothing_listens():
    from apps.broker import free_port

    assert run_healthcheck(free_port(), ["riskstream", "worker", "geo"]) == 1


def test_the_healthcheck_passes_for_a_command_without_a_web_server():
    assert run_healthcheck(None, ["/usr/local/bin/riskstream", "topics", "create"]) == 0


@pytest.mark.parametrize("service", SERVICES)
def test_the_healthcheck_finds_each_services_default_port_on_its_command_line(service):
    sys.path.insert(0, str(HEALTHCHECK_SCRIPT.parent))
    try:
        import healthcheck
    finally:
        sys.path.remove(str(HEALTHCHECK_SCRIPT.parent))
    argv = ["/usr/local/bin/python", "/usr/local/bin/riskstream", "worker", service]
    assert healthcheck.port_to_check(argv, {}) == DEFAULT_WEB_PORTS[service]
    assert healthcheck.port_to_check(argv, {"RISKSTREAM_WEB_PORT": "7000"}) == 7000


def test_pid1_command_line_is_read_from_proc(tmp_path: Path):
    sys.path.insert(0, str(HEALTHCHECK_SCRIPT.parent))
    try:
        import healthcheck
    finally:
        sys.path.remove(str(HEALTHCHECK_SCRIPT.parent))
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/usr/local/bin/python\0/usr/local/bin/riskstream\0worker\0decision\0")
    assert healthcheck.pid1_argv(cmdline)[-2:] == ["worker", "decision"]
