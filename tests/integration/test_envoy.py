"""Envoy in front of a tiny in-test AccountsService: JSON/REST transcoding, errors, native gRPC,
gRPC-Web and CORS.

Everything runs on ports picked by the OS. The fake service implements GetCustomer (a fixed
customer for id "c1", NOT_FOUND otherwise, INVALID_ARGUMENT with BadRequest details for "bad")
and CreateCustomer (echoes the customer), plus grpc.health.v1. It runs in its own thread and
event loop so that the tests can use blocking HTTP and gRPC clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import any_pb2, descriptor_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from envoy_config import config
from stack import tools
from stack.issuer import LocalIssuer
from storefront.accounts.v1 import accounts_pb2, accounts_pb2_grpc
from storefront.common.v1 import common_pb2

pytestmark = pytest.mark.skipif(not tools.available("envoy"), reason="envoy not installed")

MAX_REQUEST_BYTES = 4096
HEALTH_CHECK_INTERVAL = 0.5
ORIGIN = "https://shop.example.com"
"""The one browser origin this edge allows (configurable: not the default)."""


def fixed_customer() -> accounts_pb2.Customer:
    return accounts_pb2.Customer(
        id="c1",
        name=common_pb2.PersonName(title="Mr.", first_name="Rajesh", last_name="Iyer"),
        contact=common_pb2.Contact(primary_phone="555-666-7777", email="rajesh@example.com"),
        addresses=[
            common_pb2.Address(
                type=common_pb2.ADDRESS_TYPE_SHIPPING,
                address1="123 Oak Street",
                city="Sunrise",
                state="CA",
                postal_code="12345-6789",
            )
        ],
        version=3,
    )


def grpc_code(number: int) -> grpc.StatusCode:
    return next(c for c in grpc.StatusCode if c.value[0] == number)


class FakeAccounts(accounts_pb2_grpc.AccountsServiceServicer):
    async def GetCustomer(
        self, request: accounts_pb2.GetCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        if request.customer_id == "c1":
            return fixed_customer()
        if request.customer_id.startswith("status-"):  # fails with that gRPC code
            code = grpc_code(int(request.customer_id.removeprefix("status-")))
            await context.abort(code, f"failed with {code.name}")
        if request.customer_id == "bad":
            violation = error_details_pb2.BadRequest.FieldViolation(
                field="customer_id", description="must not be 'bad'"
            )
            bad_request, info = any_pb2.Any(), any_pb2.Any()
            bad_request.Pack(error_details_pb2.BadRequest(field_violations=[violation]))
            info.Pack(error_details_pb2.ErrorInfo(reason="INVALID_ARGUMENT", domain="test"))
            status = status_pb2.Status(
                code=code_pb2.INVALID_ARGUMENT,
                message="invalid customer_id",
                details=[bad_request, info],  # as svckit.errors sends them
            )
            await context.abort_with_status(rpc_status.to_status(status))
        await context.abort(grpc.StatusCode.NOT_FOUND, f"customer {request.customer_id} not found")
        raise AssertionError("context.abort raises")

    async def CreateCustomer(
        self, request: accounts_pb2.CreateCustomerRequest, context: grpc.aio.ServicerContext
    ) -> accounts_pb2.Customer:
        customer = accounts_pb2.Customer()
        customer.CopyFrom(request.customer)
        customer.id = request.customer_id or "new"
        return customer


@dataclass
class FakeServer:
    port: int
    loop: asyncio.AbstractEventLoop
    health_servicer: health.aio.HealthServicer

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        asyncio.run_coroutine_threadsafe(self.health_servicer.set("", status), self.loop).result(5)


@pytest.fixture(scope="module")
def fake_accounts() -> Iterator[FakeServer]:
    started = threading.Event()
    box: dict[str, Any] = {}

    async def serve() -> None:
        server = grpc.aio.server()
        fake = FakeAccounts()  # type: ignore[abstract]  # the generated base answers the rest UNIMPLEMENTED
        accounts_pb2_grpc.add_AccountsServiceServicer_to_server(fake, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stop = asyncio.Event()
        box.update(port=port, loop=asyncio.get_running_loop(), health=health_servicer, stop=stop)
        started.set()
        await stop.wait()
        await server.stop(grace=None)

    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    assert started.wait(10), "fake AccountsService did not start"
    yield FakeServer(box["port"], box["loop"], box["health"])
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Edge:
    port: int
    admin_port: int
    access_log: Path
    log: Path
    issuer: LocalIssuer

    @property
    def bearer(self) -> str:
        """Any valid token passes the edge; the fake upstream checks none."""
        return f"Bearer {self.issuer.role('staff')}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as r:
            return str(r.read().decode())


def wait_for(check: Any, what: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"envoy exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_edge(
    fake_accounts: FakeServer, run: Path, **settings: Any
) -> Iterator[Edge]:
    """Envoy in front of the fake accounts server, with `settings` over the tests' own."""
    issuer = LocalIssuer.ensure(run / "auth")
    e = Edge(free_port(), free_port(), run / "access.log", run / "envoy.log", issuer)
    cfg = config.write_config(
        run / "envoy.yaml",
        **{
            "listen_port": e.port,
            "admin_port": e.admin_port,
            "upstreams": {"accounts": ("127.0.0.1", fake_accounts.port)},
            "descriptor_path": config.DEFAULT_DESCRIPTOR,
            "access_log_path": e.access_log,
            "max_request_bytes": MAX_REQUEST_BYTES,
            "health_check_interval": HEALTH_CHECK_INTERVAL,
            "auth": config.EdgeAuth.of(issuer.config()),
            "cors_origins": (ORIGIN,),
            **settings,
        },
    )
    with e.log.open("wb") as log:
        proc = subprocess.Popen(
            config.envoy_argv(cfg, log_level="warn", concurrency=1),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: e.admin("/ready").strip() == "LIVE", "envoy /ready", proc, e.log)
        wait_for(lambda: accounts_health(e) == "healthy", "accounts healthy", proc, e.log)
        yield e
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture(scope="module")
def edge(fake_accounts: FakeServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    with running_edge(fake_accounts, tmp_path_factory.mktemp("envoy")) as e:
        yield e


def accounts_health(e: Edge) -> str:
    for line in e.admin("/clusters").splitlines():
        if line.startswith("accounts::") and "::health_flags::" in line:
            return line.rsplit("::", 1)[1]
    return ""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    edge: Edge,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    token: bool = True,
    bearer: str = "",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One HTTP call, with the edge's staff token (or `bearer`) unless `token` is False."""
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        headers = dict(headers or {})
        if body is not None:
            headers["content-type"] = "application/json"
        if token:
            headers["authorization"] = bearer or edge.bearer
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def assert_status_body(reply: Reply, code: int) -> dict[str, Any]:
    """The body is a google.rpc.Status in JSON: {"code", "message", "details"}."""
    assert reply.headers["content-type"].startswith("application/json"), reply
    body = reply.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], list)
    return dict(body)


