"""Backs up and restores Open WebUI's data on this host (roles/open_webui: backup.yml, restore.yml).

    llm-webui-backup backup  --data-dir D --config-dir C --dest B [--keep N] [--reason R]
                             [--env-file E]
    llm-webui-backup restore --data-dir D --dest B [--from NAME|PATH|latest] [--env-file E]
    llm-webui-backup list    --dest B

A backup is a folder B/<UTC time>-<reason>/ (root only, 0700; files 0600) holding:
  webui.db        SQLite's online backup of D/webui.db (consistent while Open WebUI writes)
  uploads.tar.gz  D/uploads, the files users attached
  config.tar.gz   C: the environment file and the session secret (for a rebuild by hand;
                  restore leaves C alone)
  SHA256SUMS      sha256sum's format; restore checks it before it touches anything
(each when it exists). Backups beyond --keep (the newest kept) are removed once a new one is
complete. Each command prints one JSON object. Restore needs Open WebUI stopped (the tasks stop
it); it sets the database and uploads it replaces aside (<name>.before-restore-<time>) and gives
the restored files the owner of D. With --env-file (Open WebUI's environment file) naming a
PostgreSQL DATABASE_URL, the database is not here: a webui.db left from before a move to PostgreSQL
is not backed up, and restore refuses (the database is restored on the datastore host).
Standard library only: the tasks run it with the host's python3.
"""

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import time

SUMS = "SHA256SUMS"
NAME = re.compile(r"^\d{8}T\d{6}Z-[a-z0-9.-]+$")


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tar(src, out):
    with tarfile.open(out, "w:gz") as tar:
        tar.add(src, arcname=os.path.basename(src.rstrip("/")))


def _backups(dest):
    if not os.path.isdir(dest):
        return []
    return sorted(n for n in os.listdir(dest)
                  if NAME.match(n) and os.path.isfile(os.path.join(dest, n, SUMS)))


def _database(env_file):
    """'postgresql' when Open WebUI's env file has a PostgreSQL DATABASE_URL, else 'sqlite'."""
    if env_file and os.path.isfile(env_file):
        with open(env_file, encoding="utf-8") as f:
            for line in f:
                if re.match(r'^DATABASE_URL="?postgres', line):
                    return "postgresql"
    return "sqlite"


