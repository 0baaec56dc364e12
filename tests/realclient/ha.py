"""The real client against an HA pair set up from deploy/: fail over to the secondary, come back.

The pair is configured as the README's "High availability" section says, from
deploy/rportd.primary.conf and deploy/rportd.secondary.conf (addresses, paths and secrets made
local), the client as deploy/rport.client.conf (`fallback_servers`, `server_switchback_interval`).
"""

from __future__ import annotations

import asyncio
import json
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import bcrypt

from .checks import CheckFailed, Context, expect, poll, run_job, tcp_echo_through
from .procs import ADMIN, CLIENT_AUTH, REPO, Client, Server, free_port

CLUSTER_SECRET = "realclient-ha-cluster-secret"


@dataclass
class HaRun:
    """Outcomes and figures of one fail-over and switch-back."""

    steps: list[tuple[str, bool, str, float]] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def step(self, name: str, ok: bool, detail: str = "", seconds: float = 0.0) -> None:
        self.steps.append((name, ok, detail, seconds))


def _node(root: Path, role: str, used_ports: list[str]) -> Server:
    conf = tomllib.loads((REPO / "deploy" / f"rportd.{role}.conf").read_text())
    server = Server(root / role, kind="ours", base=conf)
    root.joinpath(role).mkdir(parents=True, exist_ok=True)
    auth_file = root / role / "client-auth.json"
    auth_file.write_text(json.dumps({CLIENT_AUTH[0]: CLIENT_AUTH[1]}))
    users = root / role / "api-auth.json"
    hashed = "$2y$" + bcrypt.hashpw(ADMIN[1].encode(), bcrypt.gensalt(6)).decode()[4:]
    users.write_text(
        json.dumps([{"username": ADMIN[0], "password": hashed, "groups": ["Administrators"]}])
    )
    conf["server"].update(
        address=f"127.0.0.1:{server.client_port}",
        url=[server.client_url],
        key_seed="realclient-ha-key-seed",
        auth_file=str(auth_file),
        data_dir=str(root / role / "data"),
        used_ports=used_ports,
        excluded_ports=[],
        allow_root=True,
    )
    conf["logging"].update(log_file=str(root / role / "rportd.log"), log_level="debug")
    conf["api"].update(
        address=f"127.0.0.1:{server.api_port}",
        auth_file=str(users),
        jwt_secret="realclient-ha-jwt-secret-long-enough",
    )
    conf["ha"]["cluster_secret"] = CLUSTER_SECRET
    return server


async def _served_by(ctx: Context, server: Server) -> bool:
    ctx.server = server
    try:
        status, body = await ctx.call("", "GET", f"/clients/{ctx.client_id}", record=False)
    except (aiohttp.ClientError, OSError):
        return False
    return status == 200 and body["data"]["connection_state"] == "connected"


async def _command(ctx: Context, text: str) -> str:
    """Run `echo text` on the client; its jid once it succeeded."""
    job = await run_job(
        ctx, "command", f"/clients/{ctx.client_id}/commands", {"command": f"echo {text}"}
    )
    expect(job["status"] == "successful", f"job {text}: {job['status']} {job.get('error')}")
    return str(job["jid"])


