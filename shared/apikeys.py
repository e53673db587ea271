"""API keys: generated at random, stored only as SHA-256 hashes, looked up by hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Connection, text

KEY_PREFIX = "ar_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def company_for_key(conn: Connection, key: str) -> int | None:
    """The company owning an active key, or None."""
    wanted = hash_key(key)
    row = conn.execute(
        text("SELECT key_hash, company_id FROM api_keys WHERE key_hash = :h AND revoked_at IS NULL"),
        {"h": wanted},
    ).first()
    # The index finds the row; compare_digest keeps the final check constant-time.
    if row is None or not hmac.compare_digest(row.key_hash, wanted):
        return None
    return int(row.company_id)


def add_key(conn: Connection, company_id: int, key: str) -> None:
    conn.execute(
        text(
            "INSERT INTO api_keys (key_hash, company_id) VALUES (:h, :c) "
            "ON CONFLICT (key_hash) DO UPDATE SET company_id = EXCLUDED.company_id, revoked_at = NULL"
        ),
        {"h": hash_key(key), "c": company_id},
    )


def revoke_key(conn: Connection, key: str) -> bool:
    result = conn.execute(
        text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h AND revoked_at IS NULL"),
        {"h": hash_key(key)},
    )
    return result.rowcount == 1
