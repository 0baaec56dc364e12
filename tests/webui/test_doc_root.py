"""``[api] doc_root``: the web UI's files at ``/`` beside ``/api/v1`` (api.md §0)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from pathlib import Path

import aiohttp
import pytest

from rportd.app import RportServer, StartupError
from tests.browser import headless_browser
from tests.clients.test_connect import sim_config
from tests.conftest import ADMIN, ServerFactory
from tests.simulator import RportClientSim
from tests.tunnels.test_proxy import self_signed

SITE = Path(__file__).parent / "site"
SECRET = "outside-doc-root-secret"


@pytest.fixture
def doc_root(tmp_path: Path) -> Path:
    """The fixture site, plus symlinks that point inside and outside of it."""
    root = tmp_path / "ui"
    shutil.copytree(SITE, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (tmp_path / "secret.txt").write_text(SECRET)
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "escape.txt").symlink_to(outside / "secret.txt")
    (root / "alias.js").symlink_to(root / "assets" / "js" / "app.js")
    return root


def web_base(server: RportServer, scheme: str = "http") -> str:
    assert server.api_address is not None
    return "{}://{}:{}".format(scheme, *server.api_address)


async def raw_get(server: RportServer, target: str) -> tuple[int, bytes]:
    """GET with the request target sent byte for byte (no client-side normalisation)."""
    assert server.api_address is not None
    reader, writer = await asyncio.open_connection(*server.api_address)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_browser_logs_in_through_the_served_ui(
    make_server: ServerFactory, doc_root: Path
) -> None:
    server = await make_server(api={"doc_root": str(doc_root)})
    base = web_base(server)
    async with headless_browser() as browser:
        page = await browser.new_page()
        await page.goto(base + "/")
        await page.fill("#username", ADMIN[0])
        await page.fill("#password", ADMIN[1])
        await page.click("#submit")
        await page.wait_for_selector("#me:not([hidden])", timeout=15_000)
        assert await page.text_content("#me-username") == ADMIN[0]
        assert await page.text_content("#me-groups") == "Administrators"
        assert await page.text_content("#error") == ""

        # A reload on any route of the single-page app gets the app, at that route.
        for route in ("/dashboard/0f1e2d3c", "/Users", "/auth/login"):
            response = await page.goto(base + route)
            assert response is not None and response.status == 200, route
            await page.wait_for_function(
                "route => document.getElementById('route').textContent === route", arg=route
            )

        # Wrong password: the UI renders upstream's error.
        await page.goto(base + "/")
        await page.fill("#username", ADMIN[0])
        await page.fill("#password", "wrong")
        await page.click("#submit")
        await page.wait_for_function("document.getElementById('error').textContent !== ''")
        assert await page.text_content("#error") == "unauthorized"


async def test_files_index_redirects_and_caching(
    make_server: ServerFactory, doc_root: Path, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api={"doc_root": str(doc_root)})
    base = web_base(server)
    index = (doc_root / "index.html").read_text()
    script = (doc_root / "assets" / "js" / "app.js").read_text()

    async with http.get(base + "/") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        assert await resp.text() == index
    async with http.get(base + "/assets/js/app.js") as resp:
        assert resp.status == 200
        assert "javascript" in resp.content_type
        assert await resp.text() == script
        last_modified = resp.headers["Last-Modified"]
    async with http.get(
        base + "/assets/js/app.js", headers={"If-Modified-Since": last_modified}
    ) as resp:
        assert resp.status == 304
    async with http.get(base + "/assets/js/app.js", headers={"Accept-Encoding": "gzip"}) as resp:
        assert resp.headers.get("Content-Encoding") == "gzip"
        assert await resp.text() == script
    # A symlink that stays inside doc_root is followed.
    async with http.get(base + "/alias.js") as resp:
        assert resp.status == 200 and await resp.text() == script

    # As Go's FileServer: /index.html and a directory without its slash are redirected.
    for path, location in (("/index.html", "/"), ("/assets", "/assets/")):
        async with http.get(base + path, allow_redirects=False) as resp:
            assert resp.status == 301, path
            assert resp.headers["Location"] == location
    # A directory without an index is not listed; a missing asset is a plain 404.
    for path in ("/assets/", "/assets/js/missing.js", "/favicon.ico"):
        async with http.get(base + path) as resp:
            assert resp.status == 404, path
            assert await resp.text() == "404 page not found"
    # The API keeps its own answers.
    async with http.get(base + "/api/v1/no-such-route") as resp:
        assert resp.status == 404 and await resp.text() == "404 page not found"
    async with http.get(base + "/api/v1/status") as resp:
        assert resp.status == 401
    basic = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}
    async with http.delete(base + "/api/v1/status", headers=basic) as resp:  # wrong method
        assert resp.status == 405
    async with http.post(base + "/") as resp:
        assert resp.status == 405


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/..%2f..%2f..%2fsecret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/..%5c..%5csecret.txt",
        "/escape/secret.txt",
        "/escape.txt",
        "/escape/secret.txt?x=1",
    ],
)
async def test_no_path_leaves_doc_root(
    make_server: ServerFactory, doc_root: Path, target: str
) -> None:
    server = await make_server(api={"doc_root": str(doc_root)})
    status, body = await raw_get(server, target)
    assert status == 404, (target, status)
    assert SECRET.encode() not in body


async def test_doc_root_over_tls(
    make_server: ServerFactory, doc_root: Path, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    cert, key = self_signed(tmp_path)
    server = await make_server(api={"doc_root": str(doc_root), "cert_file": cert, "key_file": key})
    context = ssl.create_default_context(cafile=cert)
    context.check_hostname = False
    async with http.get(web_base(server, "https") + "/dashboard", ssl=context) as resp:
        assert resp.status == 200
        assert await resp.text() == (doc_root / "index.html").read_text()
    basic = {"Authorization": aiohttp.encode_basic_auth(*ADMIN)}
    async with http.get(
        web_base(server, "https") + "/api/v1/status", ssl=context, headers=basic
    ) as resp:
        assert resp.status == 200


async def test_browser_runs_a_command_over_wss_from_the_served_ui(
    make_server: ServerFactory, doc_root: Path, tmp_path: Path
) -> None:
    """The UI's command console: a page from doc_root over HTTPS opens ``wss://`` itself."""
    cert, key = self_signed(tmp_path)
    server = await make_server(api={"doc_root": str(doc_root), "cert_file": cert, "key_file": key})
    sim = RportClientSim(sim_config(server, client_id="c1"))
    try:
        await sim.start()
        await sim.wait_registered(10)
        async with headless_browser() as browser:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            await page.goto(web_base(server, "https") + "/dashboard/c1")
            await page.fill("#username", ADMIN[0])
            await page.fill("#password", ADMIN[1])
            await page.click("#submit")
            await page.wait_for_selector("#console:not([hidden])", timeout=15_000)
            await page.fill("#client", "c1")
            await page.fill("#command", "/usr/bin/echo served-over-wss")
            await page.click("#run")
            await page.wait_for_function(
                "document.getElementById('console-output').textContent !== ''", timeout=15_000
            )
            output = await page.text_content("#console-output")
    finally:
        await sim.stop()
    assert output == "c1 successful: served-over-wss\n"


async def test_without_doc_root_nothing_is_served(
    server: RportServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(web_base(server) + "/") as resp:
        assert resp.status == 404 and await resp.text() == "404 page not found"


async def test_missing_doc_root_stops_the_server(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    with pytest.raises(StartupError, match=r"\[api\] doc_root .*nowhere"):
        await make_server(api={"doc_root": str(tmp_path / "nowhere")})
