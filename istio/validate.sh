#!/usr/bin/env bash
# Validates the deployment with real tools from the package registries, offline otherwise.
#
#   istio/validate.sh              install (idempotent), then run every check below
#   istio/validate.sh install      only install the tools and build the schemas
#   istio/validate.sh manifests F  validate Kubernetes YAML file(s) F ("-" = stdin) as the
#                                  full run validates the rendered istio/
#
# Checks: kustomize renders istio/ (with random MongoDB secrets if none are there yet); kubeconform
# validates every object against the Kubernetes API schemas and the Istio, Strimzi and
# Prometheus Operator CRD schemas (strict: unknown fields fail); hadolint lints
# each service Dockerfile; the transcoder EnvoyFilter is current with gen/storefront.binpb and
# Envoy accepts its filter config. Tools live in .tools/deploy (override: STOREFRONT_DEPLOY_TOOLS).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2 # v5.8.3 needs Go 1.27
KUBECONFORM_VERSION=v0.8.0
KUBERNETES_VERSION=1.33.0 # schemas from kubernetes-validate (istio/tools/requirements.txt)
ISTIO_API_VERSION=v1.31.1 # Go module istio.io/api: kubernetes/customresourcedefinitions.gen.yaml
STRIMZI_VERSION=1.2.0     # Maven io.strimzi:api + crd-generator
PROMETHEUS_OPERATOR_VERSION=v0.85.0 # Go module: example/prometheus-operator-crd (PrometheusRule)
# The Strimzi kinds istio/ uses, each generated into a CRD schema (in the crd-schemas key).
STRIMZI_KINDS=(kafka.Kafka nodepool.KafkaNodePool topic.KafkaTopic user.KafkaUser)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS=${STOREFRONT_DEPLOY_TOOLS:-$ROOT/.tools/deploy}
BIN=$TOOLS/bin
VENV=$TOOLS/venv
SCHEMAS=$TOOLS/schemas
STAMPS=$TOOLS/stamps
HERE=$ROOT/istio
DOCKERFILES=(accounts_svc/Dockerfile orders_svc/Dockerfile fulfillment_svc/Dockerfile catalog_svc/Dockerfile)

fail() {
  echo "validate: FAILED: $*" >&2
  exit 1
}
step() { echo "==> $*" >&2; }

# A step reruns only when its key (versions + the files that shape its output) changes.
fresh() { [[ -f $STAMPS/$1 && $(cat "$STAMPS/$1") == "$2" ]]; }
stamp() { mkdir -p "$STAMPS" && printf '%s' "$2" >"$STAMPS/$1"; }
digest() { cat "$@" | sha256sum | cut -c1-16; }

go_install() { # name module version
  local key="$2@$3"
  fresh "$1" "$key" && [[ -x $BIN/$1 ]] && return
  step "go install $key"
  command -v go >/dev/null || fail "go is not on PATH"
  GOBIN=$BIN GOTOOLCHAIN=local go install "$key" || fail "go install $key"
  stamp "$1" "$key"
}

python_tools() {
  local key
  key=$(digest "$HERE/tools/requirements.txt")
  fresh venv "$key" && [[ -x $VENV/bin/hadolint ]] && return
  step "python tools -> $VENV"
  command -v uv >/dev/null || fail "uv is not on PATH"
  uv venv --quiet --allow-existing --python 3.11 "$VENV" || fail "uv venv $VENV"
  uv pip install --quiet --python "$VENV/bin/python" -r "$HERE/tools/requirements.txt" ||
    fail "uv pip install -r istio/tools/requirements.txt"
  stamp venv "$key"
}

kubernetes_schemas() {
  local key src
  key="$KUBERNETES_VERSION $(digest "$HERE/tools/requirements.txt" "$HERE/tools/schemas.py")"
  fresh kubernetes-schemas "$key" && return
  step "Kubernetes $KUBERNETES_VERSION schemas"
  src=$("$VENV/bin/python" -c 'import kubernetes_validate, pathlib; print(pathlib.Path(kubernetes_validate.__file__).parent)')
  src="$src/kubernetes-json-schema/v$KUBERNETES_VERSION-local-strict"
  [[ -d $src ]] || fail "kubernetes-validate has no schemas for $KUBERNETES_VERSION"
  rm -rf "$SCHEMAS/kubernetes"
  "$VENV/bin/python" "$HERE/tools/schemas.py" kubernetes "$src" "$SCHEMAS/kubernetes" || fail "Kubernetes schemas"
  stamp kubernetes-schemas "$key"
}

