"""Leadership through etcd v3: at most one node holds a key bound to its lease.

A node takes leadership with a transaction that puts ``key`` with its lease only when the
key does not exist (``create_revision == 0``), and keeps the lease alive every TTL/3.
The key's ``create_revision`` is the *epoch*: etcd's cluster-wide revision, so each new
holder's epoch is higher than every earlier one (a fencing token).

Why a holder never overlaps the next one: etcd expires a lease no earlier than TTL after
it granted or renewed it (a new etcd leader only extends leases), and that is no earlier
than when this node *sent* the request. So :meth:`Coordinator.holding` is true only until
(monotonic time at which the last successful grant/keep-alive was sent) + TTL - margin,
on this node's own ``time.monotonic()``; no wall clock is compared with another
machine's. A holder cut off from etcd stops holding before etcd can free the key for
someone else.

Members are asked in turn, starting with the one that answered last; keep-alives go to
every member at once and the first answer counts, so members that hang (a partition)
cannot use up the time left before the deadline one request timeout after another.

Client: etcd's own v3 JSON gateway (``/v3/...`` on every member's client port since etcd
3.4) over aiohttp, which rportd already uses. The choice among PyPI clients: ``aetcd``
(maintained, asyncio) needs grpcio and protobuf, two large native packages, for the five
calls used here (lease grant, keep-alive and revoke, txn, range); ``etcd3``
(python-etcd3) has had no release since 2020 and is synchronous; ``etcd3gw``
(maintained) is synchronous (requests), so it would block the event loop or need
threads; ``async-etcd3gw`` has had no release since 2023. The gateway needs no new
dependency, and the code controls exactly what the safety argument rests on: the send
time of each request, a timeout per request, and which member is asked.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# gRPC codes after which another member may well answer (canceled, unknown, deadline
# exceeded, internal, unavailable); others are etcd's final word.
_RETRYABLE_CODES = frozenset({1, 2, 4, 13, 14})


class CoordinatorUnavailable(Exception):
    """No etcd member answered (in time)."""


class _NoAnswer(Exception):
    """One member did not answer usefully; another may."""


class EtcdError(Exception):
    """etcd answered with an error that asking another member would not change."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def safety_margin(ttl: float) -> float:
    """How long before the lease could expire in etcd a holder stops holding.

    Covers the event loop's lateness in acting on the deadline and clock-rate
    differences between this node and the etcd leader.
    """
    return min(max(0.25, ttl * 0.2), ttl / 2)


@dataclass
class _Lease:
    id: str
    ttl: int
    sent: float  # monotonic time the last successful grant/keep-alive was sent

    def deadline(self, margin: float) -> float:
        return self.sent + self.ttl - margin


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


