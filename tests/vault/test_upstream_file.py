"""An upstream-made ``vault.sqlite.db`` opens and decrypts; what we write, upstream can read."""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.conftest import ADMIN, Api, ServerFactory, api_base

PASSWORD = "upstream-pass"


def upstream_encrypt(password: str, clear: bytes) -> str:
    """What upstream stores: base64(nonce || AES-256-GCM(sha256(password)))."""
    nonce = os.urandom(12)
    key = hashlib.sha256(password.encode()).digest()
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, clear, None)).decode()


def upstream_decrypt(password: str, stored: str) -> bytes:
    raw = base64.b64decode(stored)
    key = hashlib.sha256(password.encode()).digest()
    return AESGCM(key).decrypt(raw[:12], raw[12:], None)


# Upstream's check value: a nanosecond timestamp followed by the SHA-256 of nothing
# (raw bytes, not UTF-8), stored in a TEXT column.
DEC_CHECK = b"1699870000123456789" + hashlib.sha256().digest()


def make_upstream_vault(path: Path) -> None:
    """The file as upstream's migration 1 and a few API calls leave it."""
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE schema_migrations (version uint64, dirty bool);
        CREATE UNIQUE INDEX version_unique ON schema_migrations (version);
        INSERT INTO schema_migrations VALUES (1, 0);
        CREATE TABLE "values" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "client_id" text NOT NULL DEFAULT 0,
            "required_group" TEXT,
            "created_at" DATE NOT NULL,
            "created_by" TEXT NOT NULL,
            "updated_at" DATE NOT NULL,
            "updated_by" TEXT,
            "key" TEXT NOT NULL,
            "value" TEXT NOT NULL,
            "type" TEXT NOT NULL
        );
        CREATE INDEX "client_id" ON "values" ("client_id" ASC);
        CREATE INDEX "key" ON "values" ("key" ASC);
        CREATE UNIQUE INDEX "unique_client_id_key" ON "values" ("client_id" ASC, "key" ASC);
        CREATE TABLE "status" (
            "id" INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            "db_status" text NOT NULL,
            "enc_check" TEXT,
            "dec_check" TEXT
        );
        """
    )
    con.execute(
        "INSERT INTO status (db_status, enc_check, dec_check) VALUES (?, ?, CAST(? AS TEXT))",
        ("setup-completed", upstream_encrypt(PASSWORD, DEC_CHECK), DEC_CHECK),
    )
    con.execute(
        'INSERT INTO "values" (client_id, required_group, created_at, created_by, updated_at, '
        "updated_by, key, value, type) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            "web01",
            "",
            "2023-11-13T10:00:00+02:00",
            "admin",
            "2023-11-13T11:30:00+02:00",
            "admin",
            "ssh-key",
            upstream_encrypt(PASSWORD, "-----BEGIN KEY-----\nü\n".encode()),
            "secret",
        ),
    )
    con.commit()
    con.close()


async def test_upstream_vault_file_unlocks_and_decrypts(
    make_server: ServerFactory, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    data_dir = tmp_path / "up" / "data"
    data_dir.mkdir(parents=True)
    make_upstream_vault(data_dir / "vault.sqlite.db")
    server = await make_server("up")
    assert server.data_dir == data_dir
    api = Api(http, api_base(server), ADMIN)
    assert (await api.get("/vault-admin"))[1]["data"] == {
        "init": "setup-completed",
        "status": "locked",
    }
    status, body = await api.post("/vault-admin/sesame", json={"password": "not-it"})
    assert (status, body["errors"][0]["title"]) == (401, "wrong password provided")
    assert await api.post("/vault-admin/sesame", json={"password": PASSWORD}) == (201, None)

    status, body = await api.get("/vault/1")
    assert status == 200
    assert body["data"] == {
        "client_id": "web01",
        "required_group": "",
        "key": "ssh-key",
        "value": "-----BEGIN KEY-----\nü\n",
        "type": "secret",
        "id": 1,
        "created_at": "2023-11-13T10:00:00+02:00",
        "updated_at": "2023-11-13T11:30:00+02:00",
        "created_by": "admin",
        "updated_by": "admin",
    }
    status, body = await api.get("/vault")
    assert body["data"] == [
        {
            "id": 1,
            "client_id": "web01",
            "created_by": "admin",
            "created_at": "2023-11-13T10:00:00+02:00",
            "key": "ssh-key",
        }
    ]
    # The unique index of upstream's schema still refuses a duplicate key.
    dup = {"client_id": "web01", "key": "ssh-key", "value": "x", "type": "text"}
    assert (await api.post("/vault", json=dup))[0] == 409
    new = {"client_id": "web01", "key": "api-token", "value": "tok-123", "type": "string"}
    status, body = await api.post("/vault", json=new)
    assert (status, body) == (201, {"data": {"id": 2}})

    await server.stop()
    # What we wrote, upstream reads: same encryption, same columns; the check value is intact.
    con = sqlite3.connect(data_dir / "vault.sqlite.db")
    con.text_factory = bytes
    row = con.execute('SELECT value, type, created_at FROM "values" WHERE id = 2').fetchone()
    (dec_check,) = con.execute("SELECT dec_check FROM status").fetchone()
    (dec_type,) = con.execute("SELECT typeof(dec_check) FROM status").fetchone()
    con.close()
    assert upstream_decrypt(PASSWORD, row[0].decode()) == b"tok-123"
    assert row[1] == b"string"
    assert row[2].decode().endswith("Z")
    assert (dec_check, dec_type) == (DEC_CHECK, b"text")