HTTP_STATUS_OF_GRPC_CODE = {
    1: 499,  # CANCELLED
    2: 500,  # UNKNOWN
    3: 400,  # INVALID_ARGUMENT
    4: 504,  # DEADLINE_EXCEEDED
    5: 404,  # NOT_FOUND
    6: 409,  # ALREADY_EXISTS
    7: 403,  # PERMISSION_DENIED
    8: 429,  # RESOURCE_EXHAUSTED
    9: 400,  # FAILED_PRECONDITION
    10: 409,  # ABORTED
    11: 400,  # OUT_OF_RANGE
    12: 501,  # UNIMPLEMENTED
    13: 500,  # INTERNAL
    14: 503,  # UNAVAILABLE
    15: 500,  # DATA_LOSS
    16: 401,  # UNAUTHENTICATED
}
"""The table in docs/api.md (Envoy's gRPC -> HTTP mapping under convert_grpc_status)."""


# ----- REST through the transcoder -----------------------------------------------------------


def test_get_customer_is_json_with_camel_case_fields(edge: Edge) -> None:
    reply = call(edge, "GET", "/v1/customers/c1")
    assert reply.status == 200, reply
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["id"] == "c1"
    assert body["name"]["firstName"] == "Rajesh"
    assert body["contact"]["primaryPhone"] == "555-666-7777"
    assert body["addresses"][0]["postalCode"] == "12345-6789"
    assert body["addresses"][0]["type"] == "ADDRESS_TYPE_SHIPPING"
    assert body["version"] == "3"  # int64 is a JSON string in proto3 JSON
    # always_print_primitive_fields: empty values are printed, so shapes are stable.
    assert body["name"]["middleName"] == "" and body["creditCards"] == []
    assert "first_name" not in json.dumps(body)


