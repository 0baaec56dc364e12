"""Samples which nodes admit clients, to measure how long two or more did at once.

``async with AdmissionChecker({"primary": url, ...}) as checker:`` polls every node's
``GET /api/v1/ha/status`` (signed with the cluster secret, which costs no bcrypt)
every ``period`` seconds and reads its boolean ``admitting``. A node that does not
answer 200 within ``answer_timeout`` admits nobody (hung, dead or refusing).
Each sample's states hold until the next sample, so
:attr:`AdmissionChecker.both_admitting_seconds` is the time during which two or more
nodes admitted, to within one period; :attr:`AdmissionChecker.unanswered` counts the
samples each node missed (a slow node can hide an overlap: assert it stays small). A 200
reply without a boolean ``admitting`` is an error raised on exit, so a test cannot pass
by reading nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp

from rportd.ha import auth
from tests.ha.cluster import CLUSTER_SECRET

STATUS_PATH = "/api/v1/ha/status"


@dataclass(frozen=True)
class Sample:
    """Who admitted at monotonic time ``at``."""

    at: float
    admitting: Mapping[str, bool]

    @property
    def admitters(self) -> list[str]:
        return sorted(name for name, admits in self.admitting.items() if admits)


class AdmissionChecker:
    """Polls nodes' admission in the background while the context is open."""

    def __init__(
        self,
        nodes: Mapping[str, str],
        *,
        period: float = 0.1,
        answer_timeout: float = 0.5,
        secret: str = CLUSTER_SECRET,
    ) -> None:
        """``nodes``: name -> API base URL (``http://127.0.0.1:<api port>``)."""
        self.nodes = dict(nodes)
        self.period = period
        self.answer_timeout = answer_timeout
        self.secret = secret
        self.samples: list[Sample] = []
        self.errors: list[str] = []
        # Samples per node without a 200 answer in time: a slow node hides overlaps.
        self.unanswered: dict[str, int] = dict.fromkeys(self.nodes, 0)
        self.ended_at: float | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AdmissionChecker:
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="admission checker")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.ended_at = time.monotonic()
        if exc_type is None and self.errors:
            raise AssertionError("admission sampling failed:\n" + "\n".join(self.errors[:5]))

    async def _run(self) -> None:
        next_at = time.monotonic()
        while True:
            at = time.monotonic()
            states = await asyncio.gather(*(self._admitting(name) for name in self.nodes))
            self.samples.append(Sample(at, dict(zip(self.nodes, states, strict=True))))
            next_at = max(next_at + self.period, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    async def _admitting(self, name: str) -> bool:
        assert self._session is not None
        url = self.nodes[name]
        try:
            headers = {auth.HEADER: auth.sign(self.secret, "checker", 0, "GET", STATUS_PATH)}
            async with self._session.get(
                url + STATUS_PATH,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.answer_timeout),
            ) as resp:
                if resp.status != 200:
                    self.unanswered[name] += 1
                    return False
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            self.unanswered[name] += 1
            return False
        data = body.get("data") if isinstance(body, dict) else None
        admitting = data.get("admitting") if isinstance(data, dict) else None
        if not isinstance(admitting, bool):
            self.errors.append(f"{url}{STATUS_PATH}: no boolean 'admitting' in {body!r}")
            return False
        return admitting

    # --- results ---------------------------------------------------------------------

    def _spans(self) -> list[tuple[Sample, float]]:
        """Each sample with the time until the next one (the last: until the end)."""
        end = self.ended_at if self.ended_at is not None else time.monotonic()
        ends = [sample.at for sample in self.samples[1:]] + [end]
        return [
            (sample, max(0.0, until - sample.at))
            for sample, until in zip(self.samples, ends, strict=True)
        ]

    @property
    def both_admitting_seconds(self) -> float:
        """Total time two or more nodes admitted at once."""
        return sum(length for sample, length in self._spans() if len(sample.admitters) >= 2)

    def intervals(self, name: str) -> list[tuple[float, float]]:
        """(start, end) monotonic times during which node ``name`` admitted."""
        result: list[tuple[float, float]] = []
        for sample, length in self._spans():
            if not sample.admitting.get(name):
                continue
            if result and result[-1][1] == sample.at:
                result[-1] = (result[-1][0], sample.at + length)
            else:
                result.append((sample.at, sample.at + length))
        return result

    def timeline(self) -> str:
        """One line per change of who admits, times relative to the first sample."""
        if not self.samples:
            return "(no samples)"
        start = self.samples[0].at
        lines = []
        previous: list[str] | None = None
        for sample in self.samples:
            if sample.admitters != previous:
                previous = sample.admitters
                who = ", ".join(previous) or "nobody"
                lines.append(f"+{sample.at - start:7.2f}s  admitting: {who}")
        silent = ", ".join(f"{name} {count}" for name, count in self.unanswered.items())
        lines.append(
            f"{len(self.samples)} samples (unanswered: {silent}); two or more admitting for "
            f"{self.both_admitting_seconds:.2f} s"
        )
        return "\n".join(lines)
