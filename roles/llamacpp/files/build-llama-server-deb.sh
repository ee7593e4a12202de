#!/usr/bin/env bash
# Build llama.cpp's own `llama-server` from the pinned llama-cpp-python sdist (which vendors
# llama.cpp under vendor/llama.cpp) and package it as a Debian package, once per variant.
#
#   build-llama-server-deb.sh --sdist PATH --variant NAME --outdir DIR \
#       [--cmake-args "ARGS"] [--jobs N] [--revision N] [--force]
#
# Every flag has an environment variable (flags win):
#   --sdist       LLAMA_SERVER_SDIST       llama_cpp_python-<ver>.tar.gz (required)
#   --variant     LLAMA_SERVER_VARIANT     e.g. debian12-cpu, debian12-cuda12.3,
#                                          debian12-cuda12.3-sm60-75-80-86-89-90 (required)
#   --outdir      LLAMA_SERVER_OUTDIR      where the .deb and its .sha256 go (required)
#   --cmake-args  LLAMA_SERVER_CMAKE_ARGS  the variant's cmake arguments (one string, split on
#                                          blanks). Default: the portable CPU set below. A CUDA
#                                          variant passes that set plus -DGGML_CUDA=on
#                                          -DCMAKE_CUDA_ARCHITECTURES=...
#   --jobs        LLAMA_SERVER_JOBS        compile jobs (default: nproc)
#   --revision    LLAMA_SERVER_REVISION    Debian revision, bump to rebuild the same source (default 1)
#   --force       LLAMA_SERVER_FORCE=1     rebuild even when the .deb exists
#   --log         LLAMA_SERVER_LOG         also write all output to this file (the role shows its last line)
#
# Output: <outdir>/llm-llama-server_<version>_amd64.deb and <outdir>/<same>.deb.sha256
#
# Version: <llama-cpp-python version>-<revision>+<variant, '-' replaced by '.'>, e.g.
#   0.3.36-2+debian12.cpu   0.3.36-2+debian12.cuda12.3.sm60.75.80.86.89.90
# The upstream part is the sdist's version (the pin the bundle talks about); a newer sdist
# sorts above every build of an older one, a higher revision above a lower one. The variant
# rides in the Debian revision because '-' is not allowed there; it makes every variant's
# file name distinct, and the variants of one pin never need to sort against each other (a host
# installs one variant and the bundle holds it with apt-mark hold).
#
# Layout inside the package (private prefix, nothing in /usr/lib, no ldconfig needed):
#   /opt/llm/llama.cpp/bin/llama-server        RUNPATH $ORIGIN/../lib
#   /opt/llm/llama.cpp/bin/llama-quantize      (GGUF quantizer, same libraries; the test assets use it)
#   /opt/llm/llama.cpp/lib/lib*.so*            exactly the libraries llama-server needs
#                                              (readelf NEEDED, followed recursively) from
#                                              the build; RUNPATH $ORIGIN/../lib too
#   /opt/llm/llama.cpp/BUILD-INFO              variant, source pin and sha256, cmake args,
#                                              compiler and cmake versions
#   /usr/share/doc/llm-llama-server/copyright  llama.cpp's licence (+ vendored ones)
# The RUNPATH comes from CMake itself (CMAKE_INSTALL_RPATH + CMAKE_BUILD_WITH_INSTALL_RPATH),
# so no patchelf is needed; the script checks it with readelf.
#
# The build is offline: the vendored tree carries every source; the web UI download, curl,
# OpenSSL, tests and examples are switched off. LLAMA_CURL is kept for older trees (0.3.36's
# CMakeLists marks it deprecated and ignores it). OpenSSL is off on purpose: llama-server
# listens on 127.0.0.1 behind the bundle's nginx, and whether libssl-dev happens to be
# installed on the build machine must not change the package's dependencies.
set -euo pipefail

PKG=llm-llama-server
PREFIX=/opt/llm/llama.cpp
DEFAULT_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_BMI2=ON -DGGML_BLAS=OFF"
# Fixed, for every variant: offline, server only, release, rpath into the private prefix.
FIXED_CMAKE_ARGS=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=ON
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_UI=OFF
  -DLLAMA_USE_PREBUILT_UI=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=ON
  -DGGML_CCACHE=OFF
  "-DCMAKE_INSTALL_RPATH=\$ORIGIN/../lib"
  -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON
)

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "build-llama-server-deb: $*" >&2; exit 1; }

