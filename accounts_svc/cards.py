"""Card numbers at rest: MongoDB explicit client-side field-level encryption, plus a keyed
fingerprint for matching.

A stored card holds no number: `number_ciphertext` (BSON binary subtype 6, AES-256-CBC +
HMAC-SHA-512, Random algorithm; its bytes 1-16 are the id of the data key that made it),
`key_id` (the same id, so queries can find cards under a retired key), `last4`,
`number_length` (to mask it), `fingerprint` (HMAC-SHA256 of the digits under a key of its
own; internal, never in a response or an event) and `card_id` (random, given when the card is
first stored: an id derived from the digits would tell whoever can add cards which numbers
other cards hold). Data keys live in a key vault collection, each wrapped by the master key of a KMS
provider: `local` (a 96-byte key from a file) for the embedded stack, or aws/gcp/azure/kmip by
configuration (docs/security.md). The newest data key in the vault is the current one: new
cards are sealed with it, and `storefront keys rotate` adds a newer one, after which accounts
re-seals every card (handlers.AccountsHandlers.reseal_all).

Only accounts_svc decrypts, and only to re-seal (an update of the cards, rotation): responses
are masked from `last4` and `number_length` without decrypting anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson.binary import STANDARD, Binary
from bson.codec_options import CodecOptions
from pymongo import AsyncMongoClient
from pymongo.asynchronous.encryption import AsyncClientEncryption
from pymongo.encryption import Algorithm

from svckit import guards
from svckit.settings import ConfigError

Document = dict[str, Any]

LOCAL_KEY_BYTES = 96
"""libmongocrypt's local master key: 96 bytes."""
MIN_FINGERPRINT_KEY_BYTES = 32
KEY_VAULT_COLLECTION = "__keyVault"
KEY_ALT_NAME_PREFIX = "storefront-cards-"
PROVIDERS = ("local", "aws", "gcp", "azure", "kmip")
ALGORITHM = Algorithm.AEAD_AES_256_CBC_HMAC_SHA_512_Random
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(uuid_representation=STANDARD, tz_aware=True)

# Fields of a stored card: the ciphertext and what is kept beside it.
CIPHERTEXT = "number_ciphertext"
KEY_ID = "key_id"
LAST4 = "last4"
LENGTH = "number_length"
FINGERPRINT = "fingerprint"
CARD_ID = "card_id"
PLAINTEXT = "number"
"""Where databases from before encryption hold the number in clear; re-sealed on start."""
CARD_ID_CHARS = 24
"""A card's id: 96 random bits in hex."""


class CardKeyError(ConfigError):
    """The card key configuration is missing or unusable."""


def key_name(key: Binary) -> str:
    return str(uuid.UUID(bytes=bytes(key)))


def _secret_bytes(path: str, what: str) -> bytes:
    """A key file: raw bytes, or their base64 on one line (what Kubernetes Secrets hold)."""
    if not path:
        raise CardKeyError(f"{what} is not configured")
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CardKeyError(f"{what}: cannot read {path}: {exc.strerror}") from None
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except binascii.Error:
        return raw


def _json(value: str, what: str) -> Any:
    """JSON text, or the path of a file holding it."""
    text = value
    if value and not value.lstrip().startswith("{"):
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise CardKeyError(f"{what}: cannot read {value}: {exc.strerror}") from None
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise CardKeyError(f"{what} is not JSON: {exc.msg} at {exc.pos}") from None


