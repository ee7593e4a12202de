"""Turning this converged single host, with its chats, into a fleet (README "Turning a single host into a
fleet"), the documented steps in order: the datastore alone (`site.yml --tags datastore`), the SQLite -> PostgreSQL
move (playbooks/migrate-sqlite-to-postgresql.yml, twice: the second changes nothing), then site.yml with the host
in llm_engines and llm_fronts. The chat side_effect.yml made on SQLite must be served at every step.

Runs after every other module of the scenario (conftest.py): it leaves the host a one-host fleet. The fleet's
controller secrets go to a folder of this test (llm_fleet_secrets_dir, nginx_fleet_ca_dir), not .secrets/fleet/,
which molecule/fleet uses.
"""

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

HOST = os.environ.get("LLM_FRONT_HOST", "llm-default")
testinfra_hosts = [f"podman://{HOST}"]

REPO = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_faults import chat_titles, curl, playbook  # noqa: E402  the fault suite's helpers
from test_front import PERSISTENCE_TITLE, env_value  # noqa: E402

SECRETS = REPO / ".secrets" / HOST / "to-fleet"
DATA_DIR = "/var/lib/llm/open-webui"


@pytest.fixture(scope="module")
def fleet_args(tmp_path_factory):
    """ansible-playbook arguments that put this host in a one-host fleet (engine, front, and so datastore)."""
    if "MOLECULE_INVENTORY_FILE" not in os.environ:
        pytest.skip("turns the host into a fleet: molecule's default scenario only")
    shutil.rmtree(SECRETS, ignore_errors=True)
    groups = tmp_path_factory.mktemp("to-fleet") / "fleet.yml"
    groups.write_text("all:\n  children:\n    llm_engines:\n      hosts:\n        %s:\n"
                      "    llm_fronts:\n      hosts:\n        %s:\n" % (HOST, HOST))
    return ["-i", str(groups), "-e", f"llm_fleet_secrets_dir={SECRETS / 'fleet'}",
            "-e", f"nginx_fleet_ca_dir={SECRETS / 'fleet-ca'}"]


def active(host, unit):
    return host.run(f"systemctl is-active --quiet {unit}").rc == 0


def pg_titles(host):
    return host.check_output("runuser -u postgres -- psql -d open_webui -tAc 'select title from chat'").splitlines()


def test_the_datastore_comes_up_alone_and_the_host_keeps_its_sqlite(host, fleet_args):
    assert PERSISTENCE_TITLE in chat_titles(), "side_effect.yml's chat is gone before the move"
    rc, out, _, _ = playbook("site.yml", *fleet_args, "--tags", "datastore")
    assert rc == 0, out[-5000:]
    for unit in ("postgresql", "redis-server", "llm-chroma"):
        assert active(host, unit), f"{unit} is not active after --tags datastore"
    # After plan and preflight, only the datastore play changes the host: the deploy play runs just its read-only
    # `always` tasks (argument specs, published facts), so the engine and Open WebUI stay as they were.
    deploy = out[out.index("PLAY [Deploy the LLM stack]"):]
    changed = [task.split("]")[0] for task in deploy.split("\nTASK [")[1:]
               if re.search(rf"^changed: \[{re.escape(HOST)}\]", task, re.M)]
    assert changed == [], f"--tags datastore changed the host outside the datastore play: {changed}"
    assert "postgresql" not in env_value(host, "DATABASE_URL")
    assert PERSISTENCE_TITLE in chat_titles()
    tables = host.check_output("runuser -u postgres -- psql -d open_webui -tAc "
                               "\"select count(*) from information_schema.tables where table_schema = 'public'\"")
    assert tables == "0", "PostgreSQL has tables before the move: an Open WebUI started on it"


def test_the_chats_move_to_postgresql_and_are_served_from_there(host, fleet_args):
    # Every chat of SQLite (side_effect.yml's, the browser test's, ...) is moved, none more.
    chats = int(host.check_output(
        "python3 -c \"import sqlite3; print(sqlite3.connect('file:%s/webui.db?mode=ro', uri=True)"
        ".execute('select count(*) from chat').fetchone()[0])\"" % DATA_DIR))
    assert chats >= 1
    rc, out, changed, _ = playbook("playbooks/migrate-sqlite-to-postgresql.yml", *fleet_args)
    assert rc == 0 and changed > 0, out[-5000:]
    assert re.search(r"(?<!already )migrated, rows per table: [^\n]*\bchat %d\b" % chats, out), out[-3000:]
    assert int(host.check_output("runuser -u postgres -- psql -d open_webui -tAc 'select count(*) from chat'")) \
        == chats
    assert env_value(host, "DATABASE_URL").startswith("postgresql+psycopg://")
    assert PERSISTENCE_TITLE in pg_titles(host)
    assert PERSISTENCE_TITLE in chat_titles(), "Open WebUI does not serve the moved chat"
    backups = host.check_output(f"find {DATA_DIR} -maxdepth 1 -name 'webui.db.*-before-postgresql'").split()
    assert len(backups) == 1 and host.file(backups[0]).mode == 0o600, backups
    # The moved admin keeps their password: the fleet's password file is now that one.
    fleet_password = SECRETS / "fleet" / "open-webui-admin"
    assert fleet_password.read_text() == (REPO / ".secrets" / HOST / "open-webui-admin").read_text()
    assert fleet_password.stat().st_mode & 0o777 == 0o600
    database_password = (REPO / ".secrets" / HOST / "postgresql-open_webui").read_text().strip()
    assert database_password not in out, "the database password is in the playbook's output"


