"""`storefront keys status | rotate | rewrap`: the card encryption keys (accounts_svc.cards).

`rotate` adds a new data key to the card key vault, wrapped by the configured master key.
The running accounts_svc notices the newer key within seconds and re-seals every card with
it (`AccountsHandlers.reseal_all`), each customer under its lock and version guard like any
write, so requests keep running and none is lost; this command only waits and reports. The
old keys stay in the vault (cards under them remain readable until re-sealed) and can be
deleted once `status` shows no card under them.

`rewrap` changes the master key instead: every data key is wrapped again with the configured
one (CARD_KMS_PROVIDER, CARD_MASTER_KEY), and the cards stay as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from accounts_svc import cards
from accounts_svc.cards import CardKeyConfig, CardVault
from accounts_svc.repository import CARDS, LIVE, CustomerRepository
from stack import cardkeys
from storefront_cli import endpoints
from svckit import mongo
from svckit.settings import ConfigError

Document = dict[str, Any]


async def cards_by_key(repo: CustomerRepository) -> Counter[str]:
    """How many stored cards each data key sealed ("clear" for cards still unencrypted)."""
    counts: Counter[str] = Counter()
    async for doc in repo.collection.find({**LIVE, CARDS: {"$exists": True}}, {CARDS: 1}):
        for card in doc[CARDS]:
            key = card.get(cards.KEY_ID)
            counts["clear" if cards.PLAINTEXT in card or key is None else cards.key_name(key)] += 1
    return counts


async def status(uri: str, database: str, config: CardKeyConfig, out: Any = print) -> int:
    client = mongo.connect(uri)
    try:
        repo = CustomerRepository(client[database])
        vault = CardVault(config, client)
        newest = await vault.newest_key()
        counts = await cards_by_key(repo)
        out(f"key vault {config.key_vault_namespace} (provider {config.provider}):")
        async for key in vault.keys.find({}).sort("creationDate", 1):
            name = cards.key_name(key["_id"])
            mark = "  current" if key["_id"] == newest else ""
            provider = key.get("masterKey", {}).get("provider", "?")
            out(
                f"  {name}  {key['creationDate']:%Y-%m-%d %H:%M:%S}  {provider:8}"
                f"  cards {counts.pop(name, 0)}{mark}"
            )
        for name, n in counts.items():
            why = "not encrypted yet" if name == "clear" else "key missing"
            out(f"  {name}  cards {n}  ({why})")
        await vault.close()
    finally:
        await client.close()
    return 0


async def rotate(
    uri: str, database: str, config: CardKeyConfig, *, wait: float, out: Any = print
) -> int:
    """Add a newer data key, then wait until accounts has re-sealed every card with it."""
    client = mongo.connect(uri)
    try:
        repo = CustomerRepository(client[database])
        vault = CardVault(config, client)
        key = await vault.create_key()
        await vault.close()
        out(f"new card key {cards.key_name(key)}; accounts_svc re-seals every card with it")
        started = time.monotonic()
        while True:
            scan = time.monotonic()
            left = await due(repo, key)
            if left == 0:
                out(f"every card is sealed with it ({time.monotonic() - started:.1f}s)")
                return 0
            if time.monotonic() - started > wait:
                out(f"{left} customers still have cards under older keys after {wait:.0f}s")
                return 1
            # Each look reads every customer's cards: at most a third of the time looking.
            await asyncio.sleep(max(1.0, 2 * (time.monotonic() - scan)))
    finally:
        await client.close()


async def rewrap(uri: str, database: str, config: CardKeyConfig, out: Any = print) -> int:
    """Wrap every data key with the configured master key, so an old one can be retired."""
    client = mongo.connect(uri)
    try:
        vault = CardVault(config, client)
        n = await vault.rewrap_all()
        await vault.close()
        out(f"{n} data keys now wrapped by provider {config.provider}")
        return 0
    finally:
        await client.close()


async def due(repo: CustomerRepository, key: Any) -> int:
    """Customers whose cards are not all sealed with `key` yet."""
    n, after = 0, None
    while True:
        ids, after = await repo.ids_to_reseal(key, after, 500)
        n += len(ids)
        if after is None:
            return n


def _config(args: argparse.Namespace, ep: endpoints.Endpoints) -> CardKeyConfig:
    env = cardkeys.env_for(Path(args.run_dir), create=False)
    return CardKeyConfig.from_env(ep.database("accounts"), env)


def _cmd(args: argparse.Namespace) -> int:
    ep = endpoints.load(Path(args.run_dir), db_prefix=args.db_prefix)
    if args.mongodb:
        ep = endpoints.Endpoints(ep.kafka, args.mongodb, ep.db_prefix)
    try:
        config = _config(args, ep)
    except ConfigError as exc:
        print(f"storefront keys: {exc}")
        return 2
    database = ep.database("accounts")
    if args.action == "rotate":
        return asyncio.run(rotate(ep.mongodb, database, config, wait=args.wait))
    if args.action == "rewrap":
        return asyncio.run(rewrap(ep.mongodb, database, config))
    return asyncio.run(status(ep.mongodb, database, config))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys` to the `storefront` command."""
    p = sub.add_parser("keys", help="card encryption keys: status, rotate, rewrap")
    p.add_argument("action", choices=("status", "rotate", "rewrap"))
    p.add_argument("--run-dir", default=str(endpoints.RUN_DIR), help="where the local keys are")
    p.add_argument("--mongodb", help="MongoDB URI (default: stack.env, then 127.0.0.1:27017)")
    p.add_argument("--db-prefix", default=None, help="database name prefix (tests)")
    p.add_argument(
        "--wait", type=float, default=300.0, help="rotate: seconds to wait for re-sealing"
    )
    p.set_defaults(func=_cmd)
