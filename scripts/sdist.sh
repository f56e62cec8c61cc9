# sdist.sh: sourced by the scripts that build a C/C++ dependency from its PyPI source
# distribution (scripts/build-llama-server.sh, scripts/build-xgrammar.sh): the network here
# reaches PyPI, and pinning the sdist pins the sources.
#
#   sdist_need_tools cmake g++ ...           # exits with a message naming a missing tool
#   sdist_fetch NAME VERSION DIR [SHA256]    # downloads NAME==VERSION's sdist into DIR, checks
#                                            # its sha256 when given, unpacks it there; prints
#                                            # the unpacked tree's path

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