@dataclass(frozen=True)
class CardKeyConfig:
    """Where card keys come from; read by the service and by `storefront keys`."""

    provider: str
    """The KMS provider that wraps new data keys."""
    kms_providers: Mapping[str, Any] = field(repr=False)
    master_key: Mapping[str, Any] | None
    """The provider's key that wraps data keys (aws: region + key ARN, ...); None for local."""
    key_vault_namespace: str
    fingerprint_key: bytes = field(repr=False)
    kms_tls_options: Mapping[str, Any] | None = None

    @classmethod
    def from_env(cls, database: str, env: Mapping[str, str] = os.environ) -> CardKeyConfig:
        """CARD_KMS_PROVIDER (local), CARD_LOCAL_MASTER_KEY_FILE, CARD_KMS_PROVIDERS,
        CARD_MASTER_KEY, CARD_KMS_TLS_OPTIONS, CARD_KEY_VAULT_NAMESPACE (<database>.__keyVault),
        CARD_FINGERPRINT_KEY_FILE. See docs/security.md."""
        provider = env.get("CARD_KMS_PROVIDER", "local")
        if provider.split(":")[0] not in PROVIDERS:
            raise CardKeyError(
                f"CARD_KMS_PROVIDER {provider!r} is not one of {', '.join(PROVIDERS)}"
            )
        providers = dict(_json(env.get("CARD_KMS_PROVIDERS", ""), "CARD_KMS_PROVIDERS"))
        local_file = env.get("CARD_LOCAL_MASTER_KEY_FILE", "")
        if local_file or provider == "local":
            local = _secret_bytes(local_file, "CARD_LOCAL_MASTER_KEY_FILE")
            if len(local) != LOCAL_KEY_BYTES:
                raise CardKeyError(
                    f"CARD_LOCAL_MASTER_KEY_FILE must hold {LOCAL_KEY_BYTES} bytes "
                    f"(or their base64), not {len(local)}"
                )
            providers["local"] = {"key": local}
        if provider not in providers:
            raise CardKeyError(f"CARD_KMS_PROVIDERS has no credentials for {provider!r}")
        master_key = _json(env.get("CARD_MASTER_KEY", ""), "CARD_MASTER_KEY") or None
        if master_key is None and provider.split(":")[0] in ("aws", "gcp", "azure"):
            raise CardKeyError(f"CARD_MASTER_KEY is required for provider {provider!r}")
        fingerprint_key = _secret_bytes(
            env.get("CARD_FINGERPRINT_KEY_FILE", ""), "CARD_FINGERPRINT_KEY_FILE"
        )
        if len(fingerprint_key) < MIN_FINGERPRINT_KEY_BYTES:
            raise CardKeyError(
                f"CARD_FINGERPRINT_KEY_FILE must hold at least {MIN_FINGERPRINT_KEY_BYTES} bytes"
            )
        namespace = env.get("CARD_KEY_VAULT_NAMESPACE") or f"{database}.{KEY_VAULT_COLLECTION}"
        if namespace.count(".") < 1 or namespace.startswith(".") or namespace.endswith("."):
            raise CardKeyError(f"CARD_KEY_VAULT_NAMESPACE {namespace!r} is not <db>.<collection>")
        tls = _json(env.get("CARD_KMS_TLS_OPTIONS", ""), "CARD_KMS_TLS_OPTIONS") or None
        return cls(provider, providers, master_key, namespace, fingerprint_key, tls)


def fingerprint(key: bytes, digits: str) -> str:
    return hmac.new(key, digits.encode(), hashlib.sha256).hexdigest()


