# -*- coding: utf-8 -*-
"""Filter: the download URL of one file from a Python package index's project page.

    {{ page | llm_index_file_url(page_url, 'llama_cpp_python-0.3.36.tar.gz') }}

``page`` is the project page of a simple repository API: the JSON form (PEP 691, a dict with
``files``) or the HTML form (PEP 503, links). Relative links are resolved against ``page_url``
(the page's final URL); a ``#sha256=...`` fragment is dropped (the caller checks the digest it
pins, not the one the page claims). Fails when the page does not list the file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from html import unescape
from urllib.parse import urldefrag, urljoin

from ansible.errors import AnsibleFilterError

_HREF = re.compile(r"""<a\s[^>]*?href\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)


def _links(page):
    if isinstance(page, dict):
        for entry in page.get("files") or []:
            if isinstance(entry, dict) and entry.get("url"):
                yield entry.get("filename") or "", entry["url"]
        return
    for match in _HREF.finditer(str(page)):
        href = unescape(match.group(1) if match.group(1) is not None else match.group(2))
        yield "", href


def index_file_url(page, page_url, filename):
    for name, href in _links(page):
        url = urldefrag(urljoin(page_url, href))[0]
        if (name or url.rsplit("/", 1)[-1]) == filename:
            return url
    raise AnsibleFilterError("the package index page %s does not list %s" % (page_url, filename))


class FilterModule(object):
    def filters(self):
        return {"llm_index_file_url": index_file_url}