java21() { # Strimzi 1.x's generator is built for Java 21+; Debian's default may be 17.
  local candidate major
  for candidate in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
    [[ -x $candidate ]] || continue
    major=$("$candidate" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java.specification.version = //p')
    if [[ ${major:-0} -ge 21 ]]; then
      echo "$candidate"
      return
    fi
  done
  fail "Strimzi's CRD generator needs Java 21+: none found (set JAVA_HOME)"
}

crd_schemas() {
  local key istio_dir operator_dir java crds=$TOOLS/crds
  key="$ISTIO_API_VERSION $STRIMZI_VERSION ${STRIMZI_KINDS[*]} $PROMETHEUS_OPERATOR_VERSION $(digest "$HERE/tools/schemas.py" "$HERE/tools/strimzi/pom.xml")"
  fresh crd-schemas "$key" && return
  rm -rf "$crds" "$SCHEMAS/crds"
  mkdir -p "$crds"

  step "Istio CRDs from Go module istio.io/api@$ISTIO_API_VERSION"
  istio_dir=$(GOTOOLCHAIN=local go mod download -json "istio.io/api@$ISTIO_API_VERSION" |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') ||
    fail "go mod download istio.io/api@$ISTIO_API_VERSION"
  cp "$istio_dir/kubernetes/customresourcedefinitions.gen.yaml" "$crds/istio.yaml"

  step "PrometheusRule CRD from Go module prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
  operator_dir=$(GOTOOLCHAIN=local go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') ||
    fail "go mod download prometheus-operator@$PROMETHEUS_OPERATOR_VERSION"
  cp "$operator_dir/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml" \
    "$crds/prometheusrules.yaml"

  step "Strimzi $STRIMZI_VERSION CRDs from Maven Central (io.strimzi:api, crd-generator)"
  command -v mvn >/dev/null || fail "mvn is not on PATH"
  mvn -q -B -f "$HERE/tools/strimzi/pom.xml" -Dstrimzi.version="$STRIMZI_VERSION" \
    dependency:build-classpath -Dmdep.outputFile="$crds/strimzi.classpath" >"$crds/mvn.log" 2>&1 ||
    { cat "$crds/mvn.log" >&2; fail "mvn could not resolve io.strimzi:api:$STRIMZI_VERSION"; }
  java=$(java21)
  local kind kinds=()
  for kind in "${STRIMZI_KINDS[@]}"; do
    kinds+=("io.strimzi.api.kafka.model.$kind=$crds/strimzi-${kind#*.}.yaml")
  done
  "$java" -cp "$(cat "$crds/strimzi.classpath")" io.strimzi.crdgenerator.CrdGenerator \
    --crd-api-version v1 --api-versions v1 --storage-version v1 --target-kube 1.16+ --yaml \
    "${kinds[@]}" || fail "Strimzi CRD generator"

  "$VENV/bin/python" "$HERE/tools/schemas.py" crds "$SCHEMAS/crds" "$crds"/*.yaml || fail "CRD schemas"
  stamp crd-schemas "$key"
}

install() {
  mkdir -p "$BIN"
  go_install kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
  go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
  python_tools
  kubernetes_schemas
  crd_schemas
}

# Core kinds resolve in the Kubernetes schemas, custom resources in the CRD schemas; a kind in
# neither is an error, never skipped.
manifests() {
  "$BIN/kubeconform" -strict -summary -output text \
    -schema-location "$SCHEMAS/kubernetes/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$SCHEMAS/crds/{{ .ResourceKind }}-{{ .Group }}-{{ .ResourceAPIVersion }}.json" \
    "$@"
}

check_all() {
  local rendered=$TOOLS/rendered.yaml failed=()
  cd "$ROOT"

  # The MongoDB Secrets come from git-ignored env files: random ones where there are none.
  uv run --frozen python istio/gen_secrets.py || failed+=("istio/gen_secrets.py")
  step "kustomize build istio/"
  if "$BIN/kustomize" build istio/ >"$rendered"; then
    step "kubeconform: $(grep -c '^kind:' "$rendered") objects"
    manifests "$rendered" || failed+=("manifests do not match their schemas")
  else
    failed+=("kustomize build istio/")
  fi

  step "hadolint ${DOCKERFILES[*]}"
  "$VENV/bin/hadolint" --no-color --config "$HERE/tools/hadolint.yaml" "${DOCKERFILES[@]}" || failed+=("Dockerfile lint")

  step "transcoder EnvoyFilter vs gen/storefront.binpb, checked by Envoy"
  uv run --frozen python istio/gen_transcoder.py --check --envoy || failed+=("transcoder EnvoyFilter")

  ((${#failed[@]} == 0)) || fail "$(IFS=';'; echo "${failed[*]}")"
  echo "validate: all deployment checks passed" >&2
}

case ${1:-all} in
install) install ;;
manifests)
  shift
  (($#)) || fail "usage: istio/validate.sh manifests FILE..."
  install
  manifests "$@"
  ;;
all)
  install
  check_all
  ;;
*) fail "unknown command '$1' (all | install | manifests FILE...)" ;;
esac