SDIST="${LLAMA_SERVER_SDIST:-}"
VARIANT="${LLAMA_SERVER_VARIANT:-}"
OUTDIR="${LLAMA_SERVER_OUTDIR:-}"
CMAKE_ARGS_STR="${LLAMA_SERVER_CMAKE_ARGS:-$DEFAULT_CMAKE_ARGS}"
JOBS="${LLAMA_SERVER_JOBS:-$(nproc)}"
# 2: the package also carries llama-quantize (the test assets quantize with it).
REVISION="${LLAMA_SERVER_REVISION:-2}"
FORCE="${LLAMA_SERVER_FORCE:-0}"
LOG="${LLAMA_SERVER_LOG:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --sdist) SDIST="${2:?--sdist needs a path}"; shift 2 ;;
    --variant) VARIANT="${2:?--variant needs a name}"; shift 2 ;;
    --outdir) OUTDIR="${2:?--outdir needs a directory}"; shift 2 ;;
    --cmake-args) CMAKE_ARGS_STR="${2?--cmake-args needs a string}"; shift 2 ;;
    --jobs) JOBS="${2:?--jobs needs a number}"; shift 2 ;;
    --revision) REVISION="${2:?--revision needs a number}"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --log) LOG="${2:?--log needs a file}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done

if [ -n "$LOG" ]; then
  mkdir -p "$(dirname "$LOG")"
  : > "$LOG"
  exec > >(tee -a "$LOG") 2>&1
fi

[ -n "$SDIST" ] || die "no sdist: pass --sdist /var/cache/llm-bundle/sdist/llama_cpp_python-0.3.36.tar.gz"
[ -f "$SDIST" ] || die "sdist not found: $SDIST"
[ -n "$OUTDIR" ] || die "no output directory: pass --outdir DIR"
[[ "$VARIANT" =~ ^[a-z0-9][a-z0-9.-]*$ ]] \
  || die "variant '$VARIANT' must be lower-case letters, digits, '.' and '-' (e.g. debian12-cpu)"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "--jobs must be a positive number, got '$JOBS'"
[[ "$REVISION" =~ ^[1-9][0-9]*$ ]] || die "--revision must be a positive number, got '$REVISION'"

read -r -a EXTRA_CMAKE_ARGS <<< "$CMAKE_ARGS_STR"
# A variant's name says what it is; refuse args that contradict it (a "cpu" .deb linking
# libcudart would fail on every CPU host, a "cuda" one without CUDA is silently slow).
has_cuda=0
for a in "${EXTRA_CMAKE_ARGS[@]}"; do
  case "${a,,}" in -dggml_cuda=on|-dggml_cuda=1|-dggml_cuda=yes|-dggml_cuda=true) has_cuda=1 ;; esac
done
case "$VARIANT" in
  *cuda*) [ "$has_cuda" = 1 ] || die "variant '$VARIANT' names CUDA but --cmake-args lack -DGGML_CUDA=on" ;;
  *) [ "$has_cuda" = 0 ] || die "variant '$VARIANT' does not name CUDA but --cmake-args set -DGGML_CUDA=on (call it e.g. debian12-cuda12.3)" ;;
esac
# ggml-cuda links NCCL whenever the builder happens to have it (GGML_CUDA_NCCL defaults to ON), which
# adds a libnccl2 dependency that GPU hosts without NCCL cannot satisfy. NCCL only speeds up the
# all-reduce of a tensor-parallel split (ggml has its own fallback); the planner splits llama.cpp over
# several GPUs by layer. Off unless the cmake args ask for it: the package must not depend on what
# the builder happens to have (measured on the H200 builder: Depends gained libnccl2).
if [ "$has_cuda" = 1 ] && [[ "${CMAKE_ARGS_STR^^}" != *GGML_CUDA_NCCL* ]]; then
  EXTRA_CMAKE_ARGS+=(-DGGML_CUDA_NCCL=OFF)
