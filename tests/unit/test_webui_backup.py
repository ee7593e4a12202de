"""roles/open_webui/files/llm-webui-backup.py, Open WebUI's backup and restore on a host, run for real on
SQLite databases and folders made here (the molecule default scenario runs it through playbooks/backup.yml
and playbooks/restore.yml on a served host)."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "roles" / "open_webui" / "files" / "llm-webui-backup.py"


def run(*args, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)
    if check:
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)
    return proc


@pytest.fixture()
def site(tmp_path):
    data, config, dest = tmp_path / "data", tmp_path / "config", tmp_path / "backups"
    (data / "uploads" / "u1").mkdir(parents=True)
    (data / "uploads" / "u1" / "notes.txt").write_text("attached")
    config.mkdir()
    (config / "secret-key").write_text("s3cret")
    db = sqlite3.connect(data / "webui.db")
    db.execute("create table chat (id text primary key, title text)")
    db.executemany("insert into chat values (?, ?)", [("1", "first"), ("2", "second")])
    db.commit()
    db.close()
    return data, config, dest


def titles(data):
    with sqlite3.connect(data / "webui.db") as db:
        return [t for (t,) in db.execute("select title from chat order by id")]


def backup(site, *extra):
    data, config, dest = site
    return run("backup", "--data-dir", data, "--config-dir", config, "--dest", dest, *extra)


def test_backup_is_complete_private_and_checksummed(site):
    data, _, dest = site
    # Open WebUI holds the database open and writes while the backup runs: the copy is SQLite's online backup.
    live = sqlite3.connect(data / "webui.db")
    live.execute("insert into chat values ('3', 'third')")
    result = backup(site, "--reason", "Before upgrade 0.12.4")
    live.commit()
    path = Path(result["path"])
    assert path.parent == dest and path.name.endswith("-before-upgrade-0.12.4")
    assert result["files"] == ["webui.db", "uploads.tar.gz", "config.tar.gz"]
    assert oct(dest.stat().st_mode & 0o777) == "0o700" and oct(path.stat().st_mode & 0o777) == "0o700"
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in path.iterdir()} == {
        "webui.db": "0o600", "uploads.tar.gz": "0o600", "config.tar.gz": "0o600", "SHA256SUMS": "0o600"}
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=path, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3, check.stdout
    with sqlite3.connect(path / "webui.db") as db:  # what was committed when the backup ran
        assert [t for (t,) in db.execute("select title from chat order by id")] == ["first", "second"]
    assert not [p for p in dest.iterdir() if p.name.startswith(".partial-")]


def test_only_the_newest_backups_are_kept(site):
    names = [Path(backup(site, "--keep", "2")["path"]).name for _ in range(3)]
    assert len(set(names)) == 3  # one second apart at least
    listed = run("list", "--dest", site[2])["backups"]
    assert listed == names[1:]


def test_restore_brings_a_deleted_chat_back_and_sets_the_replaced_data_aside(site):
    data, _, dest = site
    backup(site)
    with sqlite3.connect(data / "webui.db") as db:
        db.execute("delete from chat where id = '2'")
    (data / "uploads" / "u1" / "notes.txt").unlink()
    assert titles(data) == ["first"]
    result = run("restore", "--data-dir", data, "--dest", dest)
    assert result["restored"] == ["webui.db", "uploads"]
    assert titles(data) == ["first", "second"]
    assert (data / "uploads" / "u1" / "notes.txt").read_text() == "attached"
    aside = sorted(p.name for p in data.iterdir() if ".before-restore-" in p.name)
    assert [n.split(".before-restore-")[0] for n in aside] == ["uploads", "webui.db"], aside
    assert oct((data / "webui.db").stat().st_mode & 0o777) == "0o600"


def test_a_damaged_backup_restores_nothing(site):
    data, _, dest = site
    path = Path(backup(site)["path"])
    with open(path / "webui.db", "ab") as f:
        f.write(b"x")
    with sqlite3.connect(data / "webui.db") as db:
        db.execute("delete from chat where id = '2'")
    proc = run("restore", "--data-dir", data, "--dest", dest, check=False)
    assert proc.returncode != 0 and f"backup {path} is damaged: webui.db do not match SHA256SUMS" in proc.stderr
    assert titles(data) == ["first"]
    assert not [p for p in data.iterdir() if ".before-restore-" in p.name or p.name.startswith(".restoring")]


def test_restore_names_the_backups_there_when_the_one_asked_for_is_not(site):
    data, _, dest = site
    proc = run("restore", "--data-dir", data, "--dest", dest, check=False)
    assert proc.returncode != 0 and f"no backup in {dest}: run playbooks/backup.yml first" in proc.stderr
    name = Path(backup(site)["path"]).name
    proc = run("restore", "--data-dir", data, "--dest", dest, "--from", "20200101T000000Z-manual", check=False)
    assert proc.returncode != 0 and f"backups in {dest}: {name}" in proc.stderr
    assert run("restore", "--data-dir", data, "--dest", dest, "--from", name)["path"] == os.path.join(dest, name)


def test_on_postgresql_the_old_sqlite_file_is_left_out_and_restore_refuses(site, tmp_path):
    data, _, dest = site
    env = tmp_path / "open-webui.env"
    env.write_text('WEBUI_NAME="x"\nDATABASE_URL="postgresql+psycopg://open_webui:pw@10.0.0.5:5432/open_webui"\n')
    result = backup(site, "--env-file", env)
    assert result["database"] == "postgresql" and result["files"] == ["uploads.tar.gz", "config.tar.gz"]
    proc = run("restore", "--data-dir", data, "--dest", dest, "--env-file", env, check=False)
    assert proc.returncode != 0 and "Open WebUI's database is PostgreSQL" in proc.stderr
    assert "pw@" not in proc.stderr + proc.stdout
    env.write_text('WEBUI_NAME="x"\n')  # SQLite: the default
    assert backup(site, "--env-file", env)["database"] == "sqlite"


def test_a_new_parent_folder_is_traversable_by_others(tmp_path, site):
    # /var/backups/llm holds the database's dumps too, which the postgres user writes.
    data, config, _ = site
    dest = tmp_path / "backups-root" / "open-webui"
    run("backup", "--data-dir", data, "--config-dir", config, "--dest", dest)
    assert oct(dest.parent.stat().st_mode & 0o777) == "0o755" and oct(dest.stat().st_mode & 0o777) == "0o700"