def test_not_found_is_404_with_a_status_body(edge: Edge) -> None:
    reply = call(edge, "GET", "/v1/customers/nope")
    assert reply.status == 404
    body = assert_status_body(reply, code_pb2.NOT_FOUND)
    assert body["message"] == "customer nope not found"


@pytest.mark.parametrize(("code", "http_status"), sorted(HTTP_STATUS_OF_GRPC_CODE.items()))
def test_grpc_code_to_http_status(edge: Edge, code: int, http_status: int) -> None:
    reply = call(edge, "GET", f"/v1/customers/status-{code}")
    assert reply.status == http_status
    body = assert_status_body(reply, code)
    assert body["message"] == f"failed with {grpc_code(code).name}"


def test_invalid_argument_is_400_with_field_violations(edge: Edge) -> None:
    names = {
        m.name
        for f in descriptor_pb2.FileDescriptorSet.FromString(
            config.DEFAULT_DESCRIPTOR.read_bytes()
        ).file
        if f.package == "google.rpc"
        for m in f.message_type
    }
    if "BadRequest" not in names:
        pytest.xfail(
            "gen/storefront.binpb lacks google/rpc/error_details.proto: Envoy cannot print "
            "error details and replies with an empty body (the HTTP status is still right); "
            "tools/protogen.py must add that file to the descriptor set"
        )
    reply = call(edge, "GET", "/v1/customers/bad")
    assert reply.status == 400
    body = assert_status_body(reply, code_pb2.INVALID_ARGUMENT)
    bad_request, info = body["details"]
    assert bad_request["@type"] == "type.googleapis.com/google.rpc.BadRequest"
    assert bad_request["fieldViolations"][0]["field"] == "customer_id"
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert info["reason"] == "INVALID_ARGUMENT"


def test_unknown_query_parameter_is_400(edge: Edge) -> None:
    reply = call(edge, "GET", "/v1/customers/c1?colour=red")
    assert reply.status == 400
    body = assert_status_body(reply, code_pb2.INVALID_ARGUMENT)
    assert "colour" in body["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/nothing"), ("GET", "/v1/customers/c1/extra"), ("PUT", "/v1/customers/c1")],
)
def test_unknown_path_or_method_is_404(edge: Edge, method: str, path: str) -> None:
    reply = call(edge, method, path, b"{}" if method == "PUT" else None)
    assert reply.status == 404
    body = assert_status_body(reply, code_pb2.NOT_FOUND)
    assert "Could not resolve" in body["message"]


def test_oversized_body_is_413(edge: Edge) -> None:
    padding = "x" * (MAX_REQUEST_BYTES * 4)
    body = json.dumps({"name": {"firstName": padding}}).encode()
    reply = call(edge, "POST", "/v1/customers", body)
    assert reply.status == 413
    assert_status_body(reply, code_pb2.INVALID_ARGUMENT)


def test_malformed_json_and_bad_enum_are_400(edge: Edge) -> None:
    for body in [b"{not json", b'{"addresses": [{"type": "SHIPPING"}]}']:
        reply = call(edge, "POST", "/v1/customers", body)
        assert reply.status == 400, (body, reply)
        assert_status_body(reply, code_pb2.INVALID_ARGUMENT)


def test_create_echo_accepts_camel_and_snake_case_input(edge: Edge) -> None:
    reply = call(
        edge,
        "POST",
        "/v1/customers?customerId=c9",
        json.dumps(
            {
                "name": {"firstName": "Ada", "last_name": "Lovelace"},
                "addresses": [{"type": "ADDRESS_TYPE_BILLING", "postalCode": "12345"}],
            }
        ).encode(),
    )
    assert reply.status == 200, reply
    body = reply.json()
    assert body["id"] == "c9"
    assert body["name"]["firstName"] == "Ada" and body["name"]["lastName"] == "Lovelace"
    assert body["addresses"][0]["type"] == "ADDRESS_TYPE_BILLING"


