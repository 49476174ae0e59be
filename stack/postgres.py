"""The embedded stack's PostgreSQL: a private cluster that FerretDB stores every document in.

Why PostgreSQL: FerretDB 1.24 on SQLite ran a version-guarded update at 11/s; on PostgreSQL the
same loop ran at 458/s (docs/performance.md). The cluster lives inside the run dir::

    <run_dir>/data/postgres           initdb'd once; fsync and synchronous_commit stay on
    <run_dir>/secrets/postgres.password  the superuser's password (0600), made once
    <run_dir>/secrets/mongodb/<role>.password  each database role's (0600)

It listens on 127.0.0.1 only (no Unix socket), with scram-sha-256 password authentication, and
runs as the ``postgres`` OS user when started as root (PostgreSQL refuses to run as root).

Who may read what (docs/security.md). FerretDB 1.24 has no users of its own on this backend:
a client's PLAIN credentials become the PostgreSQL user and password of the connection pool
FerretDB opens for it, and a client that sends none gets the user of FerretDB's own URL. That
URL names :data:`ANONYMOUS`, a role that may not log in, and carries no password, so a client
without credentials is refused. Each service logs in as a role of its own (:data:`ROLES`),
which owns the schemas (MongoDB databases) it creates and can use no other's; ``operator``
reads every schema (``storefront check``, status); ``tooling`` (tests, benchmarks) is a member
of every service role. The superuser only sets the cluster up. FerretDB keeps one catalogue of
databases and collections for all clients, loaded by the first one that logs in, so every role
may read each schema's ``_ferretdb_database_metadata`` (collection names and indexes, never
documents): :data:`SETUP_SQL`'s event trigger grants that, and hands every table created in a
schema to the schema's owner.

Indexes. FerretDB 1.24 looks a field up as ``_jsonb->'f' @> value`` (containment), which no
btree answers: every lookup by ``_id``, ``customer_id`` or ``status`` scanned the table, and
the cost grew with the data (find_one by ``_id`` measured at 1,527/s with 1,000 documents, 150/s
with 30,000). The patched FerretDB looks ``_id`` up with ``=``, which its unique btree answers
(patch 0010), and every other indexed field through the ordering btree patch 0003 gives each
index (patch 0011), so the services declare their indexes the MongoDB way (``create_index``) and
the same declaration serves both servers. Each MongoDB index is one PostgreSQL btree (two for a
unique one), and every write maintains no more. :data:`SETUP_SQL` drops the GIN twins that
clusters from before 0011 have.

The patched FerretDB writes field names into its SQL as literals and passes only values as bind
parameters (stack/ferretdb/patches/0005), so a prepared statement's generic plan, which
PostgreSQL's default ``plan_cache_mode`` (auto) adopts after five executions when it costs no
more than re-planning, still matches these expression indexes: a page of 50 is planned once per
connection instead of at every execution (PostgreSQL's CPU per page at 100,000 documents 0.87 ms
with ``force_custom_plan``, the setting this needed before, 0.41 ms without).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from stack import tools
from stack.private import create_private, password_file
from stack.procs import ProcessError, Supervisor
from topology import SYSTEM

POSTGRES = "postgres"
"""Supervisor name of the PostgreSQL server process."""
SUPERUSER = "storefront"
ANONYMOUS = "anonymous"
"""The user of FerretDB's own PostgreSQL URL: NOLOGIN, so clients without credentials fail."""
OPERATOR = "operator"
TOOLING = "tooling"
ROLES = (*SYSTEM.names, OPERATOR, TOOLING)
"""Login roles, one password file each; a MongoDB client logs in as one of them."""
CATALOG = "ferretdb_catalog"
"""NOLOGIN group role of every login role: may read FerretDB's per-schema metadata."""
DATABASE = "ferretdb"
"""The PostgreSQL database FerretDB keeps its data in (one schema per MongoDB database)."""
OS_USER = "postgres"
"""The OS user the server runs as when the stack runs as root (Debian's package creates it)."""

