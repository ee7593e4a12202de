#!/usr/bin/env python
"""Copy an Open WebUI SQLite database (webui.db) into an empty PostgreSQL one.

Run it on the host with Open WebUI's own venv python (it has SQLAlchemy and psycopg 3):

    DATABASE_URL=... /opt/llm/open-webui/current/bin/python llm-webui-sqlite-to-postgresql.py \\
        --sqlite /var/lib/llm/open-webui/webui.db
    /opt/llm/open-webui/current/bin/python llm-webui-sqlite-to-postgresql.py \\
        --sqlite /var/lib/llm/open-webui/webui.db --url-file /etc/llm/open-webui/migrate.env

The target URL never comes from the command line: an environment variable (--url-env, default
DATABASE_URL) or a file that only its owner may read (--url-file: the bare URL, or an environment
file with a DATABASE_URL= line as systemd reads it). postgresql:// and postgres:// are used as
postgresql+psycopg://, like the open_webui role writes them.

The target schema must have been built by Open WebUI itself (its Alembic migrations, same version:
the revisions must match) and hold no user data: with rows in `user` or `chat` the copy is refused,
unless every source row is already there (by primary key: a re-run after a migration, content may
have changed since), which is reported as "already migrated" and changes nothing. Rows Open WebUI
writes into other tables on its first start (e.g. `config`) are replaced by the source's.

Every table present on both sides is copied (not Alembic's bookkeeping), in foreign-key order,
in ONE transaction, with values converted to the target's column types (SQLite keeps JSON as text,
booleans as 0/1), NUL characters removed (PostgreSQL refuses them; Open WebUI strips them too).
Rows whose parent is missing (SQLite does not enforce foreign keys) are refused, or dropped with
--drop-orphans; references declared ON DELETE SET NULL are set to NULL, as PostgreSQL would have.
Then sequences are reset and each table's row count verified before the commit. webui.db is only
read; the copy refuses a write-ahead log with pending changes (stop Open WebUI first: its last
connection folds the log in), --check reads through it beside the running service.

stdout: one JSON summary (per-table counts). Exit status: 0 done, already migrated or --check
passed; 2 refused (nothing written); 1 failed or a count did not match (rolled back).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sqlite3
import stat
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple
from urllib.parse import quote

try:
    from sqlalchemy import MetaData, create_engine, text
    from sqlalchemy import exc as sa_exc
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool
    from sqlalchemy.sql import sqltypes
except ImportError as _missing:  # pragma: no cover - depends on the interpreter
    sys.stderr.write(
        "this script needs SQLAlchemy and psycopg 3: run it with Open WebUI's venv python "
        "(e.g. /opt/llm/open-webui/current/bin/python) (%s)\n" % _missing
    )
    sys.exit(1)

BOOKKEEPING = frozenset({"alembic_version", "migratehistory"})
GUARD_TABLES = ("user", "chat")
BATCH = 500
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class Refused(Exception):
    """A precondition does not hold: nothing was written (exit 2)."""


class Failed(Exception):
    """The copy went wrong or did not verify: rolled back (exit 1)."""


# ---------------------------------------------------------------- the target URL


def _unquote_env_value(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    return value


def url_from_text(content: str) -> str:
    """The URL in a file: a DATABASE_URL= line of an environment file, else the first plain line."""
    lines = [line.strip() for line in content.splitlines()]
    for line in lines:
        match = re.match(r"^(?:export\s+)?DATABASE_URL\s*=(.*)$", line)
        if match:
            return _unquote_env_value(match.group(1))
    for line in lines:
        if line and not line.startswith("#"):
            return line
    return ""


def read_url(url_file: Optional[str], url_env: str) -> str:
    if url_file:
        path = Path(url_file)
        try:
            info = path.stat()
        except OSError as err:
            raise Refused("--url-file %s cannot be read (%s)" % (url_file, err.strerror)) from None
        if not stat.S_ISREG(info.st_mode):
            raise Refused("--url-file %s is not a regular file" % url_file)
        if info.st_mode & 0o077:
            raise Refused(
                "--url-file %s is readable by others (mode %s): it holds a password; chmod 0600 it"
                % (url_file, oct(info.st_mode & 0o777))
            )
        if info.st_uid not in (0, os.geteuid()):
            raise Refused(
                "--url-file %s belongs to uid %d, neither root nor this user"
                % (url_file, info.st_uid)
            )
        url = url_from_text(path.read_text(encoding="utf-8"))
        if not url:
            raise Refused(
                "--url-file %s holds no URL (a DATABASE_URL= line or the bare URL)" % url_file
            )
        return url
    if not ENV_NAME.match(url_env):
        raise Refused("--url-env takes the NAME of an environment variable, not a URL")
    url = os.environ.get(url_env, "").strip()
    if not url:
        raise Refused(
            "the environment variable %s is empty: set it to the PostgreSQL URL, or use --url-file"
            % url_env
        )
    return url


def normalize_url(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    if scheme == "postgresql+psycopg":
        return url
    raise Refused(
        "the target URL must be postgresql://, postgres:// or postgresql+psycopg:// (it is %s://)"
        % (scheme or "<no scheme>")
    )


class Scrubber:
    """Removes the URL and its password from any message before it is printed."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 3}, key=len, reverse=True)

    def __call__(self, message: str) -> str:
        for secret in self.secrets:
            message = message.replace(secret, "***")
        return message


