"""Prometheus text parsing and ``promtool check metrics`` for the ops tests."""

from __future__ import annotations

import asyncio
import shutil

from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = "/usr/bin/promtool"


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample: (name, labels) -> value."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def family_names(text: str) -> set[str]:
    """Every metric family in ``text`` (even one without samples yet), without suffixes."""
    return {base_name(f.name) for f in text_string_to_metric_families(text)}


def base_name(name: str) -> str:
    """``x_bucket``, ``x_count``, ``x_sum``, ``x_total`` -> ``x``."""
    for suffix in ("_bucket", "_count", "_sum", "_total"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def value(text: str, name: str, **labels: str) -> float:
    """The value of one sample (KeyError naming it when absent)."""
    key = (name, frozenset(labels.items()))
    found = samples(text)
    if key not in found:
        raise KeyError(f"no sample {name}{labels} in:\n{text}")
    return found[key]


async def promtool_check(text: str) -> tuple[int, str]:
    """``promtool check metrics`` on ``text``: its exit code and what it printed."""
    assert shutil.which(PROMTOOL), f"{PROMTOOL} is missing: run tests/setup/system-packages.sh"
    proc = await asyncio.create_subprocess_exec(
        PROMTOOL,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate(text.encode())
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip()