MAX_CONNECTIONS = 500
FERRETDB_POOL = 250
"""FerretDB's PostgreSQL pool (pgx ``pool_max_conns``), one per login role. FerretDB stops
answering altogether, even ``ping``, once more operations are in flight than a pool holds (each
can need a second connection while it holds one), so it is sized above what every MongoDB client
of one role can have in flight (tests and benches run several as ``tooling``, at
``svckit.mongo.MAX_POOL_SIZE`` each). A pool opens connections only as its clients need them:
PostgreSQL's ``max_connections`` is sized for the pools' sum in use (three services and the
operator at twice ``MAX_POOL_SIZE`` each, tests and benches), with room for psql and
autovacuum."""

SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "unix_socket_directories": "",
    "max_connections": str(MAX_CONNECTIONS),
    "shared_buffers": "256MB",
    "work_mem": "8MB",
    # Durability is not traded for speed: a SIGKILL of the server keeps every committed write.
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    # A stored document over about 2 KB (a customer) is compressed at every write and
    # decompressed at every read: lz4 does it in a fraction of the default pglz's CPU (pglz
    # took 4% of PostgreSQL's under UpdateCustomer at 100/s). Values stored before stay
    # readable; each is rewritten in lz4 at its next write.
    "default_toast_compression": "lz4",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
    # An error's CONTEXT and STATEMENT quote the document FerretDB was writing (names,
    # e-mails): the log says what failed, not with which data.
    "log_error_verbosity": "terse",
    "log_min_error_statement": "panic",
}

SETUP_SQL = r"""
-- The GIN twins older clusters gave FerretDB's btrees (for the containment, `@>`, FerretDB
-- pushed lookups down as): the patched FerretDB looks indexed fields up through its ordering
-- btrees (patch 0011) and _id through its unique btree (0010), so a twin answers nothing and
-- costs every write. Dropped, with the trigger that made them.
DROP EVENT TRIGGER IF EXISTS storefront_gin_for_ferretdb;
DROP FUNCTION IF EXISTS storefront_gin_for_ferretdb();
DROP FUNCTION IF EXISTS storefront_gin_twins(oid);
DROP FUNCTION IF EXISTS storefront_needs_twin(text);
DO $do$
DECLARE
  twin record;
BEGIN
  FOR twin IN SELECT n.nspname, c.relname FROM pg_class c
                JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind = 'i' AND c.relname LIKE 'sfgin\_%' LOOP
    EXECUTE format('DROP INDEX IF EXISTS %I.%I', twin.nspname, twin.relname);
  END LOOP;
END
$do$;

-- Every schema FerretDB makes (a MongoDB database): its metadata table readable by every
-- role (FerretDB's shared catalogue), every table in it owned by the schema's owner (a table
-- tooling creates in a service's database stays usable by the service), and all of it
-- readable by the operator. SECURITY DEFINER: granting needs the owner's rights. Any role
-- may call it (the trigger runs as whoever made the schema); it gives nobody more than this.
CREATE OR REPLACE FUNCTION storefront_share_schema(schema_name name) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
DECLARE
  owner name;
  t record;
BEGIN
  IF schema_name IN ('pg_catalog', 'information_schema', 'public')
     OR schema_name LIKE 'pg\_%' THEN
    RETURN;
  END IF;
  SELECT r.rolname INTO owner FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner
   WHERE n.nspname = schema_name;
  EXECUTE format('GRANT USAGE ON SCHEMA %I TO ferretdb_catalog', schema_name);
  FOR t IN SELECT c.relname, r.rolname AS tbl_owner FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_roles r ON r.oid = c.relowner
            WHERE n.nspname = schema_name AND c.relkind = 'r' LOOP
    IF t.tbl_owner <> owner THEN
      EXECUTE format('ALTER TABLE %I.%I OWNER TO %I', schema_name, t.relname, owner);
    END IF;
    EXECUTE format('GRANT SELECT ON %I.%I TO operator', schema_name, t.relname);
    IF t.relname = '_ferretdb_database_metadata' THEN
      EXECUTE format('GRANT SELECT ON %I.%I TO ferretdb_catalog', schema_name, t.relname);
    END IF;
  END LOOP;
END
$fn$;

CREATE OR REPLACE FUNCTION storefront_share_for_ferretdb() RETURNS event_trigger
LANGUAGE plpgsql AS $fn$
DECLARE
  created record;
BEGIN
  FOR created IN SELECT DISTINCT CASE WHEN d.command_tag = 'CREATE SCHEMA'
                   THEN (SELECT nspname FROM pg_namespace WHERE oid = d.objid)
                   ELSE d.schema_name END AS name
                 FROM pg_event_trigger_ddl_commands() d
                 WHERE d.command_tag IN ('CREATE SCHEMA', 'CREATE TABLE') LOOP
    CONTINUE WHEN created.name IS NULL;
    PERFORM storefront_share_schema(created.name);
  END LOOP;
END
$fn$;

DROP EVENT TRIGGER IF EXISTS storefront_share_for_ferretdb;
CREATE EVENT TRIGGER storefront_share_for_ferretdb ON ddl_command_end
  WHEN TAG IN ('CREATE SCHEMA', 'CREATE TABLE') EXECUTE FUNCTION storefront_share_for_ferretdb();

SELECT storefront_share_schema(nspname) FROM pg_namespace;
"""