def test_a_second_move_changes_nothing(host, fleet_args):
    rc, out, changed, _ = playbook("playbooks/migrate-sqlite-to-postgresql.yml", *fleet_args)
    assert rc == 0 and changed == 0, f"changed={changed}\n{out[-5000:]}"
    assert "already migrated, rows per table" in out, out[-3000:]


def test_site_yml_makes_it_a_fleet_front_that_keeps_the_chats(host, fleet_args):
    rc, out, _, _ = playbook("site.yml", *fleet_args)
    assert rc == 0, out[-6000:]
    assert env_value(host, "WEBSOCKET_MANAGER") == "redis"
    assert env_value(host, "VECTOR_DB") == "chroma"
    assert env_value(host, "DATABASE_URL").startswith("postgresql+psycopg://")
    assert env_value(host, "OPENAI_API_BASE_URLS").startswith("http://127.0.0.1:8090/")
    assert PERSISTENCE_TITLE in chat_titles(SECRETS / "fleet" / "open-webui-admin")
    key = (SECRETS / "fleet" / "llm-api-key").read_text().strip()
    auth = {"Authorization": f"Bearer {key}"}
    status, text = curl("/v1/models", headers=auth)
    assert status == 200, text[:500]
    model = json.loads(text)["data"][0]["id"]
    status, text = curl("/v1/chat/completions", "POST", headers=auth, timeout=120,
                        body={"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    assert status == 200, text[:500]


def test_a_fleets_backup_dumps_the_database_on_the_datastore(host, fleet_args):
    # playbooks/backup.yml on the one-host fleet (datastore and front): pg_dump of Open WebUI's database as the
    # postgres user, checksummed; the front's own backup leaves out the webui.db left from before the move.
    rc, out, _, _ = playbook("playbooks/backup.yml", *fleet_args)
    assert rc == 0, out[-5000:]
    dump = re.search(r"Database backup of \S+:\s+(/var/backups/llm/postgresql/\S+\.dump)", out)
    assert dump, out[-3000:]
    with host.sudo():
        folder = host.file("/var/backups/llm/postgresql")
        assert (folder.user, folder.mode) == ("postgres", 0o700)
        sums = host.run(f"cd /var/backups/llm/postgresql && sha256sum -c {dump.group(1)}.sha256")
        assert sums.rc == 0, sums.stdout + sums.stderr
        tables = host.check_output(f"runuser -u postgres -- pg_restore --list {dump.group(1)}")
    assert re.search(r"TABLE DATA public chat ", tables), tables[:2000]
    front = re.search(r"Backup of \S+:\s+(/var/backups/llm/open-webui/\S+)\s+\(([^)]*)\)", out)
    assert front and "webui.db" not in front.group(2), out[-3000:]
    assert re.search(r"The\s+database\s+is\s+on\s+PostgreSQL", out), out[-3000:]


def test_a_fleets_restore_puts_the_dump_back_with_every_front_stopped(host, fleet_args):
    # The dump of the test before holds every chat; one deleted since comes back. Refused while the front runs.
    titles = sorted(pg_titles(host))
    assert PERSISTENCE_TITLE in titles
    host.check_output("runuser -u postgres -- psql -d open_webui -tAc "
                      f"\"delete from chat where title = '{PERSISTENCE_TITLE}'\"")
    assert PERSISTENCE_TITLE not in pg_titles(host)
    rc, out, changed, _ = playbook("playbooks/restore.yml", *fleet_args)
    assert rc != 0 and changed == 0, out[-3000:]
    assert re.search(rf"open-webui\s+runs\s+on\s+{HOST}:\s+a\s+restore\s+replaces\s+the\s+database", out), out[-3000:]
    rc, out, _, _ = playbook("playbooks/restore.yml", *fleet_args, "-e", "open_webui_restore_stop=true")
    assert rc == 0, out[-5000:]
    restored = re.search(r"Restored\s+(/var/backups/llm/postgresql/\S+\.dump)\s+into\s+open_webui\s+on\s+\S+;\s+the"
                         r"\s+database\s+as\s+it\s+was\s+is\s+in\s+(/var/backups/llm/postgresql/\S+-before-restore\.dump)",
                         out)
    assert restored, out[-3000:]
    assert sorted(pg_titles(host)) == titles
    assert active(host, "open-webui")
    assert PERSISTENCE_TITLE in chat_titles(SECRETS / "fleet" / "open-webui-admin")
    with host.sudo():
        aside = host.check_output(f"runuser -u postgres -- pg_restore --list {restored.group(2)}")
    assert re.search(r"TABLE DATA public chat ", aside), aside[:2000]