def test_unknown_body_fields_are_rejected_before_the_service(edge: Edge) -> None:
    """Envoy's transcoder would drop them silently; the strict-JSON Lua filter says 400."""
    reply = call(edge, "POST", "/v1/customers", b'{"name": {"firstName": "A", "nickname": "B"}}')
    assert reply.status == 400, reply
    status = json.loads(reply.body)
    assert status["code"] == 3
    assert 'unknown field "name.nickname"' in status["message"]


def test_access_log_is_json_with_the_rest_path(edge: Edge) -> None:
    call(edge, "GET", "/v1/customers/for-the-log")

    def logged() -> list[dict[str, Any]]:
        lines = edge.access_log.read_text().splitlines() if edge.access_log.exists() else []
        return [json.loads(line) for line in lines]

    deadline = time.monotonic() + 10  # Envoy flushes the file about once a second
    while not any(e["path"] == "/v1/customers/for-the-log" for e in logged()):
        assert time.monotonic() < deadline, logged()
        time.sleep(0.2)
    entry = next(e for e in logged() if e["path"] == "/v1/customers/for-the-log")
    assert entry["grpc_method"] == "/storefront.accounts.v1.AccountsService/GetCustomer"
    assert entry["status"] == 404 and entry["protocol"] == "HTTP/1.1"
    assert entry["upstream_cluster"] == "accounts"


# ----- native gRPC on the same port ----------------------------------------------------------


def test_native_grpc_through_envoy(edge: Edge) -> None:
    auth = [("authorization", edge.bearer)]
    with grpc.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        request = accounts_pb2.GetCustomerRequest(customer_id="c1")
        customer = stub.GetCustomer(request, timeout=5, metadata=auth)
        assert customer == fixed_customer()
        with pytest.raises(grpc.RpcError) as err:
            request = accounts_pb2.GetCustomerRequest(customer_id="nope")
            stub.GetCustomer(request, timeout=5, metadata=auth)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "customer nope not found"


def test_native_grpc_to_an_unrouted_service_is_unimplemented(edge: Edge) -> None:
    """Envoy's own replies to gRPC callers stay gRPC (no JSON body in grpc-message)."""
    with grpc.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
        health_stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            health_stub.Check(
                health_pb2.HealthCheckRequest(),
                timeout=5,
                metadata=[("authorization", edge.bearer)],
            )
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert not (err.value.details() or "").startswith("{")


# ----- gRPC-Web and CORS ----------------------------------------------------------------------


@dataclass
class GrpcWebReply:
    http_status: int
    headers: dict[str, str]
    messages: list[bytes]
    trailers: dict[str, str]

    @property
    def grpc_status(self) -> int:
        """What a gRPC-Web client reads: the trailer frame, the headers of a trailers-only
        reply, or else the HTTP status mapped as gRPC's spec says. Envoy's own replies to a
        gRPC-Web call (no route, no token) take the last form: it decides a request is gRPC
        before grpc_web has turned it into one."""
        found = self.trailers.get("grpc-status") or self.headers.get("grpc-status")
        return int(found) if found else GRPC_CODE_OF_HTTP_STATUS.get(self.http_status, 2)


GRPC_CODE_OF_HTTP_STATUS = {400: 13, 401: 16, 403: 7, 404: 12, 429: 14, 502: 14, 503: 14, 504: 14}
"""gRPC's "HTTP to gRPC status code mapping" (doc/http-grpc-status-mapping.md); else UNKNOWN."""