def roles_sql(passwords: dict[str, str]) -> str:
    """The login roles and what each may do; run on every start (a new role, a new grant),
    sent on psql's stdin so no password is on a command line."""

    def literal(text: str) -> str:
        return "'" + text.replace("'", "''") + "'"

    lines = [
        f"DO $$ BEGIN CREATE ROLE {CATALOG} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
        f"DO $$ BEGIN CREATE ROLE {ANONYMOUS} NOLOGIN; "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
    ]
    for role, password in passwords.items():
        lines += [
            f"DO $$ BEGIN CREATE ROLE {role} LOGIN; "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$;",
            f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE "
            f"PASSWORD {literal(password)};",
            f"GRANT {CATALOG} TO {role};",
            f"GRANT CONNECT ON DATABASE {DATABASE} TO {role};",
        ]
    writers = [*SYSTEM.names, TOOLING]
    lines += [
        f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC;",
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC;",
        f"GRANT CREATE ON DATABASE {DATABASE} TO {', '.join(writers)};",
        f"GRANT {', '.join(SYSTEM.names)} TO {TOOLING};",
    ]
    # A cluster from before these roles: each service's own database (its default name) goes
    # to its role; SETUP_SQL then hands the tables in it to the schema's owner.
    lines += [
        f"DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_namespace n JOIN pg_roles r "
        f"ON r.oid = n.nspowner WHERE n.nspname = '{s}' AND r.rolname = '{SUPERUSER}') "
        f"THEN ALTER SCHEMA {s} OWNER TO {s}; END IF; END $$;"
        for s in SYSTEM.names
    ]
    return "\n".join(lines) + "\n"


