# -*- coding: utf-8 -*-
"""Model downloads that resume: SHA256SUMS parsing, safe names, HTTP Range, SHA-256 check.

Pure Python (the llm_fetch module is the thin wrapper). Every network call goes through an
``opener(url, headers, timeout, method)`` passed in, so tests use a local http.server and the
module uses ansible.module_utils.urls.open_url; both raise urllib's HTTPError for 4xx/5xx.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import hashlib
import os
import re
from urllib.error import HTTPError
from urllib.parse import quote

#: One path component: starts with a letter or digit (so never '.', '..' or a hidden file),
#: then letters, digits, '.', '_', '-'. Names are components joined by '/'.
_COMPONENT = r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}"
SAFE_NAME = re.compile(r"^%s(/%s)*$" % (_COMPONENT, _COMPONENT))
_SUMS_LINE = re.compile(r"^([0-9A-Fa-f]{64}) [ *](.*)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


class FetchError(Exception):
    """A download or a listing that cannot be used; the message says what to change."""


def check_name(name, where):
    """Refuse a name that could leave the model folder (absolute, '..', empty, odd characters)."""
    if not name or not SAFE_NAME.match(name) or ".." in name.split("/"):
        raise FetchError(
            "%s: file name %r is not a safe relative path (letters, digits, '.', '_', '-', "
            "'/' between names, each name starting with a letter or digit; no leading '/', "
            "no '..'): refusing to "
            "write it under the model folder" % (where, name)
        )
    return name


def parse_sha256sums(text):
    """``sha256sum`` output -> [(name, sha256)]; raises FetchError naming the offending line."""
    entries = []
    seen = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        where = "SHA256SUMS line %d %r" % (number, line[:200])
        match = _SUMS_LINE.match(line)
        if not match:
            raise FetchError("%s: not '<64 hex digits>  <file name>'" % where)
        name = check_name(match.group(2), where)
        if name in seen:
            raise FetchError("%s: %s is listed twice" % (where, name))
        seen.add(name)
        entries.append((name, match.group(1).lower()))
    if not entries:
        raise FetchError("SHA256SUMS lists no files")
    return entries


def check_url(url, allow_insecure, variable):
    """https only; http only when the operator allowed it (the message names the variable)."""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "https" or (scheme == "http" and allow_insecure):
        return url
    if scheme == "http":
        raise FetchError(
            "%s is plain http (%s): the weights and their checksums would travel unauthenticated. "
            "Use an https URL, or set model_store_http_allow_insecure: true to accept it"
            % (variable, url)
        )
    raise FetchError("%s must be an https URL, got %r" % (variable, url))


def file_url(base_url, name):
    return base_url.rstrip("/") + "/" + quote(name)


def build_files(files=None, sums=None, base_url=None, allow_insecure=False):
    """The list to fetch: dicts name, url, sha256 (or None), size (or None), all checked."""
    out = []
    if sums is not None:
        if not base_url:
            raise FetchError("sums needs base_url (the mirror folder the names are relative to)")
        for name, sha in parse_sha256sums(sums):
            out.append({"name": name, "sha256": sha, "size": None, "url": file_url(base_url, name)})
    for index, item in enumerate(files or []):
        where = "files[%d]" % index
        # Entries of a Hugging Face listing (rfilename, size, lfs.sha256) are taken as they are.
        name = check_name(str(item.get("name") or item.get("rfilename") or ""), where)
        sha = item.get("sha256") or (item.get("lfs") or {}).get("sha256") or None
        if sha is not None and not _SHA256.match(str(sha).lower()):
            raise FetchError("%s (%s): sha256 %r is not 64 hex digits" % (where, name, sha))
        url = item.get("url") or (file_url(base_url, name) if base_url else None)
        if not url:
            raise FetchError("%s (%s): no url and no base_url" % (where, name))
        size = item.get("size")
        out.append(
            {
                "name": name,
                "sha256": sha.lower() if sha else None,
                "size": int(size) if size not in (None, "") else None,
                "url": url,
            }
        )
    names = [f["name"] for f in out]
    dupes = sorted(set(n for n in names if names.count(n) > 1))
    if dupes:
        raise FetchError("file listed twice: %s" % ", ".join(dupes))
    for item in out:
        check_url(item["url"], allow_insecure, "the URL of %s" % item["name"])
    return out


def sha256_of(path):
    return _hash_file_into(path, hashlib.sha256()).hexdigest()


def _content_range_start(value):
    match = re.match(r"^\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _header(resp, name):
    headers = getattr(resp, "headers", None) or {}
    return headers.get(name)


def remote_size(opener, url, headers, timeout):
    """Content-Length of url from a HEAD request, or None when the server does not say."""
    try:
        resp = opener(url, headers, timeout, "HEAD")
    except HTTPError as exc:
        raise FetchError("HEAD %s: HTTP %s %s" % (url, exc.code, exc.reason)) from None
    try:
        length = _header(resp, "Content-Length")
        return int(length) if length not in (None, "") else None
    finally:
        resp.close()


def download(opener, url, partial, headers, timeout, sha256=None, on_bytes=None):
    """Fetch url into the file partial, resuming what is there with a Range request.

    on_bytes(position, fetched) is called with the bytes of the file so far and the bytes just
    received.
    Returns dict(sha256, size, resumed_from). A server that ignores Range (200) restarts the file;
    a resumed file whose checksum is wrong is fetched once more from zero (the old partial may be
    from another revision). A wrong checksum on a full download removes the partial and raises.
    A cut connection keeps the partial (the next run resumes) and raises.
    """
    parent = os.path.dirname(partial)
    if parent and not os.path.isdir(parent):
        os.makedirs(parent)
    for attempt in (1, 2):
        offset = os.path.getsize(partial) if os.path.exists(partial) else 0
        req_headers = dict(headers or {})
        if offset:
            req_headers["Range"] = "bytes=%d-" % offset
        try:
            resp = opener(url, req_headers, timeout, "GET")
        except HTTPError as exc:
            if exc.code == 416 and offset:
                # Nothing past offset: the partial is complete already (or longer than the file).
                digest = sha256_of(partial)
                if sha256 is None or digest == sha256:
                    return {"sha256": digest, "size": offset, "resumed_from": offset}
                os.unlink(partial)
                continue
            raise FetchError("GET %s: HTTP %s %s" % (url, exc.code, exc.reason)) from None
        status = getattr(resp, "status", None) or resp.getcode()
        resumed = (
            bool(offset)
            and status == 206
            and _content_range_start(_header(resp, "Content-Range")) == offset
        )
        digest = hashlib.sha256()
        if resumed:
            digest = _hash_file_into(partial, digest)
        else:
            offset = 0
        if on_bytes:
            on_bytes(offset, 0)
        length = _header(resp, "Content-Length")
        expected = int(length) if length not in (None, "") else None
        received = 0
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    if on_bytes:
                        on_bytes(offset + received, len(block))
        except (IOError, OSError) as exc:
            if getattr(exc, "errno", None) == errno.ENOSPC:
                raise FetchError(
                    "%s: the disk is full after %d bytes (%s)" % (partial, offset + received, exc)
                ) from exc
            raise FetchError(
                "GET %s: connection lost after %d bytes (%s); %d bytes kept in %s, "
                "the next run resumes" % (url, received, exc, offset + received, partial)
            ) from exc
        except Exception as exc:  # http.client.IncompleteRead, socket.timeout, ssl errors
            raise FetchError(
                "GET %s: connection lost after %d bytes (%s: %s); %d bytes kept in %s, "
                "the next run resumes"
                % (url, received, type(exc).__name__, exc, offset + received, partial)
            ) from exc
        finally:
            resp.close()
        if expected is not None and received < expected:
            raise FetchError(
                "GET %s: the server closed the connection after %d of %d bytes; %d bytes kept "
                "in %s, the next run resumes"
                % (url, received, expected, offset + received, partial)
            )
        hexdigest = digest.hexdigest()
        if sha256 is not None and hexdigest != sha256:
            os.unlink(partial)
            if resumed and attempt == 1:
                continue
            raise FetchError(
                "%s: SHA-256 is %s but the listing says %s; the download was removed. The mirror "
                "serves a different file than its checksum (or the file changed under the same "
                "name): fix the mirror, then run again" % (url, hexdigest, sha256)
            )
        return {"sha256": hexdigest, "size": offset + received, "resumed_from": offset}
    raise FetchError(
        "GET %s: the partial download did not match and a fresh one did not either" % url
    )


def _hash_file_into(path, digest):
    with open(path, "rb") as handle:
        while True:
            block = handle.read(CHUNK)
            if not block:
                return digest
            digest.update(block)
