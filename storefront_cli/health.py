"""Health of every part of the running system: Kafka, MongoDB, each service
(grpc.health.v1, with its event flow), Envoy and Prometheus.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.error
import urllib.request
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from storefront_cli.where import Where
from svckit import logs, mongo
from svckit.app import EVENTS_HEALTH
from svckit.kafka import KafkaConnection


@dataclass(frozen=True)
class Health:
    part: str
    endpoint: str
    ok: bool
    detail: str
    required: bool = True

    @property
    def state(self) -> str:
        if self.ok:
            return "UP"
        return "DOWN" if self.required else "down (optional)"


def short_error(exc: BaseException | str) -> str:
    """The first line, cut: the table stays readable and the cause is still named."""
    text = logs.redacted(str(exc)) or type(exc).__name__
    return text.splitlines()[0].split(" (configured timeouts")[0][:80]


async def kafka_health(kafka: KafkaConnection, timeout: float) -> Health:
    admin = kafka.admin(request_timeout_ms=int(timeout * 1000))
    bootstrap = kafka.bootstrap_servers
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        brokers = len(cluster["brokers"])
        return Health("kafka", bootstrap, True, f"{brokers} broker{'s' * (brokers != 1)}")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return Health("kafka", bootstrap, False, short_error(exc))
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def mongodb_health(uri: str, timeout: float) -> Health:
    client = mongo.connect(uri, timeout_ms=int(timeout * 1000))
    try:
        info = await client.admin.command("buildInfo")
        detail = f"version {info.get('version', '?')}"
        if "ferretdb" in info:
            detail += " (FerretDB)"
        return Health("mongodb", logs.redacted(uri), True, detail)
    except Exception as exc:  # noqa: BLE001
        return Health("mongodb", logs.redacted(uri), False, short_error(exc))
    finally:
        await client.close()


def replica_parts(where: Where) -> list[tuple[str, str]]:
    """(part, process) of every replica of every service: `accounts_svc` alone, else
    `accounts_svc#1`, `accounts_svc#2` ... (one row each in `status` and the console)."""
    n = where.ports.replicas
    return [
        (f"{s}_svc" if n == 1 else f"{s}_svc#{k + 1}", process)
        for s in where.system.names
        for k, process in enumerate(where.ports.instances(s))
    ]


async def service_health(part: str, target: str, timeout: float) -> Health:
    """grpc.health.v1: "" SERVING means RPCs are served (MongoDB reachable); ``events`` says
    whether the Kafka side flows (broker reachable, no consumer waiting out an outage).
    `part` names the row (`accounts_svc`, or a replica's `accounts_svc#2`)."""
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            rpc, events = await asyncio.gather(
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout),
                stub.Check(health_pb2.HealthCheckRequest(service=EVENTS_HEALTH), timeout=timeout),
            )
        name = health_pb2.HealthCheckResponse.ServingStatus.Name
        detail = f"{name(rpc.status)}, events {name(events.status)}"
        return Health(part, target, rpc.status == health_pb2.HealthCheckResponse.SERVING, detail)
    except grpc.aio.AioRpcError as exc:
        return Health(part, target, False, short_error(f"{exc.code().name}: {exc.details() or ''}"))


def _http_get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return reply.status, reply.read(200).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(200).decode(errors="replace").strip()


async def http_health(part: str, url: str, timeout: float, *, required: bool = True) -> Health:
    """Envoy's admin /ready answers 200 LIVE; Prometheus' /-/ready 200 once its TSDB is up."""
    try:
        status, body = await asyncio.to_thread(_http_get, url, timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Health(part, url, False, short_error(reason), required)
    return Health(part, url, status == 200, f"HTTP {status} {body[:60]}".strip(), required)


async def health(where: Where, timeout: float) -> list[Health]:
    """Every part, checked concurrently so a dead one costs one timeout, not one each."""
    checks = [
        kafka_health(where.ep.kafka, timeout),
        mongodb_health(where.ep.mongodb, timeout),
        *(
            service_health(part, f"{where.host}:{where.ports.grpc(process)}", timeout)
            for part, process in replica_parts(where)
        ),
        http_health("envoy", f"http://{where.host}:{where.ports.envoy_admin}/ready", timeout),
        http_health(
            "prometheus",
            f"http://{where.host}:{where.prometheus_port}/-/ready",
            timeout,
            required=False,
        ),
    ]
    return list(await asyncio.gather(*checks))
