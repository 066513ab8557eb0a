"""The catalog schema, changed only through recorded migrations.

Each migration runs in one transaction together with its row in
``_lorabench_migrations``, so a migration killed half-way leaves the old
version. A catalog written by a newer lorabench is refused, not damaged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb

from lorabench.errors import SchemaVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "Migration", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One recorded schema change."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: list[Migration] = []


def migration(version: int, name: str) -> Callable[[Callable[[], tuple[str, ...]]], None]:
    """Register the statements a function returns as migration ``version``."""

    def register(fn: Callable[[], tuple[str, ...]]) -> None:
        assert version == len(MIGRATIONS) + 1, "migrations must be numbered 1, 2, 3 …"
        MIGRATIONS.append(Migration(version, name, fn()))

    return register


# The view of migrations 1 and 3 (3 recreates it after changing loras); never edit: add a new one.
_LORA_VIEW = """CREATE VIEW lora_view AS
        SELECT l.id, l.path, l.root, l.folder, l.name, l.title, l.description, l.author, l.size, l.mtime,
               l.first_seen, l.last_seen, l.status, l.missing, l.offline, l.error_code, l.error_message,
               l.format, l.algorithm, l.dora, l.base_model, l.base_model_hint, l.rank, l.alpha, l.dtype,
               l.n_tensors, l.n_modules, l.epochs, l.steps, l.images, l.resolution, l.network_module,
               l.optimizer, l.learning_rate, l.base_model_name, l.trained_at,
               COALESCE(l.trigger_words, []::VARCHAR[]) AS trigger_words,
               COALESCE(l.training_tags, []::VARCHAR[]) AS training_tags,
               l.sha256, l.autov2, l.autov3, l.tensor_sha256, l.legacy_hash, l.preview_path,
               COALESCE(l.sidecar_kinds, []::VARCHAR[]) AS sidecar_kinds,
               COALESCE(c.favorite, FALSE) AS favorite, c.rating, c.notes,
               COALESCE(c.user_tags, []::VARCHAR[]) AS user_tags, c.trigger_groups,
               COALESCE(c.preferred_weight, l.sidecar_weight) AS preferred_weight,
               COALESCE(c.nsfw, l.sidecar_nsfw, FALSE) AS nsfw,
               COALESCE(l.search_text, '') AS search_text
        FROM loras l LEFT JOIN curation c ON c.lora_id = l.id"""


@migration(1, "loras, curation, runs, errors")
def _initial() -> tuple[str, ...]:
    return (
        "CREATE SEQUENCE lora_id_seq START 1",
        """CREATE TABLE loras (
            id BIGINT PRIMARY KEY DEFAULT nextval('lora_id_seq'),
            path VARCHAR NOT NULL UNIQUE,
            root VARCHAR NOT NULL,
            folder VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            title VARCHAR,
            description VARCHAR,
            author VARCHAR,
            size BIGINT,
            mtime TIMESTAMP,
            mtime_ns BIGINT,
            inode BIGINT,
            device BIGINT,
            sidecar_fingerprint VARCHAR,
            status VARCHAR NOT NULL DEFAULT 'ok',
            missing BOOLEAN NOT NULL DEFAULT FALSE,
            offline BOOLEAN NOT NULL DEFAULT FALSE,
            error_code VARCHAR,
            error_message VARCHAR,
            format VARCHAR,
            algorithm VARCHAR,
            dora BOOLEAN,
            base_model VARCHAR,
            base_model_hint VARCHAR,
            rank INTEGER,
            alpha DOUBLE,
            dtype VARCHAR,
            n_tensors INTEGER,
            n_modules INTEGER,
            epochs INTEGER,
            steps INTEGER,
            images INTEGER,
            resolution VARCHAR,
            network_module VARCHAR,
            optimizer VARCHAR,
            learning_rate DOUBLE,
            base_model_name VARCHAR,
            trained_at TIMESTAMP,
            trigger_words VARCHAR[],
            training_tags VARCHAR[],
            sha256 VARCHAR,
            autov2 VARCHAR,
            autov3 VARCHAR,
            tensor_sha256 VARCHAR,
            legacy_hash VARCHAR,
            hashed_at TIMESTAMP,
            preview_path VARCHAR,
            sidecar_kinds VARCHAR[],
            sidecar_nsfw BOOLEAN,
            sidecar_weight DOUBLE,
            info JSON,
            search_text VARCHAR,
            first_seen TIMESTAMP NOT NULL,
            last_seen TIMESTAMP,
            updated_at TIMESTAMP
        )""",
        """CREATE TABLE curation (
            lora_id BIGINT PRIMARY KEY,
            favorite BOOLEAN NOT NULL DEFAULT FALSE,
            rating TINYINT,
            notes VARCHAR,
            user_tags VARCHAR[],
            trigger_groups JSON,
            preferred_weight DOUBLE,
            nsfw BOOLEAN,
            sha256 VARCHAR,
            tensor_sha256 VARCHAR,
            updated_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE pending_curation (
            sha256 VARCHAR,
            tensor_sha256 VARCHAR,
            name VARCHAR,
            size BIGINT,
            data JSON NOT NULL,
            restored_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE roots (
            path VARCHAR PRIMARY KEY,
            added_at TIMESTAMP NOT NULL,
            last_scan TIMESTAMP,
            online BOOLEAN NOT NULL DEFAULT TRUE
        )""",
        "CREATE SEQUENCE run_id_seq START 1",
        """CREATE TABLE import_runs (
            id BIGINT PRIMARY KEY DEFAULT nextval('run_id_seq'),
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            status VARCHAR NOT NULL,
            scope VARCHAR[],
            options JSON,
            counts JSON,
            duration_s DOUBLE,
            error VARCHAR,
            pid INTEGER
        )""",
        """CREATE TABLE import_errors (
            run_id BIGINT NOT NULL,
            path VARCHAR NOT NULL,
            code VARCHAR NOT NULL,
            message VARCHAR
        )""",
        _LORA_VIEW,
    )


@migration(2, "generation results")
def _generation_results() -> tuple[str, ...]:
    # Written by the generation queue through catalog/_history.py. A row is inserted only after
    # its image file was renamed into place, and deleted before the file is removed, so no row
    # ever points at a missing file. No foreign keys: LoRA rows may come and go with rescans.
    return (
        "CREATE SEQUENCE result_id_seq START 1",
        """CREATE TABLE results (
            id BIGINT PRIMARY KEY DEFAULT nextval('result_id_seq'),
            job_id VARCHAR NOT NULL,
            job_key VARCHAR NOT NULL,
            image_index INTEGER NOT NULL,
            path VARCHAR NOT NULL UNIQUE,
            format VARCHAR NOT NULL,
            width INTEGER,
            height INTEGER,
            bytes BIGINT NOT NULL,
            content_sha256 VARCHAR NOT NULL,
            seed BIGINT,
            prompt VARCHAR,
            negative_prompt VARCHAR,
            request JSON NOT NULL,
            infotext VARCHAR,
            params JSON,
            backend VARCHAR,
            day DATE NOT NULL,
            created_at TIMESTAMP NOT NULL,
            queue_wait_s DOUBLE,
            generation_s DOUBLE,
            total_s DOUBLE,
            rating TINYINT,
            favorite BOOLEAN NOT NULL DEFAULT FALSE,
            UNIQUE (job_id, image_index)
        )""",
        "CREATE INDEX results_job_key ON results (job_key)",
        "CREATE INDEX results_day ON results (day)",
        """CREATE TABLE result_loras (
            result_id BIGINT NOT NULL,
            position INTEGER NOT NULL,
            name VARCHAR NOT NULL,
            weight DOUBLE,
            hash VARCHAR,
            lora_id BIGINT,
            matched_by VARCHAR,
            PRIMARY KEY (result_id, position)
        )""",
        "CREATE INDEX result_loras_lora ON result_loras (lora_id)",
        "CREATE INDEX result_loras_name ON result_loras (name)",
        """CREATE TABLE result_deliveries (
            result_id BIGINT NOT NULL,
            sink VARCHAR NOT NULL,
            ok BOOLEAN NOT NULL,
            attempts INTEGER NOT NULL,
            detail VARCHAR,
            delivered_at TIMESTAMP NOT NULL
        )""",
        "CREATE INDEX result_deliveries_result ON result_deliveries (result_id)",
    )


@migration(3, "faster search: lora_core view, uncompressed search_text, distinct lists, lower-case hashes")
def _lean_search() -> tuple[str, ...]:
    # Facet counts count a LoRA once per value with a plain unnest when lists hold distinct values
    # (list_distinct over 100,000 rows cost more than the rest of a search). Writers keep them
    # distinct; this brings older rows in line (keeping first-seen order). Hashes likewise: stored
    # lower-case, matched without lower(). User tags were always stored lower-case by Catalog.update.
    dedupe = [
        f"UPDATE {table} SET {column} = list_filter({column}, lambda x, i: list_position({column}, x) = i) "  # noqa: S608
        f"WHERE len({column}) > len(list_distinct({column}))"  # first-seen order kept
        for table, column in (("loras", "trigger_words"), ("loras", "training_tags"), ("loras", "sidecar_kinds"),
                              ("curation", "user_tags"))
    ]  # fmt: skip
    hashes = ("sha256", "autov2", "autov3", "tensor_sha256", "legacy_hash")
    return (
        # a backup restored before this version could bring user tags in another case
        "UPDATE curation SET user_tags = list_transform(user_tags, lambda x: lower(trim(x))) "
        "WHERE user_tags <> list_transform(user_tags, lambda x: lower(trim(x)))",
        *dedupe,
        f"UPDATE loras SET {', '.join(f'{h} = lower({h})' for h in hashes)} "  # noqa: S608
        f"WHERE {' OR '.join(f'{h} <> lower({h})' for h in hashes)}",
        # search_text is scanned by every free-text search: stored uncompressed (half the scan time of
        # DuckDB's FSST strings) and with the folder instead of the full path (see _rows.search_text).
        "DROP VIEW lora_view",
        "ALTER TABLE loras ADD COLUMN search_text_v3 VARCHAR USING COMPRESSION uncompressed",
        """UPDATE loras SET search_text_v3 = lower(concat_ws(chr(31), nullif(name, ''), nullif(title, ''),
            nullif(left(description, 8192), ''), nullif(folder, ''),
            nullif(array_to_string(trigger_words, chr(31)), ''),
            nullif(array_to_string(training_tags, chr(31)), '')))""",
        "ALTER TABLE loras DROP COLUMN search_text",
        "ALTER TABLE loras RENAME COLUMN search_text_v3 TO search_text",
        _LORA_VIEW,
        # lora_view without the curation join: searches and facets that touch no curation column
        # read this (the join is a third of a simple search on 100,000 rows).
        """CREATE VIEW lora_core AS
        SELECT l.id, l.path, l.root, l.folder, l.name, l.title, l.description, l.author, l.size, l.mtime,
               l.first_seen, l.last_seen, l.status, l.missing, l.offline, l.error_code, l.error_message,
               l.format, l.algorithm, l.dora, l.base_model, l.base_model_hint, l.rank, l.alpha, l.dtype,
               l.n_tensors, l.n_modules, l.epochs, l.steps, l.images, l.resolution, l.network_module,
               l.optimizer, l.learning_rate, l.base_model_name, l.trained_at,
               COALESCE(l.trigger_words, []::VARCHAR[]) AS trigger_words,
               COALESCE(l.training_tags, []::VARCHAR[]) AS training_tags,
               l.sha256, l.autov2, l.autov3, l.tensor_sha256, l.legacy_hash, l.preview_path,
               COALESCE(l.sidecar_kinds, []::VARCHAR[]) AS sidecar_kinds,
               COALESCE(l.search_text, '') AS search_text
        FROM loras l""",
    )


SCHEMA_VERSION = len(MIGRATIONS)


def current_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in a catalog (0 for an empty file)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _lorabench_migrations "
        "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    row = conn.execute("SELECT max(version) FROM _lorabench_migrations").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: duckdb.DuckDBPyConnection, *, target: int | None = None) -> int:
    """Apply pending migrations, each atomically with its record; returns the version."""
    version = current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"This catalog has schema version {version}; this lorabench knows up to {SCHEMA_VERSION}"
        )
    for step in MIGRATIONS[version : SCHEMA_VERSION if target is None else target]:
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in step.statements:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO _lorabench_migrations VALUES (?, ?, now())", [step.version, step.name]
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = step.version
    return version
