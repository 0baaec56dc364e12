"""``enable_ws_test_endpoints``: the three WebSocket test pages, used in a real browser."""

from __future__ import annotations

import json

import aiohttp

from tests.browser import headless_browser
from tests.clients.test_connect import sim_config
from tests.conftest import Api, ServerFactory, api_base
from tests.simulator import RportClientSim
from tests.webui.test_doc_root import web_base

PAGES = ("commands", "scripts", "uploads")


async def test_pages_only_when_enabled(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    off = await make_server("off")
    # The deprecated [server] key turns them on too, as upstream.
    on = await make_server("on", server={"enable_ws_test_endpoints": True})
    for page in PAGES:
        async with http.get(f"{api_base(off)}/test/{page}/ui") as resp:
            assert resp.status == 404, page
        async with http.get(f"{api_base(on)}/test/{page}/ui") as resp:  # no auth needed
            assert resp.status == 200, page
            assert resp.content_type == "text/html"
            assert f"/api/v1/ws/{page}" in await resp.text()


async def test_commands_page_runs_a_command_in_the_browser(
    make_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"enable_ws_test_endpoints": True})
    api = Api(http, api_base(server), None)
    status, body = await api.post(
        "/login", json={"username": "admin", "password": "admin-password-123"}
    )
    assert status == 200, body
    token = body["data"]["token"]
    sim = RportClientSim(sim_config(server, client_id="c1"))
    try:
        await sim.start()
        await sim.wait_registered(10)
        async with headless_browser() as browser:
            page = await browser.new_page()
            await page.goto(web_base(server) + "/api/v1/test/commands/ui")
            await page.fill("#token", token)
            await page.click("#open")
            await page.wait_for_function(
                "document.getElementById('output').textContent.includes('OPEN')"
            )
            request = {"command": "/usr/bin/whoami", "client_ids": ["c1"], "timeout_sec": 10}
            await page.fill("#input", json.dumps(request))
            await page.click("#send")
            await page.wait_for_function(
                "document.getElementById('output').textContent.includes('\"successful\"')",
                timeout=15_000,
            )
            output = await page.text_content("#output") or ""
    finally:
        await sim.stop()
    results = [
        json.loads(line.removeprefix("RESPONSE: "))
        for line in output.splitlines()
        if line.startswith("RESPONSE: ")
    ]
    done = [r for r in results if r.get("status") == "successful"]
    assert done and done[0]["client_id"] == "c1"
    assert done[0]["result"]["stdout"].strip()  # whoami printed a user name
