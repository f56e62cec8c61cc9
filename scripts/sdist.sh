# sdist.sh: sourced by the scripts that build a C/C++ dependency from its PyPI source
# distribution (scripts/build-llama-server.sh, scripts/build-llama-quantize.sh,
# scripts/build-xgrammar.sh): the network here reaches PyPI, and pinning the sdist pins the
# sources.
#
#   sdist_need_tools cmake g++ ...           # exits with a message naming a missing tool
#   sdist_fetch NAME VERSION DIR [SHA256]    # downloads NAME==VERSION's sdist into DIR, checks
#                                            # its sha256 when given, unpacks it there; prints
#                                            # the unpacked tree's path
#   sdist_llama_tool TARGET DEST CMAKE_ARG...  # (below) one llama.cpp binary

sdist_need_tools() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool is missing" >&2; exit 1; }
    done
}

sdist_fetch() {
    local name=$1 version=$2 dir=$3 sha=${4:-}
    # the venv's pip when the system one is absent
    local pip="python3 -m pip"
    python3 -m pip --version >/dev/null 2>&1 || pip="$(dirname "${BASH_SOURCE[0]}")/../.venv/bin/python -m pip"
    echo "$(basename "$0"): downloading $name==$version (sdist)" >&2
    $pip download -q --disable-pip-version-check --no-binary "$name" --no-deps "$name==$version" -d "$dir/dl" >&2
    local tarball
    tarball=$(ls "$dir"/dl/*.tar.gz)
    if [ -n "$sha" ]; then
        echo "$sha  $tarball" | sha256sum -c --quiet - >&2 ||
            { echo "$(basename "$0"): the sha256 of $tarball does not match the pin" >&2; exit 1; }
    fi
    tar -xzf "$tarball" -C "$dir"
    ls -d "$dir"/*/ | grep -v '/dl/$' | head -n1 | sed 's|/$||'
}

# sdist_llama_tool TARGET DEST CMAKE_ARG...: builds llama.cpp's TARGET (llama-server,
# llama-quantize) from the llama.cpp tree vendored in the llama-cpp-python $VERSION sdist, in a
# temporary directory, with the given cmake options, under `nice` with -j$JOBS; copies the binary
# to DEST/TARGET atomically and writes DEST/BUILD-INFO. Prints the binary's path last.
sdist_llama_tool() {
    local target=$1 dest=$2
    shift 2
    sdist_need_tools cmake g++ make python3
    local work src
    work=$(mktemp -d "${TMPDIR:-/tmp}/$target-build.XXXXXX")
    # shellcheck disable=SC2064 # expand now: $work is local
    trap "rm -rf '$work'" EXIT
    # the sdist carries vendor/llama.cpp (the wheel does not)
    src=$(sdist_fetch llama-cpp-python "$VERSION" "$work")/vendor/llama.cpp
    [ -f "$src/CMakeLists.txt" ] || { echo "$(basename "$0"): no llama.cpp tree in $src" >&2; exit 1; }
    echo "$(basename "$0"): configuring ($*)" >&2
    nice cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "$@" >&2
    echo "$(basename "$0"): building $target with -j$JOBS (takes a while on 2 cores)" >&2
    nice cmake --build "$work/build" --target "$target" -j "$JOBS" >&2
    mkdir -p "$dest"
    cp "$work/build/bin/$target" "$dest/$target.tmp"
    mv "$dest/$target.tmp" "$dest/$target"    # atomic: a half-copied binary never counts
    echo "llama-cpp-python $VERSION sdist, vendor/llama.cpp, $*, built $(date -u +%FT%TZ) on $(uname -m)" \
        >"$dest/BUILD-INFO"
    echo "$(basename "$0"): done" >&2
    echo "$dest/$target"
}
