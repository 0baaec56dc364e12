"""``/test/{commands,scripts,uploads}/ui``: HTML pages to try the WebSocket endpoints by hand.

Served (without authentication, like upstream) only with ``[api] enable_ws_test_endpoints``.
Each page takes a bearer token, opens ``/api/v1/ws/<name>?access_token=...`` on the
server it was loaded from (``wss`` when the page came over HTTPS), sends the JSON request
typed in (the scripts page base64-encodes the script into it) and prints every message.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from rportd.api.guards import Handler, public


@dataclass(frozen=True)
class WsTestPage:
    """One test page: which socket it opens and what it sends."""

    name: str
    sample: dict[str, object] | None  # None: the page only listens
    with_script: bool = False


PAGES: Final = (
    WsTestPage(
        "commands",
        {
            "command": "/usr/bin/whoami",
            "client_ids": ["<client id>"],
            "timeout_sec": 60,
            "abort_on_error": False,
            "execute_concurrently": True,
        },
    ),
    WsTestPage(
        "scripts",
        {
            "client_ids": ["<client id>"],
            "timeout_sec": 60,
            "abort_on_error": False,
            "execute_concurrently": True,
            "interpreter": "",
        },
        with_script=True,
    ),
    WsTestPage("uploads", None),
)

_SCRIPT: Final = """
const output = document.getElementById("output");
const print = (line) => { output.textContent += line + "\\n"; };
let socket = null;
document.getElementById("open").addEventListener("click", (event) => {
  event.preventDefault();
  if (socket) { return; }
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const token = encodeURIComponent(document.getElementById("token").value.trim());
  const base = scheme + "//" + window.location.host + "/api/v1/ws/" + PAGE;
  const url = base + "?access_token=" + token;
  print("WS url: " + url.replace(/access_token=[^&]*/, "access_token=..."));
  socket = new WebSocket(url);
  socket.onopen = () => print("OPEN");
  socket.onclose = () => { print("CLOSE"); socket = null; };
  socket.onerror = () => print("ERROR");
  socket.onmessage = (message) => print("RESPONSE: " + message.data);
});
document.getElementById("close").addEventListener("click", (event) => {
  event.preventDefault();
  if (socket) { socket.close(); }
});
const send = document.getElementById("send");
if (send) {
  send.addEventListener("click", (event) => {
    event.preventDefault();
    if (!socket) { print("not open"); return; }
    const request = JSON.parse(document.getElementById("input").value);
    const script = document.getElementById("script");
    if (script) {
      const bytes = new TextEncoder().encode(script.value);
      request.script = btoa(String.fromCharCode(...bytes));
    }
    const text = JSON.stringify(request);
    print("SEND: " + text);
    socket.send(text);
  });
}
"""


def render(page: WsTestPage) -> str:
    """The page's HTML."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>rportd: test /api/v1/ws/{page.name}</title></head><body>",
        f"<h1>/api/v1/ws/{page.name}</h1>",
        "<form>",
        '<p><label for="token">Bearer token</label><br>',
        '<textarea id="token" rows="3" cols="70"></textarea></p>',
        '<p><button id="open">Open</button> <button id="close">Close</button></p>',
    ]
    if page.with_script:
        parts += [
            '<p><label for="script">Script</label><br>',
            '<textarea id="script" rows="5" cols="70">pwd</textarea></p>',
        ]
    if page.sample is not None:
        sample = html.escape(json.dumps(page.sample, indent=2))
        parts += [
            '<p><label for="input">Request (JSON)</label><br>',
            f'<textarea id="input" rows="9" cols="70">{sample}</textarea></p>',
            '<p><button id="send">Send</button></p>',
        ]
    parts += [
        "</form>",
        '<pre id="output"></pre>',
        f"<script>const PAGE = {json.dumps(page.name)};{_SCRIPT}</script>",
        "</body></html>",
    ]
    return "\n".join(parts)


def _handler(page: WsTestPage) -> Handler:
    body = render(page)

    @public
    async def test_page(request: web.Request) -> web.Response:
        return web.Response(text=body, content_type="text/html")

    return test_page


def setup(app: web.Application) -> None:
    """Routes only when the pages are enabled (see ``create_api_app``)."""
    for page in PAGES:
        app.router.add_route("*", f"/api/v1/test/{page.name}/ui", _handler(page))
