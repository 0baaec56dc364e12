"""HA: API tokens and client groups replicate; audit entries of a secondary flow back."""

from __future__ import annotations

import aiohttp

from rportd.app import RportServer
from rportd.clients.groups import ClientGroup, normalize_params
from rportd.clients.model import Client
from tests.conftest import Api
from tests.ha.test_replication import Pair, eventually, pair

__all__ = ["pair"]

ADMIN = ("admin", "admin-password-123")


async def _standby(server: RportServer) -> bool:
    return server.ha is not None and server.ha.state == "standby"


async def test_tokens_and_groups_replicate(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _standby(secondary))
    assert primary.api_tokens is not None and secondary.api_tokens is not None

    token, clear = await primary.api_tokens.create("admin", "replicated", "read", None)
    group = ClientGroup("web", "web servers", normalize_params({"tag": ["web"]}), ["Users"])
    await primary.client_groups.create(group)

    async def arrived() -> bool:
        return (
            secondary.client_groups.get("web") is not None
            and secondary.api_tokens is not None
            and secondary.api_tokens.get("admin", token.prefix) is not None
        )

    await eventually(arrived)
    copy = secondary.client_groups.get("web")
    assert copy is not None and copy.allowed_user_groups == ["Users"]
    assert copy.params["tag"] == ["web"]
    async with aiohttp.ClientSession() as http:
        on_secondary = Api(http, f"{pair.secondary_url}/api/v1", ("admin", clear))
        status, body = await on_secondary.get("/client-groups/web")
        assert status == 200 and body["data"]["description"] == "web servers"
        # The secondary refuses writes of replicated data of its own.
        admin = on_secondary.as_user(*ADMIN)
        status, body = await admin.post("/client-groups", json={"id": "rogue", "params": {}})
        assert status == 403 and "secondary" in body["errors"][0]["title"]
        status, body = await on_secondary.as_user("admin", clear).delete(
            f"/me/tokens/{token.prefix}"
        )
        assert status == 403

    await primary.api_tokens.delete("admin", token.prefix)
    await primary.client_groups.delete("web")

    async def gone() -> bool:
        assert secondary.api_tokens is not None
        return (
            secondary.client_groups.get("web") is None
            and secondary.api_tokens.get("admin", token.prefix) is None
        )

    await eventually(gone)


async def test_audit_entries_flow_back(pair: Pair) -> None:
    primary = await pair.start("p", "primary")
    secondary = await pair.start("s", "secondary")
    await eventually(lambda: _standby(secondary))
    async with aiohttp.ClientSession() as http:
        on_secondary = Api(http, f"{pair.secondary_url}/api/v1", ADMIN)
        # Session deletion is a replicated write: refused on a secondary.
        status, body = await on_secondary.delete("/users/admin/sessions")
        assert status == 403 and pair.primary_url in body["errors"][0]["title"]
        # Deleting a disconnected client is not: the secondary does it and audits it.
        secondary.clients.registry.adopt(Client(id="gone", client_auth_id="client1"))
        assert await on_secondary.delete("/clients/gone") == (204, None)
        status, body = await on_secondary.get("/auditlog")
        assert status == 200
        [entry] = body["data"]
        assert (entry["application"], entry["affected_id"]) == ("client", "gone")

        # Pushed by whichever runs first: this call or the node's own sync back.
        assert secondary.syncback is not None
        await secondary.syncback.push(pair.primary_url)
        assert await secondary.syncback.push(pair.primary_url) == 0  # nothing left to send
        on_primary = Api(http, f"{pair.primary_url}/api/v1", ADMIN)
        status, body = await on_primary.get("/auditlog")
        assert status == 200 and body["data"] == [entry]  # stored once
        # A batch shipped twice stores nothing new.
        assert primary.auditlog is not None
        assert await primary.auditlog.insert_documents([entry]) == 0
