"""Checks that restart the real client with another configuration."""

from __future__ import annotations

import json

from .checks import Check, Context, expect, poll, wait_connected
from .procs import Client


async def _restart_client(ctx: Context, extra: dict[str, dict[str, object]]) -> None:
    await ctx.client.stop()
    old = ctx.client
    ctx.client = Client(
        old.root,
        binary=old.binary,
        server_url=old.server_url,
        fingerprint=old.fingerprint,
        extra=extra,
    )
    await ctx.client.start()
    await wait_connected(ctx)


async def check_attributes_with_file(ctx: Context) -> None:
    """PUT /attributes reaches the client, which rewrites its attributes file."""
    path = ctx.workdir / "attributes.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"tags": ["from-file"], "labels": {"origin": "file"}}))
    await _restart_client(ctx, {"client": {"attributes_file_path": str(path)}})
    status, body = await ctx.call(
        "GET /clients/{id} (attributes file)", "GET", f"/clients/{ctx.client_id}"
    )
    expect(body["data"]["tags"] == ["from-file"], f"tags {body['data']['tags']!r}")
    expect(body["data"]["labels"] == {"origin": "file"}, f"labels {body['data']['labels']!r}")
    new = {"tags": ["put-1", "put-2"], "labels": {"set": "by-api"}}
    status, body = await ctx.call(
        "PUT attributes (file)", "PUT", f"/clients/{ctx.client_id}/attributes", json=new
    )
    expect(status in (200, 204), f"PUT attributes answered {status}: {body}")

    async def rewritten() -> bool:
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return False
        return bool(data.get("tags") == new["tags"] and data.get("labels") == new["labels"])

    await poll("the client rewrote its attributes file", rewritten, 15)
    await ctx.call("GET attributes (file)", "GET", f"/clients/{ctx.client_id}/attributes")
    status, body = await ctx.call(
        "GET /clients/{id} (after PUT attributes)", "GET", f"/clients/{ctx.client_id}"
    )
    expect(body["data"]["tags"] == new["tags"], f"tags after PUT {body['data']['tags']!r}")


EXTRA_CHECKS: dict[str, Check] = {"attributes with file": check_attributes_with_file}