class Coordinator:
    """One node's view of the leadership key in etcd."""

    def __init__(
        self,
        endpoints: list[str],
        node_id: str,
        *,
        ttl: float = 5.0,
        key: str = "rportd/leader",
        request_timeout: float = 1.0,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if ttl < 1:
            raise ValueError(f"ttl must be at least 1 s (etcd counts whole seconds), got {ttl}")
        self.endpoints = [endpoint.rstrip("/") for endpoint in endpoints]
        self.node_id = node_id
        self.ttl = math.ceil(ttl)
        self.key = key
        self.request_timeout = request_timeout
        self.last_error = "not started"
        self._session: aiohttp.ClientSession | None = None
        self._preferred = 0  # the endpoint that answered last is asked first
        self._lease: _Lease | None = None  # the lease the held key is bound to
        self._spare: _Lease | None = None  # granted for an attempt that lost; reused
        self._margin = safety_margin(self.ttl)
        self._epoch = 0
        self._was_holding = False
        self._callbacks: list[Callable[[], None]] = []
        self._renewer: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._acquiring = asyncio.Lock()

    # --- state -----------------------------------------------------------------------

    def holding(self) -> bool:
        """True only while this node's lease is surely still valid in etcd."""
        lease = self._lease
        return lease is not None and time.monotonic() < lease.deadline(self._margin)

    @property
    def epoch(self) -> int:
        """The key's create_revision for the current (else the last) holding; 0 before."""
        return self._epoch

    @property
    def deadline(self) -> float | None:
        """Monotonic time at which the current holding ends unless renewed."""
        return self._lease.deadline(self._margin) if self._lease is not None else None

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the loop, not awaited) whenever :meth:`holding` flips.

        A loss by deadline is reported by a timer at the deadline, so the callback may
        run a moment after :meth:`holding` already reads False: check :meth:`holding`
        itself before each act that needs leadership.
        """
        self._callbacks.append(callback)

    # --- session ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the HTTP session; does not campaign."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self.last_error = "not holding: no attempt yet"

    async def stop(self) -> None:
        """Give up a held lease (best effort), cancel every task, close the session."""
        if self._session is None:
            return
        await self.resign()
        spare, self._spare = self._spare, None
        if spare is not None:
            await self._revoke(spare)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._session.close()
        self._session = None

    # --- leadership ------------------------------------------------------------------

    async def try_acquire(self, value: str) -> bool:
        """Take the key if it is free; True if this node now holds it.

        ``value`` is what :meth:`leader` shows others (kept as it was while held).

        Never raises for etcd trouble: False, with the reason in :attr:`last_error`.
        A holding is renewed in the background until :meth:`resign`, :meth:`stop`
        or a lost lease.
        """
        async with self._acquiring:
            if self.holding():
                return True
            if self._lease is not None:  # the deadline passed before its timer ran
                self._lose(self._missed_deadline())
            try:
                return await self._acquire(value)
            except (CoordinatorUnavailable, EtcdError, LookupError) as exc:
                self.last_error = f"cannot take leadership: {exc}"
                return False

    async def _acquire(self, value: str) -> bool:
        lease = await self._usable_spare()
        try:
            reply = await self._txn(value, lease)
        except EtcdError as exc:
            if exc.code != 5:  # NOT_FOUND: the spare lease is gone; one more try
                raise
            self._spare = None
            lease = await self._grant()
            reply = await self._txn(value, lease)
        if reply.get("succeeded"):
            epoch = int(reply["header"]["revision"])
        else:
            kvs = reply["responses"][0]["response_range"].get("kvs", [])
            if not kvs:
                self._spare = lease
                self.last_error = "the leader key was released meanwhile; try again"
                return False
            holder = kvs[0]
            if holder.get("lease") != lease.id:
                self._spare = lease
                self.last_error = (
                    f"held by {_unb64(holder.get('value', ''))!r} "
                    f"(epoch {holder.get('create_revision')})"
                )
                return False
            epoch = int(holder["create_revision"])  # an earlier attempt of ours got through
        self._spare = None
        if time.monotonic() >= lease.deadline(self._margin):
            await self._keepalive(lease)  # too slow to be sure: renew before claiming
        self._begin(lease, epoch)
        return True

    async def resign(self) -> None:
        """Give leadership up now: etcd deletes the key with the revoked lease."""
        lease = self._lease
        if lease is None:
            return
        self._end("resigned")
        await self._revoke(lease)

    async def leader(self) -> tuple[str, int] | None:
        """(value, epoch) of the current holder, None if the key is free."""
        try:
            reply, _ = await self._call("/v3/kv/range", {"key": _b64(self.key)})
        except EtcdError as exc:
            raise CoordinatorUnavailable(f"etcd refused to read {self.key!r}: {exc}") from None
        kvs = reply.get("kvs", [])
        if not kvs:
            return None
        return _unb64(kvs[0].get("value", "")), int(kvs[0]["create_revision"])

    # --- holding and losing ----------------------------------------------------------

    def _begin(self, lease: _Lease, epoch: int) -> None:
        self._lease = lease
        self._epoch = epoch
        self.last_error = ""
        self._schedule_expiry()
        self._renewer = asyncio.create_task(self._renew(lease), name="etcd lease keep-alive")
        self._tasks.add(self._renewer)
        self._renewer.add_done_callback(self._tasks.discard)
        log.info(
            "%s took leadership %r (epoch %d, lease %s)", self.node_id, self.key, epoch, lease.id
        )
        self._flipped()

    def _end(self, reason: str) -> None:
        """Stop holding now: no more renewals; the old lease is left to the caller."""
        if self._lease is None:
            return
        self._lease = None
        self.last_error = reason
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        renewer, self._renewer = self._renewer, None
        if renewer is not None and renewer is not asyncio.current_task():
            renewer.cancel()
        log.warning(
            "%s gave up leadership %r (epoch %d): %s", self.node_id, self.key, self._epoch, reason
        )
        self._flipped()

    def _lose(self, reason: str) -> None:
        lease = self._lease
        if lease is None:
            return
        self._end(reason)
        self._spawn(self._revoke(lease))  # lets another node take over without waiting

    def _schedule_expiry(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        deadline = self.deadline
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self._lease is None:
            return
        if self.holding():  # woke up early
            self._schedule_expiry()
            return
        self._lose(self._missed_deadline())

    def _missed_deadline(self) -> str:
        return (
            f"could not renew the etcd lease within {self.ttl - self._margin:.2f} s "
            f"({self.last_error or 'no renewal in time'})"
        )

    def _flipped(self) -> None:
        now = self.holding()
        if now == self._was_holding:
            return
        self._was_holding = now
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:
                log.exception("coordinator on_change callback failed")

    async def _renew(self, lease: _Lease) -> None:
        retry = min(0.2, self.ttl / 10)
        wait_until = lease.sent + lease.ttl / 3
        while True:
            await asyncio.sleep(max(0.0, wait_until - time.monotonic()))
            if self._lease is not lease:
                return
            if not self.holding():  # the loop ran late: past the deadline, never resurrect
                self._lose(self._missed_deadline())
                return
            try:
                await self._keepalive(lease)
            except CoordinatorUnavailable as exc:
                self.last_error = f"cannot renew the lease: {exc}"
                wait_until = time.monotonic() + retry
                continue
            except EtcdError as exc:
                self._lose(f"etcd refused to renew the lease: {exc}")
                return
            except LookupError as exc:
                self._lose(str(exc))
                return
            if self._lease is not lease:
                return
            self.last_error = ""
            self._schedule_expiry()
            wait_until = lease.sent + lease.ttl / 3

    # --- etcd calls ------------------------------------------------------------------

    async def _usable_spare(self) -> _Lease:
        spare = self._spare
        if spare is not None and spare.deadline(self._margin) - time.monotonic() > self.ttl / 2:
            return spare
        self._spare = None
        if spare is not None:
            self._spawn(self._revoke(spare))
        return await self._grant()

    async def _grant(self) -> _Lease:
        reply, sent = await self._call("/v3/lease/grant", {"TTL": self.ttl})
        return _Lease(str(reply["ID"]), int(reply["TTL"]), sent)

    async def _keepalive(self, lease: _Lease) -> None:
        """Renew ``lease``; LookupError when etcd no longer has it."""
        reply, sent = await self._call_all("/v3/lease/keepalive", {"ID": lease.id})
        ttl = int(reply.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LookupError(f"the etcd lease {lease.id} has expired")
        lease.sent, lease.ttl = sent, ttl

    async def _txn(self, value: str, lease: _Lease) -> dict[str, Any]:
        key = _b64(self.key)
        body = {
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": key, "value": _b64(value), "lease": lease.id}}],
            "failure": [{"request_range": {"key": key}}],
        }
        reply, _ = await self._call("/v3/kv/txn", body)
        return reply

    async def _revoke(self, lease: _Lease) -> None:
        """Best effort: an unreachable etcd expires the lease by itself."""
        try:
            await self._call("/v3/lease/revoke", {"ID": lease.id})
        except (CoordinatorUnavailable, EtcdError) as exc:
            log.info("could not revoke etcd lease %s (it expires by itself): %s", lease.id, exc)

    async def _call(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST to the members in turn; the reply and the monotonic time it was sent."""
        problems = []
        count = len(self.endpoints)
        for step in range(count):
            index = (self._preferred + step) % count
            try:
                reply, sent = await self._post(index, path, body)
            except _NoAnswer as exc:
                problems.append(str(exc))
                continue
            self._preferred = index
            return reply, sent
        raise CoordinatorUnavailable("; ".join(problems))

    async def _call_all(self, path: str, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """POST to every member at once; the first good reply and when it was sent.

        For keep-alives: members that hang would otherwise use up the time to the
        deadline one request timeout after the other.
        """
        attempts = [
            asyncio.create_task(self._post(i, path, body)) for i in range(len(self.endpoints))
        ]
        problems: list[str] = []
        refusal: EtcdError | None = None
        try:
            for attempt in asyncio.as_completed(attempts):
                try:
                    return await attempt
                except _NoAnswer as exc:
                    problems.append(str(exc))
                except EtcdError as exc:
                    refusal = exc
        finally:
            for task in attempts:
                task.cancel()
            await asyncio.gather(*attempts, return_exceptions=True)
        if refusal is not None:
            raise refusal
        raise CoordinatorUnavailable("; ".join(problems))

    async def _post(
        self, index: int, path: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], float]:
        """One request to one member: (reply, monotonic time it was sent).

        Raises _NoAnswer when another member may answer, EtcdError when not.
        """
        if self._session is None:
            raise CoordinatorUnavailable("the coordinator is not started")
        endpoint = self.endpoints[index]
        sent = time.monotonic()
        try:
            async with self._session.post(
                endpoint + path,
                json=body,
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
            ) as resp:
                text = await resp.text()
            reply = json.loads(text) if text.strip() else {}
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise _NoAnswer(f"{endpoint}: {_describe(exc)}") from None
        error = _error_of(reply)
        if error is not None:
            code, message = error
            if code in _RETRYABLE_CODES or resp.status >= 500:
                raise _NoAnswer(f"{endpoint}: {message}")
            raise EtcdError(code, message)
        return reply, sent

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        if self._session is None:
            coro.close()
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _error_of(reply: Any) -> tuple[int, str] | None:
    """(gRPC code, message) when the gateway's reply is an error."""
    if not isinstance(reply, dict):
        return 2, f"unexpected reply {reply!r}"
    error = reply.get("error")
    if isinstance(error, dict):  # streaming calls (keep-alive) wrap the error
        return int(error.get("grpc_code", 2)), str(error.get("message", error))
    if error is not None or "code" in reply:
        return int(reply.get("code", 2)), str(reply.get("message") or error)
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    return str(exc) or type(exc).__name__
