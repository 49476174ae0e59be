"""Checks that run the project's generators and linters (protoc, buf, the Go and npm plugins,
ruff): gen/ current, the protos linted and compatible. They install what they need; tests/unit
needs no tool at all."""
