"""Local, Docker-free infrastructure for Storefront: tool installs, a process supervisor, and an
embedded Kafka + FerretDB stack.

- ``stack.tools``: ``install()`` and ``path(name)`` for Kafka jars, FerretDB, grpcurl, ghz, buf,
  protoc-gen-openapiv2, envoy, kcat.
- ``stack.procs``: ``Supervisor(run_dir)`` to start/stop/kill/restart named detached processes.
- ``stack.embedded``: ``EmbeddedStack(run_dir, ports)`` with ``start()``, ``stop()``,
  ``kafka_bootstrap``, ``mongodb_uri``, ``env()``.
- ``python -m stack install|up|down|status|path``: the CLI (``stack.cli``).
"""