# ---------------------------------------------------------------- value conversion


@dataclass
class Counters:
    nul_removed: int = 0
    invalid_utf8: int = 0
    active: bool = False

    def nul(self) -> None:
        if self.active:
            self.nul_removed += 1


class Where:
    """Names a value's table, column and row in error messages."""

    def __init__(self, table: str, column: str) -> None:
        self.table, self.column, self.row = table, column, None

    def __str__(self) -> str:
        return "table %s, column %s, %s" % (self.table, self.column, self.row)


def _strip_nul_json(obj: Any) -> Any:
    if isinstance(obj, str):
        return obj.replace("\x00", "")
    if isinstance(obj, list):
        return [_strip_nul_json(item) for item in obj]
    if isinstance(obj, dict):
        return {_strip_nul_json(k): _strip_nul_json(v) for k, v in obj.items()}
    return obj


def make_converter(column: Any, where: Where, counters: Counters) -> Callable[[Any], Any]:
    """Source value (as SQLite stored it) -> the value for the target column's type."""
    kind = column.type

    def fail(value: Any, what: str) -> Failed:
        shown = repr(value)
        return Failed(
            "%s: %s %s cannot become %s"
            % (where, type(value).__name__, shown if len(shown) <= 60 else shown[:57] + "...", what)
        )

    def to_text(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif not isinstance(value, str):
            value = str(value)
        if "\x00" in value:
            counters.nul()
            value = value.replace("\x00", "")
        return value

    def to_json_text(value: Any) -> Any:
        if value is None:
            return None  # SQL NULL stays NULL; the text 'null' becomes JSON null
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return json.dumps(value)  # SQLite's NUMERIC affinity turned '12' into 12
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise fail(value, "JSON")
        nul = "\x00" in value or JSON_NUL.search(value) is not None
        try:
            parsed = json.loads(value.replace("\x00", "") if nul else value)
        except ValueError:
            raise fail(value, "JSON (not valid JSON text)") from None
        if nul:
            counters.nul()
            return json.dumps(_strip_nul_json(parsed), ensure_ascii=False)
        return value  # verbatim: PostgreSQL's json keeps the text as it was

    def to_bool(value: Any) -> Any:
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in (
            "0",
            "1",
            "true",
            "false",
            "t",
            "f",
        ):
            return value.strip().lower() in ("1", "true", "t")
        raise fail(value, "boolean")

    def to_int(value: Any) -> Any:
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            return value
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
            return int(value)
        raise fail(value, "integer")

    def to_number(value: Any) -> Any:
        if value is None or isinstance(value, (int, float)):
            return value
        try:
            return float(value)
        except (TypeError, ValueError):
            raise fail(value, "number") from None

    def to_datetime(value: Any) -> Any:
        if value is None or isinstance(value, dt.datetime):
            return value
        if isinstance(value, str):
            try:
                return dt.datetime.fromisoformat(value.strip())
            except ValueError:
                pass
        raise fail(value, "timestamp")

    def to_date(value: Any) -> Any:
        if value is None or isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value.strip()[:10])
            except ValueError:
                pass
        raise fail(value, "date")

    def to_time(value: Any) -> Any:
        if value is None or isinstance(value, dt.time):
            return value
        if isinstance(value, str):
            try:
                return dt.time.fromisoformat(value.strip())
            except ValueError:
                pass
        raise fail(value, "time")

    def to_bytes(value: Any) -> Any:
        if value is None or isinstance(value, bytes):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        raise fail(value, "bytes")

    if isinstance(kind, sqltypes.JSON):
        return to_json_text
    if isinstance(kind, sqltypes.Boolean):
        return to_bool
    if isinstance(kind, sqltypes.Integer):
        return to_int
    if isinstance(kind, sqltypes.Numeric):
        return to_number
    if isinstance(kind, sqltypes.DateTime):
        return to_datetime
    if isinstance(kind, sqltypes.Date):
        return to_date
    if isinstance(kind, sqltypes.Time):
        return to_time
    if isinstance(kind, sqltypes.LargeBinary):
        return to_bytes
    if isinstance(kind, sqltypes.String):
        return to_text
    return lambda value: value


