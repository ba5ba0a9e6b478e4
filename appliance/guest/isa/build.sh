#!/usr/bin/env bash
# Builds the ISA test programs (programs/*.c, programs/*.S) and the benchmark guests (bench/*.c)
# with the shared runtime into ${UNDERSTUDY_CACHE:-$HOME/.cache/understudy}/isa/<source hash>/
# and prints that directory. A directory that already exists is reused as is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${UNDERSTUDY_CACHE:-${HOME:-/tmp}/.cache/understudy}/isa"
cc=riscv64-unknown-elf-gcc

if ! command -v "$cc" >/dev/null; then
    echo "error: $cc not found; run tools/install-prerequisites" >&2
    exit 2
fi

# The hash covers every source file (by relative path and content) and the compiler version.
hash="$(
    cd "$here"
    {
        find . -type f \( -name '*.c' -o -name '*.h' -o -name '*.S' -o -name '*.ld' -o -name '*.sh' \) \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        "$cc" --version | head -n1
    } | sha256sum | cut -c1-16
)"
out="$cache/$hash"
if [ -d "$out" ]; then
    echo "$out"
    exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

flags=(
    -march=rv64gc_zicsr_zifencei -mabi=lp64d -mcmodel=medany
    -O2 -g -ffreestanding -fno-builtin -fno-common -nostdlib -nostartfiles -static
    -Wall -Wextra -Werror -Wno-unused-parameter
    -I "$here/runtime" -T "$here/runtime/link.ld" -Wl,--no-warn-rwx-segments
)
runtime=("$here/runtime/start.S" "$here/runtime/rt.c")
for src in "$here"/programs/*.c "$here"/programs/*.S "$here"/bench/*.c; do
    [ -e "$src" ] || continue
    name="$(basename "${src%.*}")"
    "$cc" "${flags[@]}" -o "$tmp/$name.elf" "${runtime[@]}" "$src" -lgcc
done

# Publish atomically: a concurrent build of the same hash may have won the race.
if mv -T "$tmp" "$out" 2>/dev/null; then
    trap - EXIT
else
    rm -rf "$tmp"
fi
echo "$out"
