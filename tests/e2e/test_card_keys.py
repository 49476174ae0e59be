"""`storefront keys status | rotate` against the running system: the CLI adds a key, the
accounts_svc process re-seals every card with it, and cards read and update as before."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from google.protobuf import field_mask_pb2

from storefront.accounts.v1 import accounts_pb2
from storefront_cli.clients import Clients
from storefront_cli.demo import PEOPLE, customer_draft
from tests.e2e.conftest import System
from tests.e2e.test_ops import cli

pytestmark = pytest.mark.e2e
KEY_LINE = re.compile(r"^  (?P<key>[0-9a-f-]{36})  .*  cards (?P<cards>\d+)(?P<current>  current)?$")


@pytest.fixture(autouse=True)
def keys_from_the_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI finds the local keys in --run-dir, as an operator's shell would (the session
    exports them for its in-process services)."""
    for name in [k for k in os.environ if k.startswith("CARD_")]:
        monkeypatch.delenv(name)


def flags(s: System) -> list[str]:
    return [
        "--run-dir",
        str(s.stack.run_dir),
        "--mongodb",
        s.stack.mongodb_uri,
        "--db-prefix",
        s.db_prefix,
    ]


def keys_of(out: str) -> dict[str, tuple[int, bool]]:
    return {
        m["key"]: (int(m["cards"]), bool(m["current"]))
        for line in out.splitlines()
        if (m := KEY_LINE.match(line))
    }


async def test_rotate_through_the_cli_reseals_every_card_and_they_still_round_trip(
    running_system: System, clients: Clients
) -> None:
    created = await clients.accounts.CreateCustomer(
        accounts_pb2.CreateCustomerRequest(customer=customer_draft(PEOPLE[2]))
    )
    code, before, err = await cli(running_system, "keys", "status", *flags(running_system))
    assert code == 0, before + err
    code, out, err = await cli(running_system, "keys", "rotate", *flags(running_system), "--wait", "120")
    assert code == 0, out + err
    new_key = re.search(r"new card key ([0-9a-f-]{36})", out)
    assert new_key and "every card is sealed with it" in out, out
    code, after, err = await cli(running_system, "keys", "status", *flags(running_system))
    assert code == 0, after + err
    keys = keys_of(after)
    assert keys[new_key.group(1)][1], after  # the current one...
    assert keys[new_key.group(1)][0] >= 1, after  # ...sealing the cards...
    assert all(n == 0 for k, (n, _) in keys.items() if k != new_key.group(1)), after
    assert set(keys_of(before)) < set(keys)  # ...and the old keys stay, holding none

    read = await clients.accounts.GetCustomer(
        accounts_pb2.GetCustomerRequest(customer_id=created.id)
    )
    assert read.credit_cards[0] == created.credit_cards[0]  # same mask, same card_id
    patch = accounts_pb2.Customer(id=read.id, etag=read.etag)
    patch.credit_cards.extend(read.credit_cards)
    updated = await clients.accounts.UpdateCustomer(
        accounts_pb2.UpdateCustomerRequest(
            customer=patch, update_mask=field_mask_pb2.FieldMask(paths=["credit_cards"])
        )
    )
    assert updated.credit_cards[0].card_id == created.credit_cards[0].card_id


async def test_keys_without_the_run_dirs_keys_says_so(running_system: System, tmp_path: Path) -> None:
    bad = flags(running_system)
    bad[bad.index("--run-dir") + 1] = str(tmp_path)
    code, out, err = await cli(running_system, "keys", "status", *bad)
    assert code == 2 and "CARD_LOCAL_MASTER_KEY_FILE: cannot read" in out, out + err