def new_card_id() -> str:
    return os.urandom(CARD_ID_CHARS // 2).hex()


def masked_number(last4: str, length: int) -> str:
    return "*" * max(0, length - len(last4)) + last4


def needs_reseal(card: Document, current: Binary) -> bool:
    """A stored card in clear (from before encryption), under a key other than `current`, or
    without a card_id of its own (stored when ids were derived from the fingerprint)."""
    return PLAINTEXT in card or card.get(KEY_ID) != current or not card.get(CARD_ID)


class CardVault:
    """Seals and opens card numbers with the current data key of the key vault."""

    def __init__(self, config: CardKeyConfig, client: AsyncMongoClient[Document]) -> None:
        self.config = config
        db, _, coll = config.key_vault_namespace.partition(".")
        self.keys = client[db][coll]
        self._ce: AsyncClientEncryption[Document] = AsyncClientEncryption(
            dict(config.kms_providers),
            config.key_vault_namespace,
            client,
            CODEC,
            kms_tls_options=dict(config.kms_tls_options) if config.kms_tls_options else None,
        )
        self.current: Binary | None = None
        self._refreshing = asyncio.Lock()

    async def newest_key(self) -> Binary | None:
        docs = await self.keys.find({}, {"_id": 1}).sort("creationDate", -1).limit(1).to_list()
        return docs[0]["_id"] if docs else None

    async def create_key(self) -> Binary:
        """A new data key, wrapped by the configured master key; it becomes the newest."""
        master_key = dict(self.config.master_key) if self.config.master_key else None
        alt_name = KEY_ALT_NAME_PREFIX + os.urandom(8).hex()
        return await self._ce.create_data_key(
            self.config.provider, master_key=master_key, key_alt_names=[alt_name]
        )

    async def rewrap_all(self) -> int:
        """Wrap every data key of the vault with the configured master key (the new one, when
        the master key changes); the cards themselves are untouched. Returns how many."""
        master_key = dict(self.config.master_key) if self.config.master_key else None
        result = await self._ce.rewrap_many_data_key(
            {}, provider=self.config.provider, master_key=master_key
        )
        return result.bulk_write_result.modified_count if result.bulk_write_result else 0

    async def ensure_index(self) -> None:
        """The key vault index MongoDB's documentation asks for (unique alternate names;
        skipped where partial indexes are missing: the names made here are random anyway)."""
        await guards.create_partial_index(
            self.keys, "keyAltNames", {"keyAltNames": {"$exists": True}}, unique=True
        )

    async def refresh(self) -> bool:
        """Follow the newest key of the vault (creating the first); True if it changed."""
        async with self._refreshing:  # one first key, not one per concurrent first write
            newest = await self.newest_key() or await self.create_key()
            changed = newest != self.current
            self.current = newest
            return changed

    def fingerprint(self, digits: str) -> str:
        return fingerprint(self.config.fingerprint_key, digits)

    async def seal(self, card: Document) -> Document:
        """A card as the API holds it (number in clear) -> as it is stored. A card that has no
        card_id yet (a new number: the domain clears it) is given a new random one."""
        if self.current is None:
            await self.refresh()
        digits = card.get(PLAINTEXT, "")
        if not digits.isdigit():  # a masked number (a card never opened) or none at all
            raise ValueError("only a card number's digits can be sealed")
        out = {k: v for k, v in card.items() if k != PLAINTEXT}
        out[CIPHERTEXT] = await self._ce.encrypt(digits, ALGORITHM, key_id=self.current)
        out[KEY_ID] = self.current
        out[LAST4] = digits[-4:]
        out[LENGTH] = len(digits)
        out[FINGERPRINT] = self.fingerprint(digits)
        out[CARD_ID] = card.get(CARD_ID) or new_card_id()
        return out

    async def open(self, stored: Document) -> Document:
        """A stored card -> as the API holds it, with the number in clear and its card_id."""
        out = view(stored)
        if CIPHERTEXT in stored:
            out[PLAINTEXT] = await self._ce.decrypt(stored[CIPHERTEXT])
        return out

    async def close(self) -> None:
        await self._ce.close()


def view(stored: Document) -> Document:
    """A stored card -> as responses show it: number masked, its card_id, never its
    fingerprint; nothing decrypted. A card from before random ids has no card_id until the
    start-up sweep gives it one (it still matches by its last four meanwhile)."""
    out = {
        k: v for k, v in stored.items() if k not in (CIPHERTEXT, KEY_ID, LAST4, LENGTH, FINGERPRINT)
    }
    if PLAINTEXT in stored:
        out[PLAINTEXT] = str(stored[PLAINTEXT])
    else:
        out[PLAINTEXT] = masked_number(str(stored.get(LAST4, "")), int(stored.get(LENGTH, 0)))
    return out
