#!/usr/bin/env bash
# Regenerates the variable tables of every role README from its meta/argument_specs.yml with
# aar-doc (pinned in requirements.txt): only the part between <!-- BEGIN_ANSIBLE_DOCS --> and
# <!-- END_ANSIBLE_DOCS --> is rewritten (aar-doc's inject mode), the rest of each README stays.
#   bash tests/docs/regenerate.sh [BUNDLE_DIR]     (default: this bundle; `make docs`)
# tests/unit/test_docs_from_specs.py runs it on a copy and fails when a table drifted.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "${1:-$here/../..}" && pwd)"
aar_doc="${AAR_DOC:-aar-doc}"
for spec in "$root"/roles/*/meta/argument_specs.yml; do
  role="$(dirname "$(dirname "$spec")")"
  # --config-file: an absent file, so a stray .aar_doc.yml in the working directory changes nothing.
  (cd "$role" && "$aar_doc" --config-file "$here/.no-aar-doc-config" \
     --output-template "$here/variables.md.j2" --output-mode inject . markdown)
done
