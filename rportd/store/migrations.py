"""Schema migrations with golang-migrate's ``schema_migrations`` bookkeeping."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger(__name__)

_FILE_RE = re.compile(r"^(\d+)_[\w-]+\.sql$")


class MigrationError(Exception):
    """A database cannot be brought to the schema this server needs."""


@dataclass(frozen=True)
class Migration:
    """One numbered step of a schema."""

    version: int
    name: str
    statements: tuple[str, ...]


def _migrations_root() -> Path:
    checkout = Path(__file__).resolve().parents[2] / "migrations"
    if checkout.is_dir():
        return checkout
    return Path(str(resources.files("rportd") / "_migrations"))


def load_migrations(schema: str) -> list[Migration]:
    """The steps of ``schema`` in order (``migrations/<schema>/NNN_name.sql``)."""
    folder = _migrations_root() / schema
    if not folder.is_dir():
        raise MigrationError(f"no migrations found for schema {schema!r} in {folder}")
    steps = []
    for path in sorted(folder.iterdir()):
        match = _FILE_RE.match(path.name)
        if not match:
            continue
        text = "\n".join(
            line for line in path.read_text().splitlines() if not line.lstrip().startswith("--")
        )
        statements = tuple(s.strip() for s in re.split(r";\s*$", text, flags=re.M) if s.strip())
        steps.append(Migration(int(match.group(1)), path.stem, statements))
    return steps


async def migrate(engine: AsyncEngine, schema: str, label: str) -> int:
    """Apply the missing steps of ``schema``; return the resulting version."""
    steps = load_migrations(schema)
    async with engine.begin() as conn:
        await conn.exec_driver_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version uint64, dirty bool)"
        )
        await conn.exec_driver_sql(
            "CREATE UNIQUE INDEX IF NOT EXISTS version_unique ON schema_migrations (version)"
        )
        row = (
            (await conn.exec_driver_sql("SELECT version, dirty FROM schema_migrations LIMIT 1"))
            .mappings()
            .first()
        )
    current = int(row["version"]) if row else 0
    if row and row["dirty"]:
        raise MigrationError(
            f"{label}: schema_migrations says version {current} is dirty (a migration was "
            "interrupted); restore a backup or fix the schema and set dirty = 0"
        )
    latest = steps[-1].version if steps else 0
    if current > latest:
        log.warning(
            "%s: schema version %d is newer than this server knows (%d); using it as is",
            label,
            current,
            latest,
        )
        return current
    for step in steps:
        if step.version <= current:
            continue
        async with engine.begin() as conn:
            for statement in step.statements:
                await conn.exec_driver_sql(statement)
            await conn.exec_driver_sql("DELETE FROM schema_migrations")
            await conn.exec_driver_sql(
                "INSERT INTO schema_migrations (version, dirty) VALUES (?, 0)", (step.version,)
            )
        log.debug("%s: applied migration %s", label, step.name)
        current = step.version
    return current