async def run_ha(rport: str, root: Path, tcp_echo_port: int, switchback: str = "30s") -> HaRun:
    """Kill the primary under the real client, then restart it; record what happened when."""
    run = HaRun()
    used_ports = [str(free_port()) for _ in range(5)]
    primary = _node(root, "primary", used_ports)
    secondary = _node(root, "secondary", used_ports)
    primary.base["ha"]["peers"] = [f"http://127.0.0.1:{secondary.api_port}"]  # type: ignore[index]
    secondary.base["ha"].update(  # type: ignore[index]
        peers=[f"http://127.0.0.1:{primary.api_port}"],
        primary=f"http://127.0.0.1:{primary.api_port}",
    )
    client_conf = tomllib.loads((REPO / "deploy" / "rport.client.conf").read_text())["client"]
    client = Client(root / "client", binary=rport, server_url=primary.client_url, connection={})
    async with aiohttp.ClientSession() as http:
        ctx = Context(primary, client, http, tcp_echo_port, 0, root / "work")
        try:
            await primary.start()
            await secondary.start()
            status, body = await ctx.call("", "GET", "/status", record=False)
            client.fingerprint = body["data"]["fingerprint"]
            client.extra = {
                "client": {
                    "fallback_servers": [secondary.client_url],
                    "server_switchback_interval": switchback,
                }
            }
            expect(
                bool(client_conf["fallback_servers"])
                and bool(client_conf["server_switchback_interval"]),
                "deploy/rport.client.conf lost its fail-over keys",
            )
            await client.start()
            await poll("client on the primary", lambda: _served_by(ctx, primary), 40)
            run.step("client served by the primary", True)
            status, body = await ctx.call(
                "",
                "PUT",
                f"/clients/{ctx.client_id}/tunnels?remote=127.0.0.1:{tcp_echo_port}",
                record=False,
            )
            expect(status == 200, f"tunnel on the primary: {status} {body}")
            lport = int(body["data"]["lport"])
            expect(await tcp_echo_through(lport, b"before") == b"before", "tunnel on primary")
            jid_before = await _command(ctx, "before-failover")
            run.step("tunnel and job on the primary", True)
            await asyncio.sleep(2)  # replication of the tunnel list (p99 < 1 s)

            status, body = await ctx.call(
                "",
                "POST",
                f"/clients/{ctx.client_id}/commands",
                record=False,
                json={"command": "sleep 25", "timeout_sec": 120},
            )
            expect(status == 200, f"long job: {status} {body}")
            jid_across = str(body["data"]["jid"])
            await asyncio.sleep(1)
            began = time.monotonic()
            primary.kill()
            await poll("client served by the secondary", lambda: _served_by(ctx, secondary), 120)
            run.figures["client served by the secondary after kill (s)"] = time.monotonic() - began
            run.step(
                "client on the secondary after SIGKILL of the primary",
                True,
                "",
                time.monotonic() - began,
            )

            async def tunnel_back() -> bool:
                try:
                    return await tcp_echo_through(lport, b"secondary") == b"secondary"
                except (OSError, asyncio.IncompleteReadError, TimeoutError):
                    return False

            await poll("the tunnel on the secondary", tunnel_back, 20)
            jid_secondary = await _command(ctx, "on-secondary")
            run.step("tunnel re-created and job run on the secondary", True)

            await primary.process.wait()  # type: ignore[union-attr]
            primary.process = None
            began = time.monotonic()
            await primary.start()
            await poll("client back on the primary", lambda: _served_by(ctx, primary), 180)
            run.figures["client back on the primary after restart (s)"] = time.monotonic() - began
            run.step("client switched back to the primary", True, "", time.monotonic() - began)

            expect(await tunnel_back(), "the tunnel does not pass bytes after switch-back")
            for jid, what in (
                (jid_before, "before the failover"),
                (jid_secondary, "on the secondary"),
                (
                    jid_across,
                    "across the failover (started on the primary, ended on the secondary)",
                ),
            ):

                async def present(jid: str = jid) -> bool:
                    status, body = await ctx.call(
                        "", "GET", f"/clients/{ctx.client_id}/commands/{jid}", record=False
                    )
                    return status == 200 and body["data"]["status"] == "successful"

                await poll(f"job run {what} on the primary", present, 30)
            await _command(ctx, "after-switchback")
            run.step("tunnel, the three jobs and a new job on the primary", True)
            ctx.server = secondary
            ok = not await _served_by(ctx, secondary)
            run.step("secondary no longer serves the client", ok)
        except (CheckFailed, RuntimeError, KeyError, TimeoutError) as exc:
            run.step("failed", False, f"{type(exc).__name__}: {exc}")
        finally:
            await client.stop()
            await secondary.stop()
            await primary.stop()
    return run