def grpc_web(
    edge: Edge,
    path: str,
    request: bytes,
    *,
    authorization: str | None = "valid",
    origin: str | None = None,
) -> GrpcWebReply:
    """One unary gRPC-Web call over HTTP/1.1, as a browser's client library frames it."""
    headers = {"content-type": "application/grpc-web+proto", "x-grpc-web": "1"}
    if authorization:
        headers["authorization"] = edge.bearer if authorization == "valid" else authorization
    if origin:
        headers["origin"] = origin
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.request(
            "POST", path, body=b"\0" + len(request).to_bytes(4, "big") + request, headers=headers
        )
        resp = conn.getresponse()
        status, reply_headers, body = resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()
    messages, trailers, at = [], {}, 0
    while at < len(body):  # frames: 1 flag byte (0x80 = trailers), 4 length bytes, payload
        flag, size = body[at], int.from_bytes(body[at + 1 : at + 5], "big")
        frame = body[at + 5 : at + 5 + size]
        if flag & 0x80:
            for line in frame.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(frame)
        at += 5 + size
    return GrpcWebReply(status, {k.lower(): v for k, v in reply_headers}, messages, trailers)


GET_CUSTOMER = "/storefront.accounts.v1.AccountsService/GetCustomer"


def get_customer_request(customer_id: str) -> bytes:
    return accounts_pb2.GetCustomerRequest(customer_id=customer_id).SerializeToString()


def test_grpc_web_through_envoy(edge: Edge) -> None:
    reply = grpc_web(edge, GET_CUSTOMER, get_customer_request("c1"))
    assert (reply.http_status, reply.grpc_status) == (200, 0), reply
    assert reply.headers["content-type"].startswith("application/grpc-web")
    assert [accounts_pb2.Customer.FromString(m) for m in reply.messages] == [fixed_customer()]

    missing = grpc_web(edge, GET_CUSTOMER, get_customer_request("nope"))
    assert missing.grpc_status == grpc.StatusCode.NOT_FOUND.value[0], missing
    assert (
        urllib.parse.unquote(
            missing.trailers.get("grpc-message") or missing.headers["grpc-message"]
        )
        == "customer nope not found"
    )
    assert missing.messages == []


def test_grpc_web_to_an_unrouted_service_is_refused(edge: Edge) -> None:
    """Only the public services' prefixes are routed: not health, reflection or the services'
    internal admin service."""
    for path in (
        "/grpc.health.v1.Health/Check",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/storefront.admin.v1.AdminService/Republish",  # internal, not public
    ):
        reply = grpc_web(edge, path, b"")
        assert reply.http_status == 404, (path, reply)
        assert reply.grpc_status == grpc.StatusCode.UNIMPLEMENTED.value[0], (path, reply)
        assert reply.messages == []


def preflight(edge: Edge, origin: str, path: str = GET_CUSTOMER) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.request(
            "OPTIONS",
            path,
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization,content-type,x-grpc-web",
            },
        )
        resp = conn.getresponse()
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


def test_cors_preflight_of_the_allowed_origin_is_answered_without_a_token(edge: Edge) -> None:
    reply = preflight(edge, ORIGIN)
    assert reply.status == 200, reply
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    allowed = {h.strip() for h in reply.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-grpc-web"} <= allowed
    assert "POST" in reply.headers["access-control-allow-methods"]


def test_cors_refuses_other_origins(edge: Edge) -> None:
    reply = preflight(edge, "https://evil.example.com")
    assert "access-control-allow-origin" not in reply.headers
    assert reply.status == 401  # not a preflight Envoy answers: the token check refuses it
    call = grpc_web(
        edge, GET_CUSTOMER, get_customer_request("c1"), origin="https://evil.example.com"
    )
    assert "access-control-allow-origin" not in call.headers


def test_a_cross_origin_call_may_read_the_grpc_status(edge: Edge) -> None:
    reply = grpc_web(edge, GET_CUSTOMER, get_customer_request("nope"), origin=ORIGIN)
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    exposed = {h.strip() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message"} <= exposed
    assert reply.grpc_status == grpc.StatusCode.NOT_FOUND.value[0]


# ----- the token check at the edge -------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-a-jwt",
        "Basic dXNlcjpwYXNz",
        "Bearer {expired}",
        "Bearer {foreign}",
        "Bearer {audience}",
    ],
)
def test_requests_without_a_valid_token_are_401_at_the_edge(
    edge: Edge, authorization: str | None
) -> None:
    stranger = LocalIssuer.ensure(edge.log.parent / "stranger")  # a key Envoy does not know
    tokens = {
        "expired": edge.issuer.token("c1", ["staff"], ttl=-3600),
        "foreign": stranger.token("c1", ["staff"]),
        "audience": edge.issuer.token("c1", ["staff"], aud="another-api"),  # Envoy says 403
    }
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        headers = {"authorization": authorization.format(**tokens)} if authorization else {}
        conn.request("GET", "/v1/customers/c1", headers=headers)
        resp = conn.getresponse()
        reply = Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()
    assert reply.status == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert_status_body(reply, 16)

    with grpc.insecure_channel(f"127.0.0.1:{edge.port}") as channel:
        stub = accounts_pb2_grpc.AccountsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            metadata = [("authorization", headers["authorization"])] if headers else None
            stub.GetCustomer(
                accounts_pb2.GetCustomerRequest(customer_id="c1"), timeout=5, metadata=metadata
            )
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED

    # gRPC-Web meets the same check: UNAUTHENTICATED, and nothing reaches the service.
    web = grpc_web(
        edge, GET_CUSTOMER, get_customer_request("c1"), authorization=headers.get("authorization")
    )
    assert web.grpc_status == grpc.StatusCode.UNAUTHENTICATED.value[0], web
    assert web.headers["www-authenticate"].startswith("Bearer")
    assert web.messages == []