# ---------------------------------------------------------------- the plan


@dataclass
class ForeignKey:
    columns: Tuple[str, ...]
    parent: str
    parent_columns: Tuple[str, ...]
    set_null: bool


@dataclass
class TablePlan:
    name: str
    columns: List[str]
    pk: List[str]
    foreign_keys: List[ForeignKey]
    converters: Dict[str, Callable[[Any], Any]]
    json_casts: Dict[str, str]
    identity_always: bool
    source_rows: int = 0
    dropped: Set[int] = field(default_factory=set)
    nulled: Dict[int, Set[str]] = field(default_factory=dict)
    kept_pks: Set[tuple] = field(default_factory=set)
    kept_keys: Dict[Tuple[str, ...], Set[tuple]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.source_rows - len(self.dropped)


class Migration:
    def __init__(self, sqlite_path: Path, url: str, drop_orphans: bool, scrub: Scrubber) -> None:
        self.sqlite_path = sqlite_path
        self.drop_orphans = drop_orphans
        self.live = False
        self.scrub = scrub
        self.counters = Counters()
        self.source = create_engine("sqlite://", creator=self._connect_sqlite, poolclass=NullPool)
        self.target = create_engine(url, poolclass=NullPool, hide_parameters=True)
        self.summary: Dict[str, Any] = {"source": str(sqlite_path)}

    # -- source
    def _connect_sqlite(self) -> sqlite3.Connection:
        # immutable: no lock, no -shm file (one made by root would lock Open WebUI's user out of
        # its WAL database); safe for the copy: main() refused a pending write-ahead log. A --check
        # beside a running Open WebUI reads through its log and its existing -shm instead.
        shm = Path(str(self.sqlite_path) + "-shm")
        mode = "mode=ro" if self.live and shm.is_file() else "mode=ro&immutable=1"
        conn = sqlite3.connect("file:%s?%s" % (quote(str(self.sqlite_path)), mode), uri=True)

        def decode(raw: bytes) -> str:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                self.counters.invalid_utf8 += int(self.counters.active)
                return raw.decode("utf-8", "replace")

        conn.text_factory = decode
        return conn

    def _src_rows(
        self, src: Any, table: str, columns: Sequence[str], batch: bool = True
    ) -> Iterable[tuple]:
        q = self.source.dialect.identifier_preparer.quote
        sql = "SELECT %s FROM %s ORDER BY rowid" % (
            ", ".join(["rowid"] + [q(c) for c in columns]),
            q(table),
        )
        result = src.exec_driver_sql(sql)
        while True:
            rows = result.fetchmany(BATCH) if batch else result.fetchall()
            if not rows:
                return
            yield from rows
            if not batch:
                return

    # -- schema
    @staticmethod
    def _revision(conn: Any, names: Set[str]) -> Optional[str]:
        if "alembic_version" not in names:
            return None
        rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
        return ",".join(sorted(r[0] for r in rows)) or None

    def _plans(self, src_md: MetaData, dst_md: MetaData) -> List[TablePlan]:
        plans = []
        for table in dst_md.sorted_tables:
            if table.name in BOOKKEEPING or table.name not in src_md.tables:
                continue
            source_columns = set(src_md.tables[table.name].columns.keys())
            columns = [c.name for c in table.columns if c.name in source_columns]
            converters, casts = {}, {}
            for column in table.columns:
                if column.name not in source_columns:
                    continue
                converters[column.name] = make_converter(
                    column, Where(table.name, column.name), self.counters
                )
                if isinstance(column.type, sqltypes.JSON):
                    casts[column.name] = column.type.compile(dialect=self.target.dialect)
            fks = []
            for constraint in table.foreign_key_constraints:
                referred = constraint.referred_table
                fks.append(
                    ForeignKey(
                        columns=tuple(constraint.column_keys),
                        parent=referred.name,
                        parent_columns=tuple(el.column.name for el in constraint.elements),
                        set_null=(constraint.ondelete or "").upper() == "SET NULL",
                    )
                )
            identity_always = any(
                getattr(c, "identity", None) is not None and c.identity.always
                for c in table.columns
            )
            plans.append(
                TablePlan(
                    name=table.name,
                    columns=columns,
                    pk=[c.name for c in table.primary_key.columns],
                    foreign_keys=fks,
                    converters=converters,
                    json_casts=casts,
                    identity_always=identity_always,
                )
            )
        return plans

    # -- pass 1: which rows go, which references become NULL (ids only)
    def _analyse(self, src: Any, plans: List[TablePlan]) -> Dict[str, Dict[str, int]]:
        by_name = {p.name: p for p in plans}
        referenced: Dict[str, Set[Tuple[str, ...]]] = {}
        for plan in plans:
            for fk in plan.foreign_keys:
                referenced.setdefault(fk.parent, set()).add(fk.parent_columns)
        orphans: Dict[str, Dict[str, int]] = {}
        for plan in plans:
            fks = [
                fk
                for fk in plan.foreign_keys
                if fk.parent in by_name
                and all(c in plan.converters for c in fk.columns)
                and all(c in by_name[fk.parent].converters for c in fk.parent_columns)
            ]
            wanted = list(
                dict.fromkeys(
                    plan.pk
                    + [c for fk in fks for c in fk.columns]
                    + [c for cols in referenced.get(plan.name, ()) for c in cols]
                )
            )
            wanted = [c for c in wanted if c in plan.converters]
            rows: Dict[int, Dict[str, Any]] = {}
            for raw in self._src_rows(src, plan.name, wanted):
                rows[raw[0]] = {c: plan.converters[c](v) for c, v in zip(wanted, raw[1:])}
            plan.source_rows = len(rows)
            while (
                True
            ):  # a row whose parent went may make its own children orphans (self references)
                changed = False
                for fk in fks:
                    if fk.parent == plan.name:
                        parents = {
                            tuple(r[c] for c in fk.parent_columns)
                            for rid, r in rows.items()
                            if rid not in plan.dropped
                        }
                    else:
                        parents = by_name[fk.parent].kept_keys.get(fk.parent_columns, set())
                    for rid, r in rows.items():
                        if rid in plan.dropped:
                            continue
                        value = tuple(r[c] for c in fk.columns)
                        if any(v is None for v in value) or value in parents:
                            continue
                        label = "%s -> %s(%s)" % (
                            ",".join(fk.columns),
                            fk.parent,
                            ",".join(fk.parent_columns),
                        )
                        counts = orphans.setdefault(plan.name, {})
                        counts[label] = counts.get(label, 0) + 1
                        if fk.set_null:
                            for c in fk.columns:
                                r[c] = None
                            plan.nulled.setdefault(rid, set()).update(fk.columns)
                        else:
                            plan.dropped.add(rid)
                        changed = True
                if not changed:
                    break
            kept = [r for rid, r in rows.items() if rid not in plan.dropped]
            plan.kept_pks = {tuple(r[c] for c in plan.pk) for r in kept} if plan.pk else set()
            for cols in referenced.get(plan.name, ()):
                if all(c in plan.converters for c in cols):
                    plan.kept_keys[cols] = {tuple(r[c] for c in cols) for r in kept}
        return orphans

    # -- pass 2: the copy
    def _insert_sql(self, plan: TablePlan) -> str:
        q = self.target.dialect.identifier_preparer.quote
        values = []
        for i, column in enumerate(plan.columns):
            cast = plan.json_casts.get(column)
            values.append("CAST(:p%d AS %s)" % (i, cast) if cast else ":p%d" % i)
        return "INSERT INTO %s (%s)%s VALUES (%s)" % (
            q(plan.name),
            ", ".join(q(c) for c in plan.columns),
            " OVERRIDING SYSTEM VALUE" if plan.identity_always else "",
            ", ".join(values),
        )

    def _self_ordered(self, plan: TablePlan, rows: List[tuple]) -> List[tuple]:
        """Parents before children for a table that references itself."""
        selfs = [fk for fk in plan.foreign_keys if fk.parent == plan.name]
        if not selfs:
            return rows
        index = {c: i + 1 for i, c in enumerate(plan.columns)}

        def key(row: tuple, cols: Sequence[str]) -> tuple:
            return tuple(plan.converters[c](row[index[c]]) for c in cols)

        ordered, emitted, pending = [], {fk.parent_columns: set() for fk in selfs}, list(rows)
        present = {fk.parent_columns: {key(r, fk.parent_columns) for r in rows} for fk in selfs}
        while pending:
            rest = []
            for row in pending:
                ready = True
                for fk in selfs:
                    value = key(row, fk.columns)
                    nulled = plan.nulled.get(row[0], set())
                    if any(v is None for v in value) or set(fk.columns) & nulled:
                        continue
                    if (
                        value in present[fk.parent_columns]
                        and value not in emitted[fk.parent_columns]
                    ):
                        ready = False
                if ready:
                    ordered.append(row)
                    for fk in selfs:
                        emitted[fk.parent_columns].add(key(row, fk.parent_columns))
                else:
                    rest.append(row)
            if len(rest) == len(pending):
                raise Failed(
                    "table %s: its rows reference each other in a cycle (%d rows)"
                    % (plan.name, len(rest))
                )
            pending = rest
        return ordered

    def _copy(self, src: Any, dst: Any, plan: TablePlan) -> int:
        statement = text(self._insert_sql(plan))
        selfref = any(fk.parent == plan.name for fk in plan.foreign_keys)
        rows = self._src_rows(src, plan.name, plan.columns, batch=not selfref)
        if selfref:
            rows = iter(self._self_ordered(plan, list(rows)))
        copied, batch = 0, []
        for raw in rows:
            rid = raw[0]
            if rid in plan.dropped:
                continue
            nulled = plan.nulled.get(rid, ())
            params = {}
            for i, column in enumerate(plan.columns):
                convert = plan.converters[column]
                params["p%d" % i] = None if column in nulled else convert(raw[i + 1])
            batch.append(params)
            if len(batch) >= BATCH:
                dst.execute(statement, batch)
                copied += len(batch)
                batch = []
        if batch:
            dst.execute(statement, batch)
            copied += len(batch)
        return copied

    def _reset_sequences(self, dst: Any, dst_md: MetaData, plans: List[TablePlan]) -> List[str]:
        prep = self.target.dialect.identifier_preparer
        done = []
        for plan in plans:
            table = dst_md.tables[plan.name]
            for column in table.columns:
                if not isinstance(column.type, sqltypes.Integer):
                    continue
                seq = dst.execute(
                    text("SELECT pg_get_serial_sequence(:t, :c)"),
                    {"t": prep.format_table(table), "c": column.name},
                ).scalar()
                if not seq:
                    continue
                dst.execute(
                    text(
                        "SELECT setval(CAST(:s AS regclass), COALESCE(MAX(%s), 1), "
                        "MAX(%s) IS NOT NULL) "
                        "FROM %s"
                        % (
                            prep.quote(column.name),
                            prep.quote(column.name),
                            prep.format_table(table),
                        )
                    ),
                    {"s": seq},
                )
                done.append(seq)
        return done

    def _count(self, conn: Any, table: str) -> int:
        q = self.target.dialect.identifier_preparer.quote
        return int(conn.execute(text("SELECT count(*) FROM %s" % q(table))).scalar())

    def _target_pks(self, conn: Any, plan: TablePlan) -> Set[tuple]:
        q = self.target.dialect.identifier_preparer.quote
        rows = conn.execute(
            text("SELECT %s FROM %s" % (", ".join(q(c) for c in plan.pk), q(plan.name)))
        )
        return {tuple(r) for r in rows}

    # -- the whole run
    def run(self, check: bool) -> Dict[str, Any]:
        with warnings.catch_warnings():
            # unsupported index reflection, dependency cycles: nothing the copy relies on
            warnings.simplefilter("ignore", sa_exc.SAWarning)
            return self._run(check)

    def _schemas(self, src: Any, dst: Any) -> Tuple[MetaData, MetaData, Optional[str]]:
        src_md, dst_md = MetaData(), MetaData()
        src_md.reflect(src)
        source_revision = self._revision(src, set(src_md.tables))
        if source_revision is None:
            raise Refused(
                "%s has no alembic_version table: not an Open WebUI database" % self.sqlite_path
            )
        dst_md.reflect(dst)
        target_revision = self._revision(dst, set(dst_md.tables))
        self.summary["revision"] = source_revision
        if target_revision is not None and target_revision != source_revision:
            raise Refused(
                "the target schema is at revision %s, %s at %s: both must come from the "
                "same Open WebUI version (start the installed Open WebUI once against the "
                "target)" % (target_revision, self.sqlite_path, source_revision)
            )
        return src_md, dst_md, target_revision

    def _refuse_lost_source_data(self, src: Any, src_md: MetaData, plans: List[TablePlan]) -> None:
        """Source tables or columns the target lacks may only be empty."""
        q = self.source.dialect.identifier_preparer.quote
        names = {p.name for p in plans}
        skipped = []
        for name in sorted(set(src_md.tables) - names - BOOKKEEPING):
            rows = src.exec_driver_sql("SELECT count(*) FROM %s" % q(name)).scalar()
            if rows:
                raise Refused(
                    "table %s holds %d row(s) in %s but does not exist in the target "
                    "schema" % (name, rows, self.sqlite_path)
                )
            skipped.append(name)
        for plan in plans:
            for column in sorted(set(src_md.tables[plan.name].columns.keys()) - set(plan.columns)):
                used = src.exec_driver_sql(
                    "SELECT count(*) FROM %s WHERE %s IS NOT NULL" % (q(plan.name), q(column))
                ).scalar()
                if used:
                    raise Refused(
                        "table %s, column %s: %d value(s) in %s, but the target has no "
                        "such column" % (plan.name, column, used, self.sqlite_path)
                    )
        self.summary["skipped_source_tables"] = skipped

    def _refuse_foreign_data(
        self, dst: Any, plans: List[TablePlan], before: Dict[str, int]
    ) -> None:
        """The target has users or chats: all right only if every source row is there already."""
        findings = []
        for plan in plans:
            if plan.pk:
                present = self._target_pks(dst, plan)
                foreign = len(present - plan.kept_pks)
                missing = len(plan.kept_pks - present)
            else:
                foreign, missing = 0, max(plan.kept - before[plan.name], 0)
            if missing:
                findings.append((plan.name not in GUARD_TABLES, -foreign, plan, foreign, missing))
        if not findings:
            return
        worst = min(findings, key=lambda f: f[:2] + (plans.index(f[2]),))
        plan, foreign, missing = worst[2], worst[3], worst[4]
        raise Refused(
            "the target already holds Open WebUI data that did not come from %s: table %s has %d "
            "row(s), %d of them not from it, and lacks %d of its %d (by primary key). Migrate into "
            "an empty database (drop and create it again; let Open WebUI build the schema without "
            "creating an admin)"
            % (self.sqlite_path, plan.name, before[plan.name], foreign, missing, plan.kept)
        )

    def _run(self, check: bool) -> Dict[str, Any]:
        summary = self.summary
        q = self.target.dialect.identifier_preparer.quote
        with self.source.connect() as src, self.target.connect() as dst:
            src_md, dst_md, target_revision = self._schemas(src, dst)
            if target_revision is None:
                if not check:
                    raise Refused(
                        "the target database has no Open WebUI schema (no alembic_version): "
                        "start the same Open WebUI once against it so that its migrations "
                        "build the schema"
                    )
                summary.update(status="no schema", tables={})
                return summary
            plans = self._plans(src_md, dst_md)
            self._refuse_lost_source_data(src, src_md, plans)
            if not check:  # nobody else writes until the commit (Open WebUI is stopped anyway)
                dst.execute(
                    text("LOCK TABLE %s IN EXCLUSIVE MODE" % ", ".join(q(p.name) for p in plans))
                )
            orphans = self._analyse(src, plans)
            if orphans:
                summary["orphans"] = orphans
            before = {p.name: self._count(dst, p.name) for p in plans}
            counts = {p.name: {"source": p.kept, "target": before[p.name]} for p in plans}

            if any(before.get(t, 0) for t in GUARD_TABLES):
                self._refuse_foreign_data(dst, plans, before)
                summary.update(status="already migrated", tables=counts)
                return summary

            blocking = {p.name: orphans[p.name] for p in plans if p.dropped}
            if blocking and not self.drop_orphans:
                raise Refused(
                    "table %s has row(s) whose parent row is missing in %s (SQLite does not "
                    "enforce foreign keys): %s. PostgreSQL would refuse them; run again with "
                    "--drop-orphans "
                    "to leave them out (Open WebUI cannot reach them)"
                    % (next(iter(blocking)), self.sqlite_path, json.dumps(blocking, sort_keys=True))
                )
            if check:
                summary.update(status="ready", tables=counts)
                return summary

            replaced = {name: n for name, n in before.items() if n}
            for plan in reversed(plans):
                if before[plan.name]:
                    dst.execute(text("DELETE FROM %s" % q(plan.name)))
            tables = {}
            self.counters.active = True  # count what is written, not what the analysis read
            for plan in plans:
                tables[plan.name] = {"source": plan.kept, "copied": self._copy(src, dst, plan)}
            self.counters.active = False
            summary["sequences_reset"] = self._reset_sequences(dst, dst_md, plans)
            for plan in plans:
                tables[plan.name]["target"] = self._count(dst, plan.name)
            summary["tables"] = tables
            if replaced:
                summary["replaced_target_rows"] = replaced
            if any(p.dropped for p in plans):
                summary["dropped_orphans"] = {p.name: len(p.dropped) for p in plans if p.dropped}
            for name, n in tables.items():
                if not n["source"] == n["copied"] == n["target"]:
                    raise Failed(
                        "table %s: %d row(s) to copy from %s, %d copied, %d in the target: "
                        "rolled back"
                        % (name, n["source"], self.sqlite_path, n["copied"], n["target"])
                    )
            dst.commit()
        summary["status"] = "migrated"
        return summary


def _finish(summary: Dict[str, Any], counters: Counters) -> Dict[str, Any]:
    if counters.nul_removed:
        summary["nul_characters_removed"] = counters.nul_removed
    if counters.invalid_utf8:
        summary["invalid_utf8_replaced"] = counters.invalid_utf8
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Copy Open WebUI's SQLite database into an empty PostgreSQL database built "
        "by the same Open WebUI version. The target URL comes from the environment or a file, "
        "never from the command line."
    )
    parser.add_argument("--sqlite", required=True, help="path of webui.db (opened read-only)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--url-env",
        default="DATABASE_URL",
        metavar="NAME",
        help="environment variable holding the target URL (default DATABASE_URL)",
    )
    source.add_argument(
        "--url-file",
        metavar="PATH",
        help="file only its owner can read: the URL, or an environment file with DATABASE_URL=",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="read both sides and report what would happen; write nothing",
    )
    parser.add_argument(
        "--drop-orphans",
        action="store_true",
        help="leave out rows whose parent row is missing instead of refusing",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    scrub = Scrubber()
    try:
        sqlite_path = Path(args.sqlite)
        if not sqlite_path.is_file():
            raise Refused("%s does not exist (--sqlite)" % sqlite_path)
        wal = Path(str(sqlite_path) + "-wal")
        pending = wal.is_file() and wal.stat().st_size > 0
        if pending and not args.check:
            raise Refused(
                "%s holds changes not yet in %s: stop Open WebUI so that it folds them in, or "
                "checkpoint as its user (PRAGMA wal_checkpoint(TRUNCATE))" % (wal, sqlite_path)
            )
        raw_url = read_url(args.url_file, args.url_env)
        url = normalize_url(raw_url)
        try:
            password = make_url(url).password or ""
        except sa_exc.ArgumentError:
            raise Refused("the target URL cannot be parsed") from None
        scrub = Scrubber(raw_url, url, password, quote(password, safe=""))
        migration = Migration(sqlite_path, url, args.drop_orphans, scrub)
        migration.live = pending
        summary = _finish(migration.run(args.check), migration.counters)
    except Refused as err:
        sys.stderr.write("refused: %s\n" % scrub(str(err)))
        return 2
    except Failed as err:
        sys.stderr.write("failed: %s\n" % scrub(str(err)))
        return 1
    except (sa_exc.SQLAlchemyError, sqlite3.Error, OSError) as err:
        sys.stderr.write("failed: %s: %s\n" % (type(err).__name__, scrub(str(err)).strip()))
        return 1
    sys.stdout.write(json.dumps(summary, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
