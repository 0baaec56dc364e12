"""Bans that cannot be dodged or forged, and waits a stranger cannot impose on the rightful
user (issue items 4 and 5), on both listeners of a real rportd process."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.hostile.conftest import (
    ADMIN,
    CLIENT_AUTH,
    HOSTILE_IP,
    ServerFactory,
    from_address,
    sim_config,
)
from tests.simulator import RportClientSim, http_request


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": aiohttp.encode_basic_auth(user, password)}


async def api_login(
    http: aiohttp.ClientSession, base: str, user: str, password: str, **headers: str
) -> int:
    async with http.get(f"{base}/login", headers={**basic(user, password), **headers}) as resp:
        return resp.status


async def test_rotating_forwarded_for_does_not_dodge_the_api_ban(
    make_rportd: ServerFactory,
) -> None:
    server = await make_rportd(api={"max_failed_login": 3, "user_login_wait": 0})
    async with from_address(HOSTILE_IP) as hostile, from_address("127.0.0.1") as legit:
        for i in range(3):
            xff = {"X-Forwarded-For": f"198.51.100.{i + 1}"}
            assert await api_login(hostile, server.api_base, "admin", "wrong", **xff) == 401
        # The attacker's own address is banned, whatever it claims to be.
        xff = {"X-Forwarded-For": "198.51.100.99"}
        assert await api_login(hostile, server.api_base, *ADMIN, **xff) == 423
        # Forging someone else's address bans nobody else.
        for _ in range(3):
            await api_login(legit, server.api_base, *ADMIN, **{"X-Forwarded-For": HOSTILE_IP})
        assert await api_login(legit, server.api_base, *ADMIN) == 200


async def test_forwarded_for_counts_from_a_trusted_proxy(make_rportd: ServerFactory) -> None:
    server = await make_rportd(
        api={"max_failed_login": 3, "user_login_wait": 0, "trusted_proxies": [HOSTILE_IP]}
    )
    async with from_address(HOSTILE_IP) as proxy:
        for _ in range(3):
            xff = {"X-Forwarded-For": "203.0.113.7"}
            assert await api_login(proxy, server.api_base, "admin", "wrong", **xff) == 401
        banned = {"X-Forwarded-For": "203.0.113.7"}
        assert await api_login(proxy, server.api_base, *ADMIN, **banned) == 423
        other = {"X-Forwarded-For": "203.0.113.8"}
        assert await api_login(proxy, server.api_base, *ADMIN, **other) == 200


async def test_rotating_forwarded_for_does_not_dodge_the_client_ban(
    make_rportd: ServerFactory,
) -> None:
    server = await make_rportd(server={"max_failed_login": 3, "client_login_wait": 0})
    async with from_address(HOSTILE_IP) as session:
        for i in range(3):
            bad = RportClientSim(
                sim_config(
                    server,
                    auth=f"{CLIENT_AUTH[0]}:wrong",
                    headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
                ),
                http_session=session,
            )
            assert (await bad.connect_once()).stage == "auth"
        status, _, body = await http_request(
            server.client_url,
            headers={"X-Forwarded-For": "198.51.100.50"},
            http_session=session,
        )
    assert (status, body) == (423, b"Too many bad attempts. Please try later.")


async def test_stranger_cannot_lock_the_admin_out(make_rportd: ServerFactory) -> None:
    """Wrong passwords for `admin` every 0.5 s from elsewhere (default 2 s wait, ban after 10)."""
    server = await make_rportd()
    async with from_address(HOSTILE_IP) as hostile, from_address("127.0.0.1") as legit:
        stop = asyncio.Event()
        statuses: list[int] = []

        async def attack() -> None:
            while not stop.is_set():
                statuses.append(await api_login(hostile, server.api_base, "admin", "guess"))
                await asyncio.sleep(0.5)

        attacker = asyncio.create_task(attack())
        try:
            results = []
            for _ in range(10):
                results.append(await api_login(legit, server.api_base, *ADMIN))
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await attacker
    assert results == [200] * 10
    # The attempts refused during the wait count toward the attacker's ban.
    assert 423 in statuses, statuses


async def test_stranger_cannot_keep_the_client_out(
    make_rportd: ServerFactory, sims: list[RportClientSim]
) -> None:
    """Wrong passwords for `client1` every 0.5 s from elsewhere (default 2 s wait)."""
    server = await make_rportd(server={"max_failed_login": 0})  # no ban: the wait alone
    async with from_address(HOSTILE_IP) as session:
        stop = asyncio.Event()

        async def attack() -> None:
            while not stop.is_set():
                bad = RportClientSim(
                    sim_config(server, auth=f"{CLIENT_AUTH[0]}:guess"), http_session=session
                )
                await bad.connect_once()
                await asyncio.sleep(0.5)

        attacker = asyncio.create_task(attack())
        try:
            await asyncio.sleep(1)
            results = []
            for _ in range(5):
                legit = RportClientSim(sim_config(server))
                sims.append(legit)
                results.append((await legit.connect_once()).ok)
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await attacker
    assert results == [True] * 5