def backup(args):
    reason = re.sub(r"[^a-z0-9.-]+", "-", args.reason.lower()).strip("-.") or "manual"
    parent = os.path.dirname(os.path.abspath(args.dest))
    if not os.path.isdir(parent):  # /var/backups/llm: the database dumps are there too
        os.makedirs(parent)
        os.chmod(parent, 0o755)
    os.makedirs(args.dest, mode=0o700, exist_ok=True)
    os.chmod(args.dest, 0o700)
    while True:  # one name a second: a second backup within the same second waits for the next
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        final = os.path.join(args.dest, "%s-%s" % (now, reason))
        if not os.path.exists(final):
            break
        time.sleep(0.2)
    work = tempfile.mkdtemp(prefix=".partial-", dir=args.dest)
    try:
        files = []
        db = os.path.join(args.data_dir, "webui.db")
        database = _database(args.env_file)
        if database == "sqlite" and os.path.isfile(db):
            src = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
            dst = sqlite3.connect(os.path.join(work, "webui.db"))
            with dst:
                src.backup(dst)
            src.close()
            dst.close()
            files.append("webui.db")
        uploads = os.path.join(args.data_dir, "uploads")
        if os.path.isdir(uploads):
            _tar(uploads, os.path.join(work, "uploads.tar.gz"))
            files.append("uploads.tar.gz")
        if args.config_dir and os.path.isdir(args.config_dir):
            _tar(args.config_dir, os.path.join(work, "config.tar.gz"))
            files.append("config.tar.gz")
        if not files:
            raise SystemExit("nothing to back up: no %s, no %s, no %s"
                             % (db, uploads, args.config_dir))
        with open(os.path.join(work, SUMS), "w", encoding="utf-8") as f:
            for name in files:
                f.write("%s  %s\n" % (_sha256(os.path.join(work, name)), name))
        for name in files + [SUMS]:
            os.chmod(os.path.join(work, name), 0o600)
        os.rename(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    removed = []
    for old in _backups(args.dest)[:-args.keep] if args.keep > 0 else []:
        shutil.rmtree(os.path.join(args.dest, old))
        removed.append(old)
    return {"path": final, "files": files, "database": database, "removed": removed,
            "kept": _backups(args.dest)}


def _pick(dest, which):
    names = _backups(dest)
    if which in ("", "latest"):
        if not names:
            raise SystemExit("no backup in %s: run playbooks/backup.yml first" % dest)
        return os.path.join(dest, names[-1])
    path = which if os.path.isabs(which) else os.path.join(dest, which)
    if not os.path.isfile(os.path.join(path, SUMS)):
        raise SystemExit("%s is no backup (no %s); backups in %s: %s"
                         % (path, SUMS, dest, ", ".join(names) or "none"))
    return path


def _verify(path):
    with open(os.path.join(path, SUMS), encoding="utf-8") as f:
        sums = dict(reversed(line.rstrip("\n").split("  ", 1)) for line in f if line.strip())
    bad = [name for name, digest in sorted(sums.items())
           if not os.path.isfile(os.path.join(path, name))
           or _sha256(os.path.join(path, name)) != digest]
    if bad:
        raise SystemExit("backup %s is damaged: %s do not match %s; nothing was restored"
                         % (path, ", ".join(bad), SUMS))
    return sorted(sums)


def restore(args):
    if _database(args.env_file) == "postgresql":
        raise SystemExit("Open WebUI's database is PostgreSQL (DATABASE_URL in %s): restore it "
                         "on the datastore host (pg_restore of its dump); this restores a SQLite "
                         "install only" % args.env_file)
    path = _pick(args.dest, args.source)
    files = _verify(path)
    owner = os.stat(args.data_dir)
    uid, gid = owner.st_uid, owner.st_gid
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    restored, kept = [], []
    if "webui.db" in files:
        db = os.path.join(args.data_dir, "webui.db")
        staged = db + ".restoring"
        shutil.copyfile(os.path.join(path, "webui.db"), staged)
        os.chown(staged, uid, gid)
        os.chmod(staged, 0o600)
        if os.path.exists(db):
            kept.append(db + ".before-restore-" + now)
            os.rename(db, kept[-1])
        for suffix in ("-wal", "-shm", "-journal"):  # of the database just set aside
            if os.path.exists(db + suffix):
                os.rename(db + suffix, kept[-1] + suffix)
        os.rename(staged, db)
        restored.append("webui.db")
    if "uploads.tar.gz" in files:
        uploads = os.path.join(args.data_dir, "uploads")
        staging = tempfile.mkdtemp(prefix=".restoring-", dir=args.data_dir)
        with tarfile.open(os.path.join(path, "uploads.tar.gz")) as tar:
            if hasattr(tarfile, "data_filter"):  # PEP 706 (3.11.4+, and Debian's backport)
                tar.extractall(staging, filter="data")
            else:
                tar.extractall(staging)  # our own archive, checked against SHA256SUMS above
        for root, dirs, names in os.walk(staging):
            for name in dirs + names:
                os.chown(os.path.join(root, name), uid, gid)
        if os.path.exists(uploads):
            kept.append(uploads + ".before-restore-" + now)
            os.rename(uploads, kept[-1])
        os.rename(os.path.join(staging, "uploads"), uploads)
        os.rmdir(staging)
        restored.append("uploads")
    return {"path": path, "restored": restored, "set_aside": kept}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="llm-webui-backup")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backup")
    b.add_argument("--data-dir", required=True)
    b.add_argument("--config-dir", default="")
    b.add_argument("--dest", required=True)
    b.add_argument("--keep", type=int, default=5)
    b.add_argument("--reason", default="manual")
    b.add_argument("--env-file", default="")
    r = sub.add_parser("restore")
    r.add_argument("--data-dir", required=True)
    r.add_argument("--dest", required=True)
    r.add_argument("--from", dest="source", default="latest")
    r.add_argument("--env-file", default="")
    ls = sub.add_parser("list")
    ls.add_argument("--dest", required=True)
    args = parser.parse_args(argv)
    os.umask(0o077)
    if args.command == "backup":
        result = backup(args)
    elif args.command == "restore":
        result = restore(args)
    else:
        result = {"backups": _backups(args.dest)}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
