"""roles/open_webui/files/llm-webui-sqlite-to-postgresql.py against a real, throwaway PostgreSQL.

Both schemas are Open WebUI 0.12.4's own (its Alembic migrations run once against SQLite and
PostgreSQL 15, recorded in fixtures/open-webui/schema-0.12.4.*.sql). Each test fills a webui.db
with representative rows, builds a fresh target database from the recorded schema and runs the
script as the playbook does (a subprocess, the URL in the environment or a 0600 file), then reads
PostgreSQL back with psql.

Needs: PostgreSQL's initdb/pg_ctl/psql (a cluster is started for this module, as an unprivileged
user when the tests run as root) and a Python with SQLAlchemy and psycopg 3 (the versions of
Open WebUI's venv): this interpreter, or the one named by $LLM_BUNDLE_MIGRATE_PYTHON.
"""

import glob
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "open_webui" / "files" / "llm-webui-sqlite-to-postgresql.py"
PLAYBOOK = REPO / "playbooks" / "migrate-sqlite-to-postgresql.yml"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "open-webui"
SQLITE_SCHEMA = FIXTURES / "schema-0.12.4.sqlite.sql"
PG_SCHEMA = FIXTURES / "schema-0.12.4.postgresql.sql"
PASSWORD = "Pg-S3cret-pw-4-tests"
NEEDS = "SQLAlchemy==2.0.50 and psycopg[binary]==3.3.4 (Open WebUI 0.12.4's versions)"


def _pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    return candidates[-1] if candidates else None


def _migrate_python():
    for python in (os.environ.get("LLM_BUNDLE_MIGRATE_PYTHON"), sys.executable):
        if python and subprocess.run([python, "-c", "import sqlalchemy, psycopg"],
                                     capture_output=True).returncode == 0:
            return python
    return None


INITDB, PG_CTL, PSQL = _pg_bin("initdb"), _pg_bin("pg_ctl"), _pg_bin("psql")
PYTHON = _migrate_python()

NO_PYTHON = ("no Python with SQLAlchemy and psycopg 3: install %s, or point $LLM_BUNDLE_MIGRATE_PYTHON "
             "at a Python that has them" % NEEDS)
needs_python = pytest.mark.skipif(PYTHON is None, reason=NO_PYTHON)


# ---------------------------------------------------------------- a throwaway cluster

