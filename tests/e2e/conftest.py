"""End-to-end fixtures beyond the shared `running_system` (tests/conftest.py)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import topology
from stack.embedded import EmbeddedStack, Ports
from storefront_cli import system
from tests import leaks
from tests.support import System, load_catalog


@pytest.fixture(scope="module")
def isolated_system() -> Iterator[System]:
    """A system on a stack of its own, for tests that compare whole databases with
    whole topics (`storefront check`, replay): the shared stack's topics carry
    other suites' events, which a fresh consumer group rightly applies."""
    st = EmbeddedStack(
        Path(tempfile.mkdtemp(prefix="storefront-isolated-")), Ports.free(), log=lambda _: None
    )
    ports = system.SystemPorts.free()
    found: list[str] = []
    try:
        st.start()
        system.start_services(st, ports, db_prefix="iso_", log=lambda _: None)
        isolated = System(st, ports, "iso_")
        load_catalog(isolated)
        yield isolated
        for service in topology.SYSTEM.names:  # complete logs, as at the session's end
            st.supervisor.stop(service)
        found = leaks.stack_leaks(st)
    finally:
        st.stop()
    assert not found, f"personal or card data in {st.run_dir}:\n" + "\n".join(found[:20])


__all__ = ["System", "isolated_system"]