fi

for tool in cmake c++ cc dpkg-deb readelf sha256sum tar; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is needed (apt-get install build-essential cmake dpkg-dev binutils)"
done

# The version comes from the sdist's own metadata, not its file name.
top="$(tar -tzf "$SDIST" | head -n 1 | cut -d/ -f1)" || true
[ -n "$top" ] || die "cannot list $SDIST"
UPSTREAM_VERSION="$(tar -xzOf "$SDIST" "$top/PKG-INFO" | sed -n 's/^Version: //p' | head -n 1)"
[[ "$UPSTREAM_VERSION" =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || die "no usable Version in $top/PKG-INFO: '$UPSTREAM_VERSION'"
DEB_VERSION="${UPSTREAM_VERSION}-${REVISION}+${VARIANT//-/.}"
ARCH=amd64
[ "$(dpkg --print-architecture 2>/dev/null || echo amd64)" = "$ARCH" ] || die "only amd64 builds are supported"
DEB_NAME="${PKG}_${DEB_VERSION}_${ARCH}.deb"

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
if [ "$FORCE" != 1 ] && [ -s "$OUTDIR/$DEB_NAME" ] && [ -s "$OUTDIR/$DEB_NAME.sha256" ]; then
  echo "llama-server deb: skipped (cached) $OUTDIR/$DEB_NAME"
  exit 0
fi

start=$(date +%s)
work="$(mktemp -d "${TMPDIR:-/tmp}/llama-server-deb.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "llama-server deb: unpacking $SDIST"
tar -xzf "$SDIST" -C "$work"
SRC="$work/$top/vendor/llama.cpp"
[ -f "$SRC/tools/server/CMakeLists.txt" ] || die "$SDIST has no vendor/llama.cpp/tools/server"
SDIST_SHA256="$(sha256sum "$SDIST" | cut -d' ' -f1)"
ggml_v() { sed -n "s/^set(GGML_VERSION_$1 \([0-9]*\))/\1/p" "$SRC/ggml/CMakeLists.txt"; }
GGML_VERSION="$(ggml_v MAJOR).$(ggml_v MINOR).$(ggml_v PATCH)"
[[ "$GGML_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read the ggml version from $SRC/ggml/CMakeLists.txt"
# The sdist carries no git metadata: llama.cpp's build number/commit would read 0/unknown.
# Stamp the binary with the pin instead (shown by llama-server --version).
BUILD_COMMIT="llama-cpp-python-${UPSTREAM_VERSION}"

generator=()
if command -v ninja >/dev/null 2>&1; then generator=(-G Ninja); fi
CMAKE_ALL=("${FIXED_CMAKE_ARGS[@]}" "-DLLAMA_BUILD_COMMIT=$BUILD_COMMIT" -DLLAMA_BUILD_NUMBER=0 "${EXTRA_CMAKE_ARGS[@]}")

echo "llama-server deb: configuring $PKG $DEB_VERSION (llama.cpp/ggml $GGML_VERSION)"
echo "  cmake ${CMAKE_ALL[*]}"
cmake -S "$SRC" -B "$work/build" "${generator[@]}" "${CMAKE_ALL[@]}" > "$work/configure.log" 2>&1 \
  || { tail -n 40 "$work/configure.log" >&2; die "cmake configure failed"; }
build_start=$(date +%s)
echo "llama-server deb: building targets llama-server llama-quantize with $JOBS jobs (${generator[1]:-Unix Makefiles})"
cmake --build "$work/build" --target llama-server llama-quantize --parallel "$JOBS" > "$work/build.log" 2>&1 \
  || { tail -n 60 "$work/build.log" >&2; die "build failed"; }
build_secs=$(( $(date +%s) - build_start ))

BIN="$work/build/bin"
[ -x "$BIN/llama-server" ] || die "no $BIN/llama-server after the build"
[ -x "$BIN/llama-quantize" ] || die "no $BIN/llama-quantize after the build"

# Stage: the binary plus the closure of its NEEDED entries that the build produced
# (system libraries such as libc, libstdc++, libgomp, libcudart stay Depends).
root="$work/root"
mkdir -p "$root$PREFIX/bin" "$root$PREFIX/lib" "$root/DEBIAN" "$root/usr/share/doc/$PKG"
install -m 0755 "$BIN/llama-server" "$root$PREFIX/bin/llama-server"
install -m 0755 "$BIN/llama-quantize" "$root$PREFIX/bin/llama-quantize"
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*Shared library: \[\(.*\)\]/\1/p'; }
find_built_lib() {  # SONAME -> path in the build tree, or nothing
  find "$work/build" \( -type f -o -type l \) -name "$1" -print -quit
}
queue=("$root$PREFIX/bin/llama-server" "$root$PREFIX/bin/llama-quantize")
declare -A seen=()
while [ "${#queue[@]}" -gt 0 ]; do
  elf="${queue[0]}"; queue=("${queue[@]:1}")
  while read -r soname; do
    if [ -z "$soname" ] || [ -n "${seen[$soname]:-}" ]; then continue; fi
    seen[$soname]=1
    src="$(find_built_lib "$soname")"
    [ -n "$src" ] || continue   # a system library
    real="$(readlink -f "$src")"
    install -m 0644 "$real" "$root$PREFIX/lib/$(basename "$real")"
    [ "$(basename "$real")" = "$soname" ] || ln -sf "$(basename "$real")" "$root$PREFIX/lib/$soname"
    queue+=("$root$PREFIX/lib/$(basename "$real")")
  done < <(needed "$elf")
done
# shared objects: strip debug info (Release has none to speak of, but keep the .deb lean)
if command -v strip >/dev/null 2>&1; then
  find "$root$PREFIX" -type f \( -name llama-server -o -name llama-quantize -o -name '*.so*' \) -exec strip --strip-unneeded {} +
fi

# Every ELF must find its private libraries through RUNPATH $ORIGIN/../lib.
while read -r elf; do
  rp="$(readelf -d "$elf" | sed -n 's/.*(RUNPATH).*Library runpath: \[\(.*\)\]/\1/p')"
  # shellcheck disable=SC2016  # $ORIGIN is literal
  [ "$rp" = '$ORIGIN/../lib' ] || die "$elf has RUNPATH '$rp', want \$ORIGIN/../lib"
done < <(find "$root$PREFIX" -type f \( -name llama-server -o -name llama-quantize -o -name '*.so*' \))
missing="$(LD_LIBRARY_PATH='' ldd "$root$PREFIX/bin/llama-server" | grep 'not found' || true)"
if [ -n "$missing" ] && [ "$has_cuda" = 0 ]; then
  die "unresolved libraries: $missing"
fi

# Depends: dpkg-shlibdeps when it can (it needs a debian/control to run from), else a fixed list.
FALLBACK_DEPENDS="libc6 (>= 2.34), libgcc-s1 (>= 3.4), libgomp1 (>= 6), libstdc++6 (>= 12)"
depends=""
if command -v dpkg-shlibdeps >/dev/null 2>&1; then
  mkdir -p "$work/shlib/debian"
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" > "$work/shlib/debian/control"
  mapfile -t elves < <(find "$root$PREFIX" -type f \( -name llama-server -o -name llama-quantize -o -name '*.so*' \))
  if depends="$(cd "$work/shlib" && dpkg-shlibdeps -O --ignore-missing-info \
        -l"$root$PREFIX/lib" "${elves[@]}" 2> "$work/shlibdeps.log" | sed -n 's/^shlibs:Depends=//p')" \
      && [ -n "$depends" ]; then
    echo "llama-server deb: Depends from dpkg-shlibdeps"
  else
    echo "llama-server deb: dpkg-shlibdeps gave nothing ($(tail -n 1 "$work/shlibdeps.log")); fixed Depends" >&2
    depends=""
  fi
fi
[ -n "$depends" ] || depends="$FALLBACK_DEPENDS"
if [ "$has_cuda" = 1 ]; then
  # libcudart/libcublas come from NVIDIA's packages without shlibs info; the bundle's CUDA role
  # installs the runtime, so say so instead of guessing a package name that may not match.
  unresolved_cuda="$(LD_LIBRARY_PATH='' ldd "$root$PREFIX"/lib/libggml-cuda.so* 2>/dev/null | sed -n 's/^\s*\(\S*\) => not found/\1/p' | sort -u | tr '\n' ' ')"
  [ -z "$unresolved_cuda" ] || echo "llama-server deb: CUDA libraries expected from the host's CUDA runtime: $unresolved_cuda"
fi

compiler="$(c++ --version | head -n 1)"
nvcc_v=""
if [ "$has_cuda" = 1 ] && command -v nvcc >/dev/null 2>&1; then nvcc_v="$(nvcc --version | tail -n 2 | tr '\n' ' ')"; fi
{
  echo "package: $PKG $DEB_VERSION"
  echo "variant: $VARIANT"
  echo "source: $(basename "$SDIST") (llama-cpp-python $UPSTREAM_VERSION, vendor/llama.cpp, ggml $GGML_VERSION)"
  echo "source-sha256: $SDIST_SHA256"
  echo "cmake-args: ${CMAKE_ALL[*]}"
  echo "generator: ${generator[1]:-Unix Makefiles}"
  echo "cmake: $(cmake --version | head -n 1)"
  echo "compiler: $compiler"
  [ -z "$nvcc_v" ] || echo "nvcc: $nvcc_v"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"') ($(uname -m)), $build_secs s with $JOBS jobs"
  echo "depends: $depends"
  echo "files:"
  (cd "$root$PREFIX" && find bin lib \( -type f -o -type l \) | sort | sed 's/^/  /')
} > "$root$PREFIX/BUILD-INFO"
chmod 0644 "$root$PREFIX/BUILD-INFO"

{
  echo "llm-llama-server: llama.cpp's llama-server as vendored by llama-cpp-python $UPSTREAM_VERSION."
  echo "Built by the llm bundle (roles/llamacpp/files/build-llama-server-deb.sh); see $PREFIX/BUILD-INFO."
  echo
  echo "== llama.cpp (vendor/llama.cpp/LICENSE)"
  cat "$SRC/LICENSE"
  for f in "$SRC"/licenses/*; do
    [ -f "$f" ] || continue
    echo; echo "== $(basename "$f")"; cat "$f"
  done
} > "$root/usr/share/doc/$PKG/copyright"
chmod 0644 "$root/usr/share/doc/$PKG/copyright"

installed_kb="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat > "$root/DEBIAN/control" <<EOF
Package: $PKG
Version: $DEB_VERSION
Architecture: $ARCH
Maintainer: llm bundle <root@localhost>
Installed-Size: $installed_kb
Depends: $depends
Section: misc
Priority: optional
Description: llama.cpp llama-server ($VARIANT) for the llm bundle
 OpenAI-compatible HTTP server of llama.cpp, built from the llama.cpp tree
 vendored in the llama-cpp-python $UPSTREAM_VERSION sdist (ggml $GGML_VERSION),
 sdist sha256 $SDIST_SHA256.
 Installed under $PREFIX (bin/llama-server, lib/ with RUNPATH
 \$ORIGIN/../lib); build details in $PREFIX/BUILD-INFO.
 .
 cmake args: ${EXTRA_CMAKE_ARGS[*]}
EOF
find "$root" -type d -exec chmod 0755 {} +

dpkg-deb --root-owner-group -Zxz --build "$root" "$work/$DEB_NAME" >/dev/null
# temp name in the output dir, then rename: an interrupted run never leaves a complete-looking .deb
mv "$work/$DEB_NAME" "$OUTDIR/.$DEB_NAME.tmp"
(cd "$OUTDIR" && sha256sum ".$DEB_NAME.tmp" | sed "s/\.$DEB_NAME\.tmp\$/$DEB_NAME/" > ".$DEB_NAME.sha256.tmp")
mv "$OUTDIR/.$DEB_NAME.tmp" "$OUTDIR/$DEB_NAME"
mv "$OUTDIR/.$DEB_NAME.sha256.tmp" "$OUTDIR/$DEB_NAME.sha256"

end=$(date +%s)
echo "llama-server deb: built $OUTDIR/$DEB_NAME ($(du -h "$OUTDIR/$DEB_NAME" | cut -f1)) in $((end - start)) s (compile $build_secs s, $JOBS jobs)"