class Cluster:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="llm-pg-"))
        self.root.chmod(0o755)
        self.as_user = []
        if os.geteuid() == 0:  # initdb refuses root
            shutil.chown(self.root, "nobody")
            self.as_user = ["runuser", "-u", "nobody", "--"]
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(pwfile, "nobody")
        data = self.root / "data"
        subprocess.run(self.as_user + [INITDB, "-D", str(data), "-U", "postgres", "-E", "UTF8",
                                       "--auth=scram-sha-256", "--pwfile", str(pwfile)],
                       check=True, capture_output=True)
        subprocess.run(self.as_user + [PG_CTL, "-D", str(data), "-l", str(self.root / "log"), "-w", "-o",
                                       "-p %d -k %s -c listen_addresses=127.0.0.1" % (self.port, self.root),
                                       "start"], check=True, capture_output=True)
        self.data = data
        self.count = 0

    def stop(self):
        subprocess.run(self.as_user + [PG_CTL, "-D", str(self.data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database, password=PASSWORD, scheme="postgresql"):
        return "%s://postgres:%s@127.0.0.1:%d/%s" % (scheme, password, self.port, database)

    def psql(self, database, sql, *extra):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        out = subprocess.run([PSQL, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-X", "-q", "-At",
                              "-v", "ON_ERROR_STOP=1", "-d", database, *extra] + (["-c", sql] if sql else []),
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def new_database(self, schema=True):
        self.count += 1
        name = "owui_%d" % self.count
        self.psql("postgres", "CREATE DATABASE %s" % name)
        if schema:
            self.psql(name, None, "-f", str(PG_SCHEMA))
        return name


@pytest.fixture(scope="module")
def pg():
    if not (INITDB and PG_CTL and PSQL):
        pytest.skip("PostgreSQL's initdb, pg_ctl and psql are not installed")
    if PYTHON is None:
        pytest.skip(NO_PYTHON)
    cluster = Cluster()
    yield cluster
    cluster.stop()


# ---------------------------------------------------------------- a webui.db with representative rows

CHAT_JSON = ('{"title": "Caf\\u00e9 \u00e0 Paris", "history": {"currentId": "m2", "messages": {"m1": '
             '{"role": "user", "content": "2+2?"}, "m2": {"role": "assistant", "content": "4", "done": true}}}, '
             '"models": ["Qwen2.5-7B-Instruct"], "tags": []}')
SETTINGS_JSON = '{"ui": {"theme": "dark", "notifications": {"webhook": null}}, "n": [1, 2.5]}'


def make_webui_db(path, orphan=False):
    db = sqlite3.connect(path)
    db.executescript(SQLITE_SCHEMA.read_text())
    ins = db.execute
    ins('INSERT INTO "user" (id, name, email, role, profile_image_url, last_active_at, updated_at, created_at, '
        'date_of_birth, settings, info) VALUES (?,?,?,?,?,?,?,?,?,?,?)',
        ("u-admin", "Ann Admin", "ann@example.com", "admin", "/user.png", 1764633600, 1764633601, 1733000000,
         "1990-02-03", SETTINGS_JSON, None))
    ins('INSERT INTO "user" (id, name, email, role, last_active_at, updated_at, created_at, settings) '
        'VALUES (?,?,?,?,?,?,?,?)', ("u-bob", "Bob", "bob@example.com", "user", 1764633700, 1764633700,
                                     1764633700, "null"))
    ins("INSERT INTO auth (id, email, password, active) VALUES (?,?,?,?)",
        ("u-admin", "ann@example.com", "$argon2id$v=19$m=65536,t=3,p=4$hash", 1))
    ins("INSERT INTO auth (id, email, password, active) VALUES (?,?,?,?)",
        ("u-bob", "bob@example.com", "$2b$12$bcrypthash", 0))
    ins("INSERT INTO chat (id, user_id, title, created_at, updated_at, archived, pinned, chat, meta, folder_id) "
        "VALUES (?,?,?,?,?,?,?,?,?,?)", ("c-1", "u-admin", "Caf\u00e9\x00 chat", 1764633600, 1764633650, 0, 1,
                                          CHAT_JSON, '{"tags": ["math"]}', "f-1"))
    ins("INSERT INTO chat (id, user_id, title, created_at, updated_at, archived, pinned, chat, meta) "
        "VALUES (?,?,?,?,?,?,?,?,?)", ("c-2", "u-bob", "Archived", 1764633700, 1764633700, 1, 0, "{}", "{}"))
    for mid, content, done in (("m1", '"2+2?"', 1), ("m2", '"4"', 1), ("m3", "null", 0), ("m4", None, None)):
        ins("INSERT INTO chat_message (id, chat_id, user_id, role, content, done, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?)", (mid, "c-1", "u-admin", "user", content, done, 1764633600, 1764633600))
    if orphan:
        ins("INSERT INTO chat_message (id, chat_id, role, content, done) VALUES (?,?,?,?,?)",
            ("m-lost", "c-deleted", "user", '"lost"', 1))
    ins("INSERT INTO tag (id, name, user_id, meta) VALUES (?,?,?,?)", ("math", "Math", "u-admin", "{}"))
    ins("INSERT INTO folder (id, parent_id, user_id, name, items, meta, is_expanded, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?,?)", ("f-1", None, "u-admin", "Work", '{"chats": ["c-1"]}', None, 1, 1, 2))
    # A child before its parent (SQLite does not care; PostgreSQL checks the self reference) and a group
    # whose parent is gone (ON DELETE SET NULL: PostgreSQL would have set it to NULL).
    for gid, parent in (("g-child", "g-parent"), ("g-parent", None), ("g-stray", "g-deleted")):
        ins('INSERT INTO "group" (id, user_id, name, permissions, created_at, updated_at, parent_group_id) '
            "VALUES (?,?,?,?,?,?,?)", (gid, "u-admin", gid, '{"chat": {"file_upload": true}}', 1, 2, parent))
    ins("INSERT INTO group_member (id, group_id, user_id, created_at, updated_at) VALUES (?,?,?,?,?)",
        ("gm-1", "g-child", "u-bob", 1, 1))
    # SQLite's NUMERIC affinity turns the JSON text '12' into the integer 12.
    ins("INSERT INTO config (key, value, updated_at) VALUES (?,?,?)", ("ui.enable_signup", "false", 5))
    ins("INSERT INTO config (key, value, updated_at) VALUES (?,?,?)", ("task.max_tokens", "12", 5))
    ins("INSERT INTO config_old (id, data, version, created_at, updated_at) VALUES (?,?,?,?,?)",
        (41, '{"version": 0}', 0, "2025-01-02 03:04:05.678901", "2025-01-02 03:04:05"))
    db.commit()
    db.close()
    return str(path)


def run_script(args, url=None, env_name="DATABASE_URL"):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if url is not None:
        env[env_name] = url
    out = subprocess.run([PYTHON, str(SCRIPT)] + list(args), env=env, capture_output=True, text=True)
    summary = json.loads(out.stdout) if out.returncode == 0 else None
    return out, summary


def rows(pg, db, sql):
    text = pg.psql(db, "SELECT coalesce(json_agg(r), '[]') FROM (%s) r" % sql)
    return json.loads(text)


def digest(pg, db):
    """One checksum over every table's rows: equal before and after means nothing changed."""
    tables = pg.psql(db, "SELECT string_agg(quote_ident(tablename), ' ' ORDER BY tablename) "
                         "FROM pg_tables WHERE schemaname = 'public'").split()
    parts = ["SELECT '%s', md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM %s x" % (t, t)
             for t in tables]
    return dict(line.split("|") for line in pg.psql(db, " UNION ALL ".join(parts)).splitlines())


@pytest.fixture
def source(tmp_path):
    return make_webui_db(tmp_path / "webui.db")


# ---------------------------------------------------------------- the copy

def test_copies_every_row_with_json_booleans_and_epochs_exact(pg, source):
    db = pg.new_database()
    out, summary = run_script(["--sqlite", source], url=pg.url(db))
    assert out.returncode == 0, out.stderr
    assert summary["status"] == "migrated"
    assert summary["revision"] == "0bd252b206fb"
    counts = {t: c["target"] for t, c in summary["tables"].items() if c["target"]}
    assert counts == {"user": 2, "auth": 2, "chat": 2, "chat_message": 4, "tag": 1, "folder": 1, "group": 3,
                      "group_member": 1, "config": 2, "config_old": 1}
    assert all(c["source"] == c["copied"] == c["target"] for c in summary["tables"].values())
    assert "alembic_version" not in summary["tables"]
    assert summary["nul_characters_removed"] == 1  # chat c-1's title

    users = rows(pg, db, 'SELECT id, email, role, last_active_at, created_at, date_of_birth, '
                         'settings::text AS settings, settings IS NULL AS settings_is_sql_null FROM "user" ORDER BY id')
    assert users == [
        {"id": "u-admin", "email": "ann@example.com", "role": "admin", "last_active_at": 1764633600,
         "created_at": 1733000000, "date_of_birth": "1990-02-03", "settings": SETTINGS_JSON,
         "settings_is_sql_null": False},
        {"id": "u-bob", "email": "bob@example.com", "role": "user", "last_active_at": 1764633700,
         "created_at": 1764633700, "date_of_birth": None, "settings": "null", "settings_is_sql_null": False},
    ]
    assert rows(pg, db, "SELECT id, active, password FROM auth ORDER BY id") == [
        {"id": "u-admin", "active": True, "password": "$argon2id$v=19$m=65536,t=3,p=4$hash"},
        {"id": "u-bob", "active": False, "password": "$2b$12$bcrypthash"}]
    chats = rows(pg, db, "SELECT id, title, archived, pinned, chat::text AS chat, chat->'history'->>'currentId' "
                         "AS current, meta::text AS meta FROM chat ORDER BY id")
    assert chats == [
        {"id": "c-1", "title": "Caf\u00e9 chat", "archived": False, "pinned": True, "chat": CHAT_JSON,
         "current": "m2", "meta": '{"tags": ["math"]}'},
        {"id": "c-2", "title": "Archived", "archived": True, "pinned": False, "chat": "{}", "current": None,
         "meta": "{}"}]
    assert rows(pg, db, "SELECT id, content::text AS content, content IS NULL AS sql_null, done "
                        "FROM chat_message ORDER BY id") == [
        {"id": "m1", "content": '"2+2?"', "sql_null": False, "done": True},
        {"id": "m2", "content": '"4"', "sql_null": False, "done": True},
        {"id": "m3", "content": "null", "sql_null": False, "done": False},
        {"id": "m4", "content": None, "sql_null": True, "done": None}]
    assert rows(pg, db, 'SELECT id, parent_group_id FROM "group" ORDER BY id') == [
        {"id": "g-child", "parent_group_id": "g-parent"}, {"id": "g-parent", "parent_group_id": None},
        {"id": "g-stray", "parent_group_id": None}]
    assert summary["orphans"] == {"group": {"parent_group_id -> group(id)": 1}}
    assert rows(pg, db, "SELECT key, value::text AS value, jsonb_typeof(value::jsonb) AS type FROM config "
                        "ORDER BY key") == [
        {"key": "task.max_tokens", "value": "12", "type": "number"},
        {"key": "ui.enable_signup", "value": "false", "type": "boolean"}]
    assert rows(pg, db, "SELECT is_expanded, items->'chats'->>0 AS first FROM folder") == [
        {"is_expanded": True, "first": "c-1"}]
    assert rows(pg, db, "SELECT id, created_at::text AS created_at FROM config_old") == [
        {"id": 41, "created_at": "2025-01-02 03:04:05.678901"}]
    # The serial column's sequence continues after the copied ids.
    assert summary["sequences_reset"] == ["public.config_id_seq"]
    assert pg.psql(db, "SELECT nextval('config_id_seq')") == "42"


def test_second_run_reports_already_migrated_and_changes_nothing(pg, source):
    db = pg.new_database()
    first, _ = run_script(["--sqlite", source], url=pg.url(db))
    assert first.returncode == 0, first.stderr
    # Open WebUI keeps running on PostgreSQL: a sign-in moves last_active_at, a new chat arrives.
    pg.psql(db, "UPDATE \"user\" SET last_active_at = 1799999999 WHERE id = 'u-admin'; "
                "INSERT INTO chat (id, user_id, title, created_at, updated_at, meta) "
                "VALUES ('c-new', 'u-admin', 'new', 1, 1, '{}')")
    before = digest(pg, db)
    again, summary = run_script(["--sqlite", source], url=pg.url(db))
    assert again.returncode == 0, again.stderr
    assert summary["status"] == "already migrated"
    assert summary["tables"]["chat"] == {"source": 2, "target": 3}
    assert digest(pg, db) == before
    check, summary = run_script(["--sqlite", source, "--check"], url=pg.url(db))
    assert check.returncode == 0 and summary["status"] == "already migrated"


def test_target_with_other_data_is_refused_naming_the_table(pg, source):
    db = pg.new_database()
    pg.psql(db, "INSERT INTO \"user\" (id, name, email, role, created_at, updated_at, last_active_at) "
                "VALUES ('other-admin', 'Other', 'other@example.com', 'admin', 1, 1, 1)")
    before = digest(pg, db)
    out, _ = run_script(["--sqlite", source], url=pg.url(db))
    assert out.returncode == 2
    assert "table user has 1 row(s), 1 of them not from it, and lacks 2 of its 2" in out.stderr
    assert digest(pg, db) == before


def test_rows_a_first_start_wrote_are_replaced(pg, source):
    db = pg.new_database()
    pg.psql(db, "INSERT INTO config (key, value, updated_at) VALUES ('ui.enable_signup', 'true', 1), "
                "('version', '1', 1)")
    out, summary = run_script(["--sqlite", source], url=pg.url(db))
    assert out.returncode == 0, out.stderr
    assert summary["replaced_target_rows"] == {"config": 2}
    assert rows(pg, db, "SELECT key, value::text AS value FROM config ORDER BY key") == [
        {"key": "task.max_tokens", "value": "12"}, {"key": "ui.enable_signup", "value": "false"}]


def test_orphan_rows_are_refused_then_left_out_when_asked(pg, tmp_path):
    source = make_webui_db(tmp_path / "webui.db", orphan=True)
    db = pg.new_database()
    out, _ = run_script(["--sqlite", source], url=pg.url(db))
    assert out.returncode == 2
    assert "table chat_message has row(s) whose parent row is missing" in out.stderr
    assert '"chat_id -> chat(id)": 1' in out.stderr
    assert pg.psql(db, 'SELECT count(*) FROM "user"') == "0"
    out, summary = run_script(["--sqlite", source, "--drop-orphans"], url=pg.url(db))
    assert out.returncode == 0, out.stderr
    assert summary["dropped_orphans"] == {"chat_message": 1}
    assert summary["tables"]["chat_message"] == {"source": 4, "copied": 4, "target": 4}
    assert pg.psql(db, "SELECT count(*) FROM chat_message WHERE id = 'm-lost'") == "0"


def test_a_schema_of_another_version_is_refused(pg, source):
    db = pg.new_database()
    pg.psql(db, "UPDATE alembic_version SET version_num = 'f1e2d3c4b5a6'")
    out, _ = run_script(["--sqlite", source], url=pg.url(db))
    assert out.returncode == 2
    assert "revision f1e2d3c4b5a6" in out.stderr and "0bd252b206fb" in out.stderr


def test_check_on_an_empty_database_reports_no_schema_and_a_copy_is_refused(pg, source):
    db = pg.new_database(schema=False)
    out, summary = run_script(["--sqlite", source, "--check"], url=pg.url(db))
    assert out.returncode == 0, out.stderr
    assert summary["status"] == "no schema"
    out, _ = run_script(["--sqlite", source], url=pg.url(db))
    assert out.returncode == 2 and "no Open WebUI schema" in out.stderr


def test_a_live_write_ahead_log_is_read_by_check_and_refused_by_the_copy(pg, source):
    """Open WebUI keeps webui.db in WAL mode: the playbook's --check runs beside the live service."""
    live = sqlite3.connect(source)
    live.execute("PRAGMA journal_mode=WAL")
    live.execute("PRAGMA wal_autocheckpoint=0")
    live.execute("UPDATE chat SET title = 'renamed' WHERE id = 'c-2'")
    live.execute("INSERT INTO tag (id, name, user_id) VALUES ('new', 'New', 'u-bob')")
    live.commit()  # the change sits in webui.db-wal while this connection stays open
    assert Path(source + "-wal").stat().st_size > 0
    db = pg.new_database()
    check, summary = run_script(["--sqlite", source, "--check"], url=pg.url(db))
    assert check.returncode == 0, check.stderr
    assert summary["status"] == "ready" and summary["tables"]["tag"] == {"source": 2, "target": 0}
    copy, _ = run_script(["--sqlite", source], url=pg.url(db))
    assert copy.returncode == 2 and "webui.db-wal holds changes not yet in" in copy.stderr
    assert pg.psql(db, 'SELECT count(*) FROM "user"') == "0"
    live.close()  # the last connection folds the log in (as a stopping Open WebUI does)
    copy, summary = run_script(["--sqlite", source], url=pg.url(db))
    assert copy.returncode == 0, copy.stderr
    assert pg.psql(db, "SELECT title FROM chat WHERE id = 'c-2'") == "renamed"


# ---------------------------------------------------------------- the URL stays secret

@needs_python
def test_no_option_takes_the_url():
    probe = ("import importlib.util, json, sys\n"
             "spec = importlib.util.spec_from_file_location('m', sys.argv[1])\n"
             "m = sys.modules['m'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             "print(json.dumps({a.dest: a.option_strings for a in m.build_parser()._actions}))\n")
    out = subprocess.run([PYTHON, "-c", probe, str(SCRIPT)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == {
        "help": ["-h", "--help"], "sqlite": ["--sqlite"], "url_env": ["--url-env"], "url_file": ["--url-file"],
        "check": ["--check"], "drop_orphans": ["--drop-orphans"]}


def test_url_and_password_never_appear_in_the_output(pg, source, tmp_path):
    db = pg.new_database()
    good, _ = run_script(["--sqlite", source, "--url-env", "LLM_TARGET"], url=pg.url(db), env_name="LLM_TARGET")
    assert good.returncode == 0, good.stderr
    assert PASSWORD not in good.stdout + good.stderr
    wrong = "Wr0ng-" + PASSWORD
    bad, _ = run_script(["--sqlite", source], url=pg.url(db, password=wrong))
    assert bad.returncode == 1
    assert "password authentication failed" in bad.stderr
    assert wrong not in bad.stdout + bad.stderr
    # A URL given where the variable's NAME belongs is refused without being echoed.
    misuse, _ = run_script(["--sqlite", source, "--url-env", pg.url(db)])
    assert misuse.returncode == 2 and PASSWORD not in misuse.stderr
    unsupported, _ = run_script(["--sqlite", source], url=pg.url(db, scheme="mysql"))
    assert unsupported.returncode == 2 and "it is mysql://" in unsupported.stderr
    assert PASSWORD not in unsupported.stderr


def test_url_file_must_be_private_and_may_be_the_env_file(pg, source, tmp_path):
    db = pg.new_database()
    url_file = tmp_path / "migrate-database.env"
    # The line as the playbook and the role write it: postgresql+psycopg://, quoted, \ and " escaped.
    url_file.write_text('# comment\nDATA_DIR="/var/lib/llm/open-webui"\nDATABASE_URL="%s"\n'
                        % pg.url(db, scheme="postgresql+psycopg"))
    url_file.chmod(0o644)
    out, _ = run_script(["--sqlite", source, "--url-file", str(url_file)])
    assert out.returncode == 2 and "chmod 0600" in out.stderr
    url_file.chmod(0o600)
    out, summary = run_script(["--sqlite", source, "--url-file", str(url_file)])
    assert out.returncode == 0, out.stderr
    assert summary["status"] == "migrated"


# ---------------------------------------------------------------- the playbook's side

@pytest.mark.skipif(shutil.which("ansible-playbook", path=str(Path(sys.executable).parent)) is None,
                    reason="ansible-playbook not installed")
@needs_python
def test_playbook_switches_the_env_file_to_what_the_role_writes(tmp_path):
    """The playbook's DATABASE_URL line, put into a single host's env file, gives the role's file byte for byte
    (a later site.yml run with the same URL changes nothing) and reads back as the URL in the script."""
    url = 'postgres://open_webui:pa"ss\\word@10.0.0.5:5432/open_webui'
    play_vars = yaml.safe_load(PLAYBOOK.read_text())[0]["vars"]
    defaults = yaml.safe_load((REPO / "roles" / "open_webui" / "defaults" / "main.yml").read_text())
    common = {
        "llm_server_name": "llm.example.com",
        "open_webui_backends": [{"name": "vLLM", "base_url": "http://127.0.0.1:8000/v1",
                                 "model": "Qwen2.5-7B-Instruct", "api_key": "k" * 32}],
        "open_webui_secret_key_file": {"content": "c2VjcmV0LWtleQo="},
        "open_webui_admin_password_effective": "unused",
        "_open_webui_admin_bootstrap": False,
    }
    template = str(REPO / "roles/open_webui/templates/open-webui.env.j2")
    switch = {"path": str(tmp_path / "sqlite.env"), "regexp": "^DATABASE_URL=", "line": "{{ _migrate_env_line }}",
              "insertafter": "^DATA_DIR="}
    plays = [{
        "name": "switch", "hosts": "localhost", "gather_facts": False,
        "vars": {**defaults, **common, "_migrate_url": play_vars["_migrate_url"],
                 "_migrate_env_line": play_vars["_migrate_env_line"]},
        "tasks": [
            {"ansible.builtin.template": {"src": template, "dest": str(tmp_path / "sqlite.env"), "mode": "0600"}},
            {"ansible.builtin.template": {"src": template, "dest": str(tmp_path / "postgresql.env"), "mode": "0600"},
             "vars": {"open_webui_database_url": url}},
            {"ansible.builtin.lineinfile": switch, "vars": {"open_webui_database_url": url}},
            {"ansible.builtin.lineinfile": switch, "vars": {"open_webui_database_url": url}, "register": "again"},
            {"ansible.builtin.assert": {"that": "not again.changed"}},
            {"ansible.builtin.copy": {"content": "{{ _migrate_env_line }}\n", "dest": str(tmp_path / "url.env"),
                                      "mode": "0600"}, "vars": {"open_webui_database_url": url}},
        ],
    }]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(plays, sort_keys=False))
    playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    out = subprocess.run([playbook, "-i", "localhost,", "-c", "local", "-e",
                          "ansible_python_interpreter=%s" % sys.executable, str(tmp_path / "play.yml")],
                         capture_output=True, text=True, cwd=REPO, timeout=300,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
                                  ANSIBLE_CACHE_PLUGIN="memory", ANSIBLE_LOCAL_TEMP=str(tmp_path / "t")))
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "sqlite.env").read_text() == (tmp_path / "postgresql.env").read_text()
    assert 'DATABASE_URL="postgresql+psycopg://open_webui:pa\\"ss\\\\word@10.0.0.5:5432/open_webui"' in \
        (tmp_path / "postgresql.env").read_text().splitlines()
    probe = ("import importlib.util, sys\n"
             "spec = importlib.util.spec_from_file_location('m', sys.argv[1])\n"
             "m = sys.modules['m'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             "print(m.url_from_text(open(sys.argv[2]).read()))\n")
    for env_file in ("url.env", "postgresql.env"):
        read = subprocess.run([PYTHON, "-c", probe, str(SCRIPT), str(tmp_path / env_file)],
                              capture_output=True, text=True, check=True)
        assert read.stdout.strip() == 'postgresql+psycopg://open_webui:pa"ss\\word@10.0.0.5:5432/open_webui'


def test_playbook_ships_with_the_collection_and_finds_its_script():
    text = PLAYBOOK.read_text()
    assert "{{ playbook_dir }}/../roles/open_webui/files/llm-webui-sqlite-to-postgresql.py" in text
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert "playbooks/migrate-sqlite-to-postgresql.yml" not in galaxy["build_ignore"]
    assert SCRIPT.is_file()
    # Secrets travel in module arguments or root-only files, never through `environment:` (it is put on the
    # remote shell's command line) and never on a command line.
    plays = yaml.safe_load(text)
    assert "environment" not in plays[0]
    assert "open_webui_database_url" not in yaml.safe_dump(
        [t for t in _tasks(plays[0]["tasks"]) if "ansible.builtin.command" in t])


def _tasks(tasks):
    for task in tasks:
        yield task
        for key in ("block", "rescue", "always"):
            yield from _tasks(task.get(key, []))
