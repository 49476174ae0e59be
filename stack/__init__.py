"""Local, Docker-free infrastructure for Storefront: tool installs, a process supervisor, and an
embedded Kafka + FerretDB (on a private PostgreSQL cluster) stack.

- ``stack.tools``: ``install()`` and ``path(name)`` for Kafka jars, FerretDB, PostgreSQL, grpcurl,
  ghz, buf, protoc-gen-openapiv2, envoy, kcat.
- ``stack.postgres``: the PostgreSQL cluster FerretDB stores documents in, and the indexes
  FerretDB cannot make itself.
- ``stack.procs``: ``Supervisor(run_dir)`` to start/stop/kill/restart named detached processes.
- ``stack.embedded``: ``EmbeddedStack(run_dir, ports)`` with ``start()``, ``stop()``,
  ``kafka_bootstrap``, ``mongodb_uri``, ``env()``.
- ``python -m stack install|up|down|status|acls|kcat|path``: the CLI (``stack.cli``).
"""
