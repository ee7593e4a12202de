#!/usr/bin/env bash
# Regenerates the hash-pinned locks of the service venvs (roles/python_runtime/files/locks/):
# for every <name>-py<X.Y>.in there, `uv pip compile --generate-hashes` writes <name>-py<X.Y>.txt
# for Python X.Y on x86_64 Linux (glibc), keeping out the packages of <name>-py<X.Y>.excludes when
# that file exists. python_runtime installs a venv with `--require-hashes` against its lock.
#
#   bash tests/locks/regenerate.sh              # all locks
#   bash tests/locks/regenerate.sh open-webui   # only locks whose file name starts with this
#   bash tests/locks/regenerate.sh uv           # only uv's own lock (roles/python_runtime/files/uv-<version>.txt)
#
# Then: pytest -q tests/unit/test_locks.py, review `git diff --stat`, commit the .in and .txt together.
#
# Environment:
#   UV                   uv binary (default: uv on PATH, else /work/main/.venv/bin/uv); use the bundle's
#                        version (python_runtime_uv_version) so that the output format stays the same
#   LLM_BUNDLE_CACHE     cache root (default /var/cache/llm-bundle); its wheelhouse/ is searched (find-links)
#                        for torch 2.13.0+cpu, which PyPI lacks (tests/assets/fetch-torch-cpu-wheel.sh puts it there)
#   LOCK_FIND_LINKS      more find-links locations, space-separated (default: none)
#   LOCK_EXTRA_INDEX_URLS extra indexes, space-separated, e.g. https://download.pytorch.org/whl/cpu (default: none)
#   UV_INDEX_URL / UV_DEFAULT_INDEX  an internal PyPI mirror, as for uv itself
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
locks="$repo/roles/python_runtime/files/locks"
cache=${LLM_BUNDLE_CACHE:-/var/cache/llm-bundle}
platform=x86_64-unknown-linux-gnu

uv=${UV:-$(command -v uv || echo /work/main/.venv/bin/uv)}
if ! "$uv" --version >/dev/null 2>&1; then
  echo "uv not found (set UV=/path/to/uv; pip install uv==<python_runtime_uv_version>)" >&2
  exit 1
fi
want_uv=$(sed -n 's/^python_runtime_uv_version: "\(.*\)"$/\1/p' "$repo/roles/python_runtime/defaults/main.yml")
have_uv=$("$uv" --version | awk '{print $2}')
if [ "$have_uv" != "$want_uv" ]; then
  echo "note: uv $have_uv here, the hosts run uv $want_uv (python_runtime_uv_version)" >&2
fi

sources=()
[ -d "$cache/wheelhouse" ] && sources+=(--find-links "$cache/wheelhouse")
for f in ${LOCK_FIND_LINKS:-}; do sources+=(--find-links "$f"); done
for u in ${LOCK_EXTRA_INDEX_URLS:-}; do sources+=(--extra-index-url "$u"); done

# uv itself (python_runtime installs it with pip --require-hashes into its own venv): every file of the release,
# any platform, for python_runtime_uv_version.
if [ -z "${1:-}" ] || [[ "uv" == "${1}"* ]]; then
  "$uv" pip compile --quiet --generate-hashes --universal --no-header --no-annotate - <<<"uv==$want_uv" \
    | { echo "# uv for python_runtime's own venv (pip install --require-hashes): every file of the release."
        echo "# Regenerate: bash tests/locks/regenerate.sh uv"; cat; } > "$repo/roles/python_runtime/files/uv-$want_uv.txt"
  echo "roles/python_runtime/files/uv-$want_uv.txt: $(grep -c -- '--hash=sha256:' "$repo/roles/python_runtime/files/uv-$want_uv.txt") hashes"
  [ "${1:-}" = uv ] && exit 0
fi

cd "$locks"
shopt -s nullglob
done_any=0
for in_file in "${1:-}"*.in; do
  name=${in_file%.in}
  py=${name##*-py}
  if ! [[ "$py" =~ ^3\.[0-9]+$ ]]; then
    echo "$in_file: the name must end in -py<X.Y>.in (the venv's Python)" >&2
    exit 1
  fi
  args=(--generate-hashes --python-version "$py" --python-platform "$platform" --index-strategy first-index)
  [ -f "$name.excludes" ] && args+=(--excludes "$name.excludes")
  start=$(date +%s)
  # uv's header records this command line (without the find-links and indexes, which are
  # machine-specific); python_runtime reads --python-version and --python-platform from it.
  # uv writes the output file only when the resolution succeeds.
  "$uv" pip compile --quiet "${args[@]}" "${sources[@]}" "$in_file" -o "$name.txt"
  echo "$name.txt: $(grep -c -E '^[A-Za-z0-9]' "$name.txt") packages in $(( $(date +%s) - start ))s"
  done_any=1
done
if [ "$done_any" = 0 ]; then
  echo "no lock input matches '${1:-}*.in' in $locks" >&2
  exit 1
fi
