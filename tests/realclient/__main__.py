"""Check the real rport client against rportd (and, with --upstream, against upstream's rportd).

    python -m tests.realclient --rport /path/to/rport [--upstream /path/to/rportd] [--only NAME]

Starts the server(s) and the real client itself on 127.0.0.1 (ports 42000-42999, files in a
temporary directory), runs every check on each server, prints a PASS/FAIL table (and, with
--upstream, every difference between the two servers' answers) and exits 1 on any failure.
Nothing is built: the binaries are given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from .checks import CHECKS, KNOWN, CheckFailed, Context, compare, wait_connected
from .db import run_db
from .extra import EXTRA_CHECKS
from .ha import run_ha
from .procs import Client, Server, admin_auth, free_port


async def _tcp_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


@contextlib.asynccontextmanager
async def echo_servers() -> AsyncIterator[tuple[int, int]]:
    tcp_port, udp_port = free_port(), free_port()
    tcp = await asyncio.start_server(_tcp_echo, "127.0.0.1", tcp_port)
    loop = asyncio.get_running_loop()
    udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", udp_port))
    try:
        yield tcp_port, udp_port
    finally:
        tcp.close()
        udp.close()


async def fingerprint(server: Server, http: aiohttp.ClientSession) -> str:
    async with http.get(f"{server.api_url}/status", headers=admin_auth()) as resp:
        return str((await resp.json())["data"]["fingerprint"])


Result = tuple[str, str, bool, str, float]  # server kind, check, ok, detail, seconds


async def run_on(
    kind: str, args: argparse.Namespace, root: Path, echo: tuple[int, int], names: list[str]
) -> tuple[list[Result], Context]:
    """Start one server and the real client, run the checks; stop both."""
    server = Server(root / f"{kind}-server", kind=kind, binary=args.upstream or "")
    results: list[Result] = []
    client = Client(root / f"{kind}-client", binary=args.rport)
    async with aiohttp.ClientSession() as http:
        ctx = Context(server, client, http, echo[0], echo[1], root / f"{kind}-work")
        try:
            await server.start()
            client.server_url = server.client_url
            client.fingerprint = await fingerprint(server, http)
            await client.start()
            await wait_connected(ctx)
            for name in names:
                check = CHECKS.get(name) or EXTRA_CHECKS[name]
                began, first = time.monotonic(), len(ctx.observations)
                try:
                    await asyncio.wait_for(check(ctx), 150)
                    results.append((kind, name, True, "", time.monotonic() - began))
                except (
                    CheckFailed,
                    KeyError,
                    TypeError,
                    TimeoutError,
                    aiohttp.ClientError,
                    OSError,
                ) as exc:
                    detail = f"{type(exc).__name__}: {exc}"
                    results.append((kind, name, False, detail, time.monotonic() - began))
                for obs in ctx.observations[first:]:
                    obs.check = name
        except (RuntimeError, CheckFailed) as exc:
            results.append((kind, "start", False, str(exc), 0.0))
        finally:
            await ctx.client.stop()  # a check may have replaced the client
            await client.stop()
            await server.stop()
    return results, ctx


async def main_ha(args: argparse.Namespace, root: Path) -> int:
    async with echo_servers() as echo:
        run = await run_ha(args.rport, root, echo[0], args.switchback)
    print(f"\n{'step':<56} {'result':<6} {'s':>6}  detail")
    for name, ok, detail, seconds in run.steps:
        print(f"{name:<56} {'PASS' if ok else 'FAIL':<6} {seconds:6.1f}  {detail:.300}")
    for what, value in run.figures.items():
        print(f"  {what}: {value:.1f}")
    print(f"\nlogs: {root}")
    return 0 if all(ok for _, ok, _, _ in run.steps) else 1


async def main_db(args: argparse.Namespace, root: Path) -> int:
    steps = await run_db(args.rport, args.upstream, root, args.external_db.split(","))
    print(f"\n{'server/db':<16} {'step':<60} {'result':<6} detail")
    for where, name, ok, detail, _ in steps:
        print(f"{where:<16} {name:<60} {'PASS' if ok else 'FAIL':<6} {detail:.300}")
    print(f"\nlogs: {root}")
    return 0 if steps and all(step[2] for step in steps) else 1


async def main(args: argparse.Namespace) -> int:
    names = args.only or [*CHECKS, *EXTRA_CHECKS]
    root = Path(tempfile.mkdtemp(prefix="rc-check-", dir=args.workdir))
    print(f"working in {root}")
    if args.ha:
        return await main_ha(args, root)
    if args.external_db:
        return await main_db(args, root)
    kinds = ["ours"] + (["upstream"] if args.upstream else [])
    async with echo_servers() as echo:
        runs = await asyncio.gather(*(run_on(kind, args, root, echo, names) for kind in kinds))
    failed = False
    broken: set[str] = set()  # checks that failed somewhere: their answers are not compared
    print(f"\n{'server':<9} {'check':<28} {'result':<6} {'s':>5}  detail")
    for results, _ in runs:
        for kind, name, ok, detail, seconds in results:
            if not ok:
                broken.add(name)
                failed |= kind == "ours"  # upstream's own failures are shown, not counted
            print(
                f"{kind:<9} {name:<28} {'PASS' if ok else 'FAIL':<6} {seconds:5.1f}  {detail:.300}"
            )
    if args.upstream:
        ours, theirs = runs[0][1], runs[1][1]
        differences = compare(
            [o for o in ours.observations if o.check not in broken],
            [o for o in theirs.observations if o.check not in broken],
        )
        result = "PASS" if not differences else "FAIL"
        print(f"\n{'diff':<9} {'answers ours vs upstream':<28} {result}")
        for line in differences:
            print(f"  {line}")
        failed |= bool(differences)
        for name in sorted(broken):
            print(f"  not compared: {name} (failed on a server)")
        for path, why in KNOWN.items():
            print(f"  known, not counted: {path}: {why}")
        if args.dump:
            import json

            for kind, (_, ctx) in zip(kinds, runs, strict=True):
                dump = [o.__dict__ for o in ctx.observations]
                (root / f"{kind}-answers.json").write_text(json.dumps(dump, indent=1))
    print(f"\nlogs and answers: {root}")
    return 1 if failed else 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.realclient", description=__doc__)
    p.add_argument("--rport", required=True, help="the real rport client binary")
    p.add_argument("--upstream", help="upstream's rportd binary, to compare answers with")
    p.add_argument("--only", action="append", help="run only this check (repeatable)")
    p.add_argument("--workdir", default=None, help="where the temporary directory goes")
    p.add_argument("--ha", action="store_true", help="fail over an HA pair (deploy/) instead")
    p.add_argument(
        "--external-db",
        help="instead: client credentials in auth_table of these engines (mysql,postgres)",
    )
    p.add_argument("--switchback", default="30s", help="the client's switchback interval (--ha)")
    p.add_argument("--dump", action="store_true", help="write every answer to <kind>-answers.json")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_parse(None))))