def test_a_token_in_the_query_string_is_not_accepted(edge: Edge) -> None:
    """Issue 25, finding 9: jwt_authn took a valid token from `?access_token=` too (the call
    then failed 400 only because the transcoder refuses the unknown parameter). Tokens in URLs
    end up in access logs; only the Authorization header counts."""
    token = edge.issuer.token("c1", ["staff"])
    reply = call(edge, "GET", f"/v1/customers/c1?access_token={token}", token=False)
    assert reply.status == 401, reply
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert_status_body(reply, 16)
    with_header = call(edge, "GET", "/v1/customers/c1")
    assert with_header.status == 200, with_header


# ----- active health checks (last: flips the fake's health) -----------------------------------


def test_grpc_health_check_follows_the_overall_status(
    edge: Edge, fake_accounts: FakeServer
) -> None:
    def wait_health(expected: str) -> None:
        deadline = time.monotonic() + 10
        while (flags := accounts_health(edge)) != expected:
            assert time.monotonic() < deadline, flags
            time.sleep(HEALTH_CHECK_INTERVAL / 2)

    fake_accounts.set_serving(False)
    try:
        wait_health("/failed_active_hc")
    finally:
        fake_accounts.set_serving(True)
    wait_health("healthy")


def test_one_principal_past_its_rate_is_429_and_others_are_served(
    fake_accounts: FakeServer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 25: a flood from one token subject is refused at the edge (429 for REST,
    RESOURCE_EXHAUSTED for gRPC, with a retry hint) while another subject is still served."""
    run = tmp_path_factory.mktemp("envoy-limited")
    with running_edge(fake_accounts, run, rate_limit_per_second=1, rate_limit_burst=5) as e:
        flooder = f"Bearer {e.issuer.customer('flooder')}"
        path = "/v1/customers/c1"

        replies = [call(e, "GET", path, bearer=flooder) for _ in range(12)]
        limited = [r for r in replies if r.status == 429]
        assert len(limited) >= 5, [r.status for r in replies]
        assert limited[0].headers["retry-after"] == "1"
        assert_status_body(limited[0], 8)
        # A principal cannot pick another's bucket by sending the header itself.
        forged = {config.PRINCIPAL_HEADER: "someone"}
        assert call(e, "GET", path, bearer=flooder, headers=forged).status == 429
        with grpc.insecure_channel(f"127.0.0.1:{e.port}") as channel:
            stub = accounts_pb2_grpc.AccountsServiceStub(channel)
            request = accounts_pb2.GetCustomerRequest(customer_id="c1")
            with pytest.raises(grpc.RpcError) as err:
                stub.GetCustomer(request, timeout=5, metadata=[("authorization", flooder)])
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            other = [("authorization", f"Bearer {e.issuer.customer('someone-else')}")]
            assert stub.GetCustomer(request, timeout=5, metadata=other) == fixed_customer()
        assert call(e, "GET", path).status == 200
