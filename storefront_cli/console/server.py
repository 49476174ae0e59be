"""The operator console: one page and the small JSON API it polls (aiohttp, 127.0.0.1 only).

Every figure comes from the project's operator use cases, not a second implementation:
the graph from Prometheus (console.graph), lag, DLQ counts and outbox backlog from
`status.snapshot` (what `storefront status` prints), parked events from `replays.dlq_rows`
(`storefront dlq list`), the check from `check.divergences` (`storefront check`), a
replay through `replays.dlq_replay` (`storefront dlq replay`: the consuming service's
admin ReplayParked), and the tail from `tail.tail` / `tail.event_row` (`storefront watch`).

Who may do what:
- Reads need no token, but only from this machine: the server binds 127.0.0.1, and a
  request whose Host is not the loopback address it serves is refused, so a web page
  elsewhere cannot read it through DNS rebinding.
- Actions (check, replay) need a bearer token with the operator role, verified with
  svckit.auth against the issuer the services trust; the replay then goes to the service
  with that same token, which checks it again. The console holds no credential of its own.
- The event tail shows ids and event types; the decoded payload (names, contacts,
  addresses) only to an operator token.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

import topology
from storefront_cli import check, replays, status
from storefront_cli import tail as events
from storefront_cli.clients import CLIENT_SERVICES, Clients, fixed
from storefront_cli.console import graph
from storefront_cli.where import Where
from svckit.auth import AuthConfig, Principal, TokenVerifier, bearer_token
from svckit.authz import OPERATOR
from svckit.errors import Unauthenticated
from svckit.kafka import KafkaConnection

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
HOST = "127.0.0.1"
"""Loopback only, and not configurable: the console has no TLS and serves reads unsigned."""
TAIL_KEPT = 1000
TAIL_SHOWN = 200
CACHE_SECONDS = 2.0
"""Several tabs polling share one read per endpoint within this time."""
STATUS_TIMEOUT = 3.0
TAIL_RETRY_SECONDS = 5.0
SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
SHOWN_FIELDS = ("time", "topic", "partition", "offset", "type", "key", "error")
"""What anyone on this machine sees of an event; the payload needs the operator role."""


@dataclass(frozen=True)
class ConsoleConfig:
    where: Where
    prometheus: str
    auth: AuthConfig
    port: int = 8090
    namespace: str = "storefront"
    window: str = "1m"


class Cached:
    """The last answer of `load` for `ttl` seconds; concurrent callers wait for one load."""

    def __init__(self, load: Callable[[], Awaitable[Any]], ttl: float = CACHE_SECONDS) -> None:
        self._load = load
        self._ttl = ttl
        self._value: Any = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> Any:
        async with self._lock:
            if time.monotonic() - self._at >= self._ttl:
                self._value = await self._load()
                self._at = time.monotonic()
            return self._value


class EventTail:
    """The newest records of every topic and DLQ, decoded, kept in memory from start-up on."""

    def __init__(self, kafka: KafkaConnection) -> None:
        self.kafka = kafka
        self.rows: collections.deque[tuple[int, events.EventRow]] = collections.deque(
            maxlen=TAIL_KEPT
        )
        self.state = "starting"
        self._seq = itertools.count(1)

    @property
    def topics(self) -> list[str]:
        return list(topology.SYSTEM.all_topics)

    async def run(self) -> None:
        """Follow the topics from their end; after a broker outage, from the new end (what
        was produced meanwhile is not shown: the tail is a view, not a record)."""
        while True:
            try:
                records = events.tail(self.kafka, self.topics, note=self._noted)
                try:
                    async for record in records:
                        if record is not None:
                            self.rows.append((next(self._seq), events.event_row(record)))
                finally:
                    await records.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - keep serving the page; retry
                self.state = f"unavailable ({type(exc).__name__}: {str(exc)[:120]})"
                log.warning("event tail: %s", self.state)
            await asyncio.sleep(TAIL_RETRY_SECONDS)

    def _noted(self, msg: str) -> None:
        self.state = msg

    def select(
        self, topic: str, key: str, *, payload: bool, limit: int = TAIL_SHOWN
    ) -> list[dict[str, Any]]:
        """Newest first; `topic` matches a topic or its DLQ twin exactly, "" any."""
        out = []
        for seq, row in reversed(self.rows):
            if (topic and row.topic != topic) or (key and row.key != key):
                continue
            item: dict[str, Any] = {f: getattr(row, f) for f in SHOWN_FIELDS}
            item["seq"] = seq
            if payload and row.message is not None:
                item["payload"] = events.summarize(row.message, 0)
            out.append(item)
            if len(out) >= limit:
                break
        return out


def _loopback_host(host: str, port: int) -> bool:
    name, _, given = host.rpartition(":")
    if not name or given != str(port):
        return False
    name = name.strip("[]")
    if name == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(name).is_loopback
    return False


class Console:
    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.verifier = TokenVerifier(config.auth)
        self.tail = EventTail(config.where.ep.kafka)
        self._session: aiohttp.ClientSession | None = None
        self._graph = Cached(self._load_graph)
        self._status = Cached(self._load_status)
        self._dlq = Cached(self._load_dlq)

    # --- the app ---------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC, append_version=False)
        app.router.add_get("/api/whoami", self.whoami)
        app.router.add_get("/api/graph", self.graph)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/dlq", self.dlq)
        app.router.add_get("/api/events", self.events)
        app.router.add_post("/api/check", self.check)
        app.router.add_post("/api/dlq/replay", self.replay)
        app.cleanup_ctx.append(self._background)
        return app

    async def _background(self, app: web.Application) -> Any:
        timeout = aiohttp.ClientTimeout(total=10)
        self._session = aiohttp.ClientSession(timeout=timeout)
        task = asyncio.create_task(self.tail.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._session.close()

    @web.middleware
    async def _guard(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Loopback Host only; a token, when sent, must verify (its principal is kept)."""
        if not _loopback_host(request.host, self.config.port):
            return web.json_response({"error": "not a loopback host"}, status=403)
        request["principal"] = None
        if "authorization" in request.headers:
            try:
                token = bearer_token(list(request.headers.items()))
                request["principal"] = await self.verifier.verify(token)
                request["token"] = token
            except Unauthenticated as exc:
                return web.json_response({"error": exc.message}, status=401)
        response = await handler(request)
        response.headers.update(SECURITY_HEADERS)
        return response

    @staticmethod
    def _operator(request: web.Request) -> Principal | None:
        principal: Principal | None = request["principal"]
        return principal if principal is not None and OPERATOR in principal.roles else None

    def _refused(self, request: web.Request) -> web.Response | None:
        """None when the caller may act: a verified operator token, sent as JSON."""
        if request["principal"] is None:
            return web.json_response({"error": "an operator bearer token is needed"}, status=401)
        if self._operator(request) is None:
            return web.json_response({"error": "the token lacks the operator role"}, status=403)
        if request.content_type != "application/json":
            return web.json_response({"error": "send application/json"}, status=415)
        return None

    # --- reads -----------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def whoami(self, request: web.Request) -> web.Response:
        principal: Principal | None = request["principal"]
        return web.json_response(
            {
                "subject": principal.subject if principal else None,
                "roles": sorted(principal.roles) if principal else [],
                "operator": self._operator(request) is not None,
                "prometheus": self.config.prometheus,
            }
        )

    async def _load_graph(self) -> dict[str, Any]:
        assert self._session is not None
        return await graph.graph(
            self._session,
            self.config.prometheus,
            namespace=self.config.namespace,
            window=self.config.window,
            system=self.config.where.system,
        )

    async def graph(self, request: web.Request) -> web.Response:
        return web.json_response(await self._graph.get())

    async def _load_status(self) -> dict[str, Any]:
        started = time.perf_counter()
        snap = await status.snapshot(self.config.where, timeout=STATUS_TIMEOUT)
        return {
            **snap.data(),
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response(await self._status.get())

    async def _load_dlq(self) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            rows = await replays.dlq_rows(self.config.where.ep)
        except Exception as exc:  # noqa: BLE001 - the panel says why
            return {"records": [], "error": f"{type(exc).__name__}: {exc}"[:200]}
        return {
            "records": [asdict(r) for r in rows],
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def dlq(self, request: web.Request) -> web.Response:
        return web.json_response(await self._dlq.get())

    async def events(self, request: web.Request) -> web.Response:
        operator = self._operator(request) is not None
        rows = self.tail.select(
            request.query.get("topic", ""), request.query.get("key", "").strip(), payload=operator
        )
        return web.json_response(
            {
                "events": rows,
                "state": self.tail.state,
                "payload": operator,
                "topics": self.tail.topics,
            }
        )

    # --- actions (operator) ---------------------------------------------------------------

    async def check(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        started = time.perf_counter()
        clients = self._clients(request)
        try:
            found = await check.divergences(clients.admin)
        except Exception as exc:  # noqa: BLE001 - the page says why (a service away, ...)
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"[:200]}, status=503)
        finally:
            await clients.close()
        log.info("check by %s: %d divergences", request["principal"], len(found))
        return web.json_response(
            {
                "divergences": [asdict(d) for d in found],
                "took_ms": round((time.perf_counter() - started) * 1000, 1),
            }
        )

    def _clients(self, request: web.Request) -> Clients:
        """Clients of the services and their admin services, with the caller's own token."""
        where = self.config.where
        return Clients.connect(
            *(f"{where.host}:{where.ports.grpc(s)}" for s in CLIENT_SERVICES),
            tokens=fixed(request["token"]),
            admin={s: f"{where.host}:{where.ports.admin(s)}" for s in where.system.names},
        )

    async def replay(self, request: web.Request) -> web.Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"error": "send a JSON object"}, status=400)
        queue = body.get("dlq") or None
        ids = body.get("ids") or []
        if (queue is not None and not isinstance(queue, str)) or not (
            isinstance(ids, list) and all(isinstance(i, str) for i in ids)
        ):
            return web.json_response({"error": "dlq: a string; ids: a list of ids"}, status=400)
        clients = self._clients(request)
        lines: list[str] = []
        try:
            code = await replays.dlq_replay(clients, None, ids, lines.append, queue=queue)
        finally:
            await clients.close()
        log.info("dlq replay by %s of %s %s: exit %d", request["principal"], queue, ids, code)
        self._dlq = Cached(self._load_dlq)  # show the new state at once
        return web.json_response({"code": code, "lines": lines})


async def serve(config: ConsoleConfig) -> None:
    """Serve until cancelled."""
    runner = web.AppRunner(Console(config).app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, config.port)
    await site.start()
    log.info("console on http://%s:%d (prometheus %s)", HOST, config.port, config.prometheus)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