def _server_user() -> str | None:
    """Who runs the server: ourselves, or (as root, which PostgreSQL refuses) Debian's
    ``postgres`` user, which the package creates."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise ProcessError(
            f"running as root, but there is no {OS_USER!r} OS user to run PostgreSQL as "
            f"(install Debian's postgresql package, or run as an ordinary user)"
        ) from None
    return OS_USER


class PostgresCluster:
    """One private cluster in ``<run_dir>/data/postgres``, listening on 127.0.0.1:``port``."""

    def __init__(self, run_dir: Path, port: int, supervisor: Supervisor) -> None:
        self.run_dir = run_dir
        self.port = port
        self.supervisor = supervisor
        self.data_dir = run_dir / "data" / "postgres"
        self.password_file = run_dir / "secrets" / "postgres.password"
        self.roles_dir = run_dir / "secrets" / "mongodb"
        self._os_user: str | None | bool = False  # looked up on first use
        self.extra_settings: dict[str, str] = {}
        """Server settings beyond SETTINGS, for measurements (bench.writes loads
        pg_stat_statements); none in the system's own runs."""

    @property
    def os_user(self) -> str | None:
        """The OS user the server runs as (None: ours); only looked up when the embedded
        database is really used, so an external MONGODB_URI needs none of it."""
        if self._os_user is False:
            self._os_user = _server_user()
        return self._os_user  # type: ignore[return-value]

    # ----- endpoints -----------------------------------------------------------------------

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def role_password_file(self, role: str) -> Path:
        """Where the password of a login role (:data:`ROLES`) is kept."""
        return self.roles_dir / f"{role}.password"

    def role_password(self, role: str) -> str:
        """A login role's password, generated the first time it is asked for."""
        return password_file(self.role_password_file(role))

    def url(self, database: str = DATABASE, user: str = SUPERUSER, **params: str) -> str:
        """A libpq/pgx URL for ``database`` as `user`, without a password (``params`` become
        the query)."""
        query = "&".join(f"{k}={v}" for k, v in params.items())
        base = f"postgres://{user}@127.0.0.1:{self.port}/{database}"
        return f"{base}?{query}" if query else base

    def ferretdb_url(self) -> str:
        """FerretDB's own URL: a role that cannot log in and no password, so only clients
        that bring credentials of their own get a connection."""
        return self.url(user=ANONYMOUS, pool_max_conns=str(FERRETDB_POOL))

    # ----- lifecycle -----------------------------------------------------------------------

    def init(self) -> None:
        """initdb on first use (and the password file): later starts reuse the cluster."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        password_file(self.password_file)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._hand_over(self.data_dir)
        # Beside the data dir, which the server's OS user may already traverse (as root, the
        # secrets dir would otherwise need o+x); private, and gone once initdb read it.
        pwfile = self.data_dir.parent / "postgres.initdb"
        pwfile.unlink(missing_ok=True)  # left by a crash: created afresh, private
        create_private(pwfile, (self.password + "\n").encode())
        self._hand_over(pwfile)
        try:
            self._run(
                [
                    str(tools.path("postgresql") / "initdb"),
                    f"--pgdata={self.data_dir}",
                    f"--username={SUPERUSER}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def argv(self) -> list[str]:
        settings = {**SETTINGS, **self.extra_settings, "port": str(self.port)}
        flags = [f"--{name.replace('_', '-')}={value}" for name, value in settings.items()]
        return [str(tools.path("postgresql") / "postgres"), "-D", str(self.data_dir), *flags]

    def spawn(self) -> None:
        self.supervisor.start(POSTGRES, self.argv(), ready=self.port, wait=False, user=self.os_user)

    def setup(self, timeout: float) -> None:
        """Create FerretDB's database and (re)install :data:`SETUP_SQL`; idempotent.

        Retries while the server is still starting (it accepts TCP before it takes queries).
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                exists = self.psql(
                    "postgres", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"
                )
                if exists.strip() != "1":
                    self.psql("postgres", f"CREATE DATABASE {DATABASE}")
                passwords = {role: self.role_password(role) for role in ROLES}
                self.psql(DATABASE, roles_sql(passwords))
                self.psql(DATABASE, SETUP_SQL)
                return
            except ProcessError:
                if time.monotonic() > deadline or not self.supervisor.is_running(POSTGRES):
                    raise
                time.sleep(0.3)

    # ----- internals -----------------------------------------------------------------------

    def _hand_over(self, path: Path) -> None:
        """Give ``path`` to the server's OS user and let it reach it through the run dir."""
        if self.os_user is None:
            return
        import pwd

        entry = pwd.getpwnam(self.os_user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
        # mkdtemp run dirs are 0700: the server needs to traverse them (not list them).
        for parent in [path.parent, *path.parent.parents]:
            if not parent.is_relative_to(self.run_dir):
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o001)

    def _run(self, argv: list[str], what: str) -> str:
        from stack.procs import as_user

        res = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            cwd="/",
            check=False,
            **as_user(self.os_user),
        )
        if res.returncode != 0:
            raise ProcessError(f"postgres {what} failed:\n{res.stdout}{res.stderr}")
        return res.stdout

    def psql(self, database: str, sql: str, *, user: str = SUPERUSER) -> str:
        """Run ``sql`` in ``database`` as `user` (default the superuser); its rows, unaligned
        (for tools, tests). The password goes in the environment and the SQL on stdin: neither
        is on psql's command line, which every local user can read."""
        password = self.password if user == SUPERUSER else self.role_password(user)
        argv = [
            str(tools.path("postgresql") / "psql"),
            "--no-psqlrc",
            "--quiet",
            "--tuples-only",
            "--no-align",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={self.url(database, user, connect_timeout='5')}",
            "--file=-",
        ]
        env = {**os.environ, "PGPASSWORD": password}
        res = subprocess.run(argv, capture_output=True, text=True, input=sql, env=env)
        if res.returncode != 0:
            raise ProcessError(f"psql failed: {res.stderr.strip()}")
        return res.stdout
