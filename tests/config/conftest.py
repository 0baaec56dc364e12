"""Shared helpers for config tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test in an empty directory so no stray ./rportd.conf is found."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def write_conf(tmp_path: Path) -> Callable[[str], str]:
    """Write a TOML config file and return its path."""
    counter = iter(range(1_000_000))

    def write(text: str) -> str:
        path = tmp_path / f"conf{next(counter)}.toml"
        path.write_text(text, encoding="utf-8")
        return str(path)

    return write
