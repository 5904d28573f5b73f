"""Fixtures shared by every tier."""

from __future__ import annotations

from pathlib import Path

import agents
import apps
import tables

REPO = Path(__file__).resolve().parents[2]


def test_packages_come_from_this_repository():
    # `tables` is also PyTables and `agents` another SDK: make sure we test ours.
    for package in (apps, agents, tables):
        assert Path(package.__file__).resolve().parent.parent == REPO, package.__file__
