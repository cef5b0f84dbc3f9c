"""Fixtures: a fresh OVERLAY_ROOT tree per test, and booting overlayd over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import Booted, Tree, can_unshare

needs_root = pytest.mark.skipif(not can_unshare(), reason="needs root and unshare (PID namespace)")


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    tmp_path.chmod(0o755)
    return Tree(tmp_path)


@pytest.fixture
def boot(tree: Tree) -> Iterator:
    """boot(cmd..., env=..., pid1=True) → a running Booted; all are killed at teardown."""
    started: list[Booted] = []

    def start(*cmd: str, **kwargs: object) -> Booted:
        booted = Booted(tree, cmd, **kwargs)  # type: ignore[arg-type]
        started.append(booted)
        return booted

    yield start
    for booted in started:
        booted.close()
