"""The operator console (`storefront console`, started by `storefront run`) in a real browser:
Debian's headless Chromium driven by Playwright, against a whole system of its own with
Envoy and a Prometheus scraping it every second.

The screenshot of the page is written to `.run/test-output/console.png` (printed, and
recorded as the test's `screenshot` property).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from playwright.async_api import Page, async_playwright, expect
from pymongo import AsyncMongoClient

import topology
from stack import tools
from stack.embedded import free_ports
from stack.prometheus import start_prometheus
from storefront.accounts.v1 import accounts_pb2
from storefront.orders.v1 import orders_pb2
from storefront_cli import console, system
from storefront_cli.clients import CLIENT_SERVICES, Clients, eventually
from storefront_cli.demo import run_demo
from svckit import names
from tests import leaks
from tests.e2e.conftest import System
from tests.integration.test_orders_svc import customer_changed
from tests.support import issuer_of, park, tokens_of, unique

pytestmark = pytest.mark.e2e
PROMETHEUS = "prometheus-console"
CONSOLE = "console-e2e"
SCREENSHOT = tools.REPO_ROOT / ".run" / "test-output" / "console.png"
NODES = {
    "clients",
    "envoy",
    *topology.SYSTEM.names,
    *(f"db:{s}" for s in topology.SYSTEM.names),
    "topic:accounts.customer.change",
    "topic:orders.order.fulfill",
    "topic:fulfillment.order.change",
    "topic:catalog.product.change",
    "topic:orders.order.change",
}
USED = [
    "clients>envoy",
    "envoy>accounts",
    *(f"clients>{s}" for s in topology.SYSTEM.names),
    "accounts>topic:accounts.customer.change",
    "topic:accounts.customer.change>orders",
    "orders>topic:orders.order.fulfill",
    "topic:orders.order.fulfill>fulfillment",
    "fulfillment>topic:fulfillment.order.change",
    "topic:fulfillment.order.change>orders",
    "catalog>topic:catalog.product.change",
    "topic:catalog.product.change>orders",
    "orders>topic:orders.order.change",
]
"""The edges the demo (direct gRPC, every flow) and the REST calls through Envoy use."""
FAILED_CALLS = 20
IDLE_WATCH = 12.0


@dataclass
class Running:
    system: System
    url: str


@pytest.fixture(scope="module")
def running(isolated_system: System) -> Iterator[Running]:
    s = isolated_system
    system.start_envoy(s.stack, s.ports, concurrency=1)
    [prom_port, console_port] = free_ports(2)
    prometheus = start_prometheus(
        s.stack, s.ports, port=prom_port, name=PROMETHEUS, scrape_interval="1s"
    )
    url = console.start_console(
        s.stack,
        s.ports,
        port=console_port,
        prometheus=prometheus,
        db_prefix=s.db_prefix,
        name=CONSOLE,
    )
    yield Running(s, url)
    for name in (CONSOLE, PROMETHEUS, "envoy"):
        s.stack.supervisor.stop(name)


def test_no_secret_on_any_command_line(running: Running) -> None:
    """The services, Envoy, Prometheus and the console get their passwords through the
    environment and files: none is on an argv, which every local user can read."""
    assert leaks.argv_leaks(running.system.stack) == []


@pytest.fixture(scope="module")
async def clients(running: Running) -> AsyncIterator[Clients]:
    s = running.system
    c = Clients.connect(*(s.target(n) for n in CLIENT_SERVICES), tokens=tokens_of(s.stack))
    yield c
    await c.close()


@pytest.fixture(scope="module")
async def page(running: Running) -> AsyncIterator[Page]:
    tools.install(["chromium"], log=lambda _: None)  # apt-get, only if it is missing
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(tools.path("chromium")), headless=True
        )
        try:
            tab = await browser.new_page(viewport={"width": 1400, "height": 1000})
            await tab.goto(running.url)
            yield tab
        finally:
            await browser.close()


def http(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = b"{}" if method == "POST" else None
    h = {"content-type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def graph_in_page(page: Page) -> dict[str, Any]:
    return dict(
        await page.evaluate(
            """() => ({
        nodes: Object.fromEntries([...document.querySelectorAll('#graph g.node')].map(
            n => [n.dataset.node, n.dataset.health])),
        edges: Object.fromEntries([...document.querySelectorAll('#graph g.edge')].map(
            e => [e.dataset.edge, {rate: parseFloat(e.dataset.rate || '0'),
                                   errors: parseFloat(e.dataset.errorRatio || '0'),
                                   health: e.dataset.health,
                                   label: document.querySelector(`#graph g.edge-label[data-edge="${e.dataset.edge}"]`).textContent}]))})"""
        )
    )


async def overlapping_labels(page: Page) -> list[list[str]]:
    """Pairs of edge labels (with text) whose drawn boxes intersect, and labels drawn over a
    node: the page measures them as the browser drew them."""
    return list(
        await page.evaluate(
            """() => {
        const box = (el) => el.getBoundingClientRect();
        const cross = (a, b) => a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
        const labels = [...document.querySelectorAll('#graph g.edge-label')].filter(l => l.textContent);
        const nodes = [...document.querySelectorAll('#graph g.node')];
        const found = [];
        labels.forEach((a, i) => {
            labels.slice(i + 1).forEach(b => { if (cross(box(a), box(b))) found.push([a.dataset.edge, b.dataset.edge]); });
            nodes.forEach(n => { if (cross(box(a), box(n))) found.push([a.dataset.edge, n.dataset.node]); });
        });
        return found;
    }"""
        )
    )


async def text_of(page: Page, selector: str) -> str:
    return str(await page.locator(selector).inner_text())


async def test_the_console_shows_the_running_system_and_acts_as_the_operator(
    running: Running, clients: Clients, page: Page, record_property: Any
) -> None:
    s = running.system
    staff = issuer_of(s.stack).role("staff", subject="console-e2e")
    operator = issuer_of(s.stack).role("operator", subject="console-e2e")

    # Traffic: the demo's three flows over direct gRPC, REST through Envoy, and calls that
    # fail (NOT_FOUND counts as an error: every code but OK does).
    # Once, in bursts: every counter series is born within a scrape or two (the graph counts
    # a series new in the window from 0).
    await run_demo(clients, lambda _: None)
    auth = {"authorization": f"Bearer {staff}"}
    for _ in range(5):
        assert http(f"{s.envoy_url}/v1/customers", headers=auth)[0] == 200
    for _ in range(FAILED_CALLS):
        assert http(f"{s.envoy_url}/v1/customers/{unique('nobody')}", headers=auth)[0] == 404
        with pytest.raises(grpc.aio.AioRpcError) as absent:
            await clients.accounts.GetCustomer(
                accounts_pb2.GetCustomerRequest(customer_id=unique("nobody"))
            )
        assert absent.value.code() == grpc.StatusCode.NOT_FOUND

    missing: list[str] = []

    async def drawn() -> dict[str, Any] | None:
        g = await graph_in_page(page)
        missing[:] = [f"node {n}" for n in NODES - set(g["nodes"])]
        missing.extend(f"rate {e}" for e in USED if not g["edges"].get(e, {}).get("rate"))
        missing.extend(
            f"errors {e}"
            for e in ("clients>accounts", "clients>envoy")
            if not g["edges"].get(e, {}).get("errors")
        )
        return g if not missing else None

    try:
        g = await eventually(drawn, timeout=60, what="every node, busy edges and the errors")
    except TimeoutError:
        print("missing:", missing, await text_of(page, "#graph-errors"))
        raise
    for e in ("clients>accounts", "clients>envoy"):
        assert g["edges"][e]["health"] in ("degraded", "failing"), g["edges"][e]
        assert "% err" in g["edges"][e]["label"]
    assert g["nodes"]["accounts"] in ("degraded", "failing")  # its inbound errors show
    assert sum(bool(e["label"]) for e in g["edges"].values()) >= len(USED)
    assert await overlapping_labels(page) == []
    assert g["edges"]["orders>topic:orders.order.fulfill"]["errors"] == 0

    # The status panels: the same tables as `storefront status`.
    health = await text_of(page, "#health")
    for part in (
        "kafka",
        "mongodb",
        *(f"{n}_svc" for n in topology.SYSTEM.names),
        "envoy",
        "prometheus",
    ):
        assert f"{part}\tUP" in health, health
    orders_group = names.consumer_group(topology.ORDERS, s.db_prefix)
    rows = 3 * len(topology.SYSTEM.service(topology.ORDERS).consumes)  # 3 partitions each
    assert await page.locator(f"#lag tr[data-group='{orders_group}']").count() == rows
    assert await page.locator("#outbox tr[data-service]").count() == len(topology.SYSTEM.publishers)

    # A parked event shows in the DLQ panel and, ids and type only, in the tail.
    cid = unique("parked")
    record_id = await park(
        s.stack.kafka,
        customer_changed(cid, 1, "parked@example.com"),
        topology.CUSTOMER_CHANGES,
        cid,
    )
    row = page.locator(f"#dlq-records tr[data-record='{record_id}']")
    await row.wait_for(timeout=30_000)
    assert "CustomerChanged" in await row.inner_text()
    assert "ServerSelectionTimeoutError" in await row.inner_text()
    await page.fill("#events-key", cid)
    await page.dispatch_event("#events-key", "change")
    tail = page.locator(f"#events tr[data-key='{cid}']")
    await tail.first.wait_for(timeout=30_000)
    assert "CustomerChanged" in await tail.first.inner_text()
    assert "parked@example.com" not in await text_of(page, "#events")
    await page.select_option("#events-topic", "orders.order.fulfill")
    await expect(tail).to_have_count(0)
    await page.select_option("#events-topic", "accounts.customer.change.orders-svc.dlq")
    await expect(tail).to_have_count(1)

    # Actions without an operator token are refused, by the page and by the API: staff run
    # the shop, not the system.
    await row.locator("button").click()
    await expect(page.locator("#replay-result")).to_contain_text("refused")
    assert "operator" in await text_of(page, "#replay-result")
    warehouse = issuer_of(s.stack).role("warehouse")
    assert http(f"{running.url}/api/check", method="POST")[0] == 401
    for role_token in (warehouse, staff):
        bad = {"authorization": f"Bearer {role_token}"}
        assert http(f"{running.url}/api/check", method="POST", headers=bad)[0] == 403
    forged = {"authorization": f"Bearer {operator[:-4]}AAAA"}
    assert http(f"{running.url}/api/check", method="POST", headers=forged)[0] == 401
    rebinding = {"host": f"console.example.test:{running.url.rsplit(':', 1)[1]}"}
    assert http(f"{running.url}/api/graph", headers=rebinding)[0] == 403
    with pytest.raises(grpc.aio.AioRpcError):
        await clients.orders.GetCustomerOrders(orders_pb2.GetCustomerOrdersRequest(customer_id=cid))

    # As the operator: the tail shows payloads, the replay applies the parked event.
    await page.fill("#token", operator)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#whoami")).to_contain_text("console-e2e (operator)")
    await expect(page.locator("#events")).to_contain_text("parked@example.com", timeout=10_000)
    await row.locator("button").click()
    await expect(page.locator("#replay-result")).to_contain_text(
        f"[dlq] {record_id}: applied", timeout=30_000
    )

    async def applied() -> Any:
        return await clients.orders.GetCustomerOrders(
            orders_pb2.GetCustomerOrdersRequest(customer_id=cid)
        )

    copy = await eventually(applied, what="the replayed event applied")
    assert copy.contact.email == "parked@example.com"

    # A copy damaged behind the consumers' backs is reported by the check.
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(s.stack.mongodb_uri)
    try:
        copies = mongo[s.database("orders")]["customers"]
        damaged = await copies.find_one({"deleted": False, "_id": {"$ne": cid}})
        assert damaged is not None
        await copies.update_one({"_id": damaged["_id"]}, {"$set": {"contact.email": "x@evil.test"}})
    finally:
        await mongo.close()
    await page.click("#check")
    reported = page.locator(f"#divergences tr[data-subject='{damaged['_id']}']")
    await reported.wait_for(timeout=30_000)
    assert "customer copy differs" in await reported.inner_text()
    assert "divergences" in await text_of(page, "#check-info")

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOT), full_page=True)
    record_property("screenshot", str(SCREENSHOT))
    print(f"console screenshot: {SCREENSHOT}")

    # What one refresh costs (printed, not asserted: the machine is shared).
    _, graph = http(f"{running.url}/api/graph")
    _, status = http(f"{running.url}/api/status")
    _, dlq = http(f"{running.url}/api/dlq")
    started = time.monotonic()
    await page.reload()  # the token stays for the tab
    await page.locator("#graph g.node").first.wait_for()
    loaded = time.monotonic() - started
    await expect(page.locator("#whoami")).to_contain_text("console-e2e (operator)")
    pid = s.stack.supervisor.pid(CONSOLE)
    before = cpu_seconds(pid)
    await asyncio.sleep(IDLE_WATCH)  # the page alone polls meanwhile, every 3 s
    spent = cpu_seconds(pid) - before
    print(
        f"console refresh: graph {graph['queries']} Prometheus queries in {graph['query_ms']} ms,"
        f" status {status['took_ms']} ms, dlq {dlq['took_ms']} ms; console process CPU"
        f" {spent:.2f} s in {IDLE_WATCH:.0f} s of one tab polling ({spent / IDLE_WATCH:.0%});"
        f" page load to graph drawn {loaded * 1000:.0f} ms"
    )
