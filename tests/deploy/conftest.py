"""Deployment artifacts checked without a cluster or a container engine.

The Dockerfile, docker-compose.yml, the Helm chart (linted and rendered by Helm's
own Go SDK, validated against the Kubernetes schemas), the Prometheus rules
(promtool) and the Grafana dashboard are held to what the code really offers:
the `riskstream` commands, the Settings fields and the metrics the services expose.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable

import pytest

from tests.deploy.support import parse_riskstream as _parse_riskstream


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/deploy/" in item.nodeid.replace("\\", "/"):
            item.add_marker(pytest.mark.deploy)


@pytest.fixture
def parse_riskstream(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[[Iterable[str]], argparse.Namespace]:
    """Parse argv with the real `riskstream` command line, without running the command."""
    return lambda argv: _parse_riskstream(argv, monkeypatch)
