"""An HA pair as an operator watches it: probes, metrics and the /ha page in a real browser."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import expect

from tests.browser import browser_page
from tests.ha.cluster import ADMIN, CLIENT_AUTH, Cluster, Node
from tests.ops.deploy_files import metric_names_used
from tests.ops.promtool import base_name, family_names, promtool_check, value
from tests.simulator import RportClientSim, SimulatorConfig

pytestmark = pytest.mark.ha

# Set to a path to save the page after the takeover (the README's screenshot).
SCREENSHOT = os.environ.get("RPORTD_HA_SCREENSHOT", "")


async def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {"Authorization": aiohttp.encode_basic_auth(*auth)} if auth else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def metrics(node: Node) -> str:
    status, text = await get(f"{node.api_url}/metrics", ADMIN)
    assert status == 200, text
    return text


async def test_ha_pair_probes_metrics_and_status_page_follow_a_takeover(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    primary, secondary = cluster.primary, cluster.secondary
    client = RportClientSim(
        SimulatorConfig(
            server=primary.client_url,
            fallback_servers=[secondary.client_url],
            auth=":".join(CLIENT_AUTH),
            client_id="page-client",
            connect_jitter=1.0,
        )
    )
    try:
        await cluster.start()
        await client.start()
        await client.wait_registered(15)
        assert (await get(f"{primary.api_url}/readyz"))[0] == 200
        status, body = await get(f"{secondary.api_url}/readyz")
        assert status == 503 and '"reasons":["standby: the primary' in body, body

        text = await metrics(secondary)
        assert await promtool_check(text) == (0, "")
        # Every metric the dashboard and the alert rules query exists (both roles' names).
        exported = family_names(text) | family_names(await metrics(primary))
        used = {base_name(name) for name in metric_names_used()}
        assert not used - exported, f"deploy/ queries unknown metrics: {sorted(used - exported)}"
        assert value(text, "rportd_ha_role", role="secondary") == 1
        assert value(text, "rportd_ha_state", state="standby") == 1
        assert value(text, "rportd_ha_serving") == 0
        assert value(text, "rportd_ha_replication_lag_changes") == 0
        assert value(text, "rportd_ha_syncback_backlog") == 0
        text = await metrics(primary)
        assert value(text, "rportd_ha_role", role="primary") == 1
        assert value(text, "rportd_ha_state", state="active") == 1
        assert value(text, "rportd_ha_serving") == 1
        epoch = value(text, "rportd_ha_epoch")
        assert epoch >= 1

        async with browser_page(height=640) as page:
            await page.goto(f"{secondary.api_url}/ha")
            await page.fill("#username", ADMIN[0])
            await page.fill("#password", ADMIN[1])
            await page.click("button[type=submit]")
            this_node = page.locator('#nodes tr[data-node="self"]')
            other = page.locator(f'#nodes tr[data-node="{primary.api_url}"]')
            await expect(this_node).to_contain_text("standby")
            await expect(this_node).to_contain_text("secondary")
            await expect(other).to_contain_text("active")
            await expect(other).to_contain_text("primary")

            primary.kill()
            await primary.wait_exit()
            # Live refresh: no reload, the page shows the takeover as it happens (once
            # the client knocks at the secondary: the evidence it takes over on).
            await expect(this_node).to_contain_text("active", timeout=40_000)
            await expect(other).to_contain_text("unreachable", timeout=10_000)
            takeover = page.locator("#events li", has_text="standby → active")
            await expect(takeover.first).to_contain_text("can only reach this node")
            # The primary's own history, read while it was up, stays on the page.
            started = page.locator("#events li", has_text=f"{primary.api_url}: primary")
            await expect(started.first).to_contain_text("active")
            await expect(page.locator("#login")).to_be_hidden()
            if SCREENSHOT:
                clip = {"x": 0, "y": 0, "width": 1100, "height": 420}
                await page.screenshot(path=SCREENSHOT, clip=clip)  # type: ignore[arg-type]

        assert (await get(f"{secondary.api_url}/readyz"))[0] == 200
        text = await metrics(secondary)
        assert value(text, "rportd_ha_state", state="active") == 1
        assert value(text, "rportd_ha_serving") == 1
        assert value(text, "rportd_ha_epoch") == epoch
    finally:
        await client.stop()
        await cluster.close()


async def test_ha_pages_need_a_login(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path)
    try:
        await cluster.start()
        base = cluster.secondary.api_url
        assert (await get(f"{base}/api/v1/ha/overview"))[0] == 401
        assert (await get(f"{base}/api/v1/ha/events"))[0] == 401
        status, html = await get(f"{base}/ha")  # the page holds no data, only a login form
        assert status == 200 and 'id="login"' in html
        status, body = await get(f"{base}/api/v1/ha/overview", ADMIN)
        assert status == 200 and '"this_node":true' in body
    finally:
        await cluster.close()
