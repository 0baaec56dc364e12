"""CLI: run many simulated clients in one process.

    python -m tests.simulator --server ws://127.0.0.1:8080 --auth id:pw --count 1000 \
        --id-prefix sim- [--fallback URL] [--jitter 10] [--switchback 120] [--ramp 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
import sys
import time
from collections import Counter

from .client import RportClientSim
from .config import SimulatorConfig
from .transport import make_http_session


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.simulator", description=__doc__)
    p.add_argument("--server", required=True, help="main server URL (host:port or ws://...)")
    p.add_argument("--fallback", action="append", default=[], help="fallback server (repeatable)")
    p.add_argument("--auth", default="client1:secret", help="id:password for every client")
    p.add_argument("--count", type=int, default=1, help="number of simulated clients")
    p.add_argument("--id-prefix", default="sim-", help="client id prefix (<prefix><n>)")
    p.add_argument("--jitter", type=float, default=10.0, help="max delay before new_connection")
    p.add_argument("--switchback", type=float, default=120.0, help="server_switchback_interval")
    p.add_argument("--ramp", type=float, default=0.0, help="seconds over which clients start")
    p.add_argument("--keep-alive", type=float, default=180.0, help="client ping interval (0=off)")
    p.add_argument("--backoff-min", type=float, default=5.0)
    p.add_argument("--backoff-max", type=float, default=600.0)
    p.add_argument("--fingerprint", default="")
    p.add_argument("--version", default="0.9.14", help="reported client version")
    p.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    p.add_argument("--remote", action="append", default=[], help="remote spec (repeatable)")
    p.add_argument("--allow-all-commands", action="store_true", help="commands allow=['.*']")
    p.add_argument("--scripts", action="store_true", help="enable remote scripts")
    p.add_argument("--no-monitoring", action="store_true")
    p.add_argument("--no-fragment", action="store_true", help="one WS frame per write")
    p.add_argument("--report", type=float, default=5.0, help="status print interval (s)")
    p.add_argument("--duration", type=float, default=0.0, help="stop after N seconds (0=never)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def _raise_nofile() -> None:
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _main(args: argparse.Namespace) -> int:
    _raise_nofile()
    session = make_http_session(limit=0)
    sims: list[RportClientSim] = []
    for n in range(1, args.count + 1):
        cfg = SimulatorConfig(
            server=args.server,
            fallback_servers=list(args.fallback),
            auth=args.auth,
            client_id=f"{args.id_prefix}{n}",
            name=f"{args.id_prefix}{n}",
            hostname=f"{args.id_prefix}{n}",
            fingerprint=args.fingerprint,
            version=args.version,
            tags=list(args.tag),
            remotes=list(args.remote),
            connect_jitter=args.jitter,
            server_switchback_interval=args.switchback,
            keep_alive=args.keep_alive,
            backoff_min=args.backoff_min,
            backoff_max=args.backoff_max,
            remote_scripts_enabled=args.scripts,
            monitoring_enabled=not args.no_monitoring,
            fragment_size=None if args.no_fragment else 1024,
        )
        if args.allow_all_commands:
            cfg.commands_allow = [".*"]
            cfg.commands_deny = []
        sims.append(RportClientSim(cfg, http_session=session))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    async def starter() -> None:
        step = args.ramp / max(len(sims), 1)
        for s in sims:
            if stop.is_set():
                return
            await s.start()
            if step:
                await asyncio.sleep(step)

    async def reporter() -> None:
        t0 = time.monotonic()
        while True:
            await asyncio.sleep(args.report)
            states = Counter(s.state for s in sims)
            registered = sum(1 for s in sims if s.registered)
            errors = sum(s.counters.connect_errors for s in sims)
            rejects = sum(s.counters.new_connection_failures for s in sims)
            regs = sum(s.counters.registrations for s in sims)
            print(
                f"[{time.monotonic() - t0:7.1f}s] registered={registered}/{len(sims)} "
                f"registrations={regs} connect_errors={errors} new_connection_failures={rejects} "
                f"states={dict(states)}",
                flush=True,
            )

    start_task = asyncio.create_task(starter())
    report_task = asyncio.create_task(reporter())
    try:
        if args.duration > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.duration)
        else:
            await stop.wait()
    finally:
        print("stopping ...", flush=True)
        start_task.cancel()
        report_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await start_task
        with contextlib.suppress(asyncio.CancelledError):
            await report_task
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)
        await session.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = _parse(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
