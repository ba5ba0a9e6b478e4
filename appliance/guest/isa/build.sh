#!/usr/bin/env bash
# Builds the ISA test programs (programs/*.c, programs/*.S) and the benchmark guests (bench/*.c)
# with the shared runtime, and the benchmark guests for the host CPU (<name>.native), into
# ${UNDERSTUDY_CACHE:-$HOME/.cache/understudy}/isa/<source hash>/
# and prints that directory. A directory that already exists is reused as is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${UNDERSTUDY_CACHE:-${HOME:-/tmp}/.cache/understudy}/isa"
cc=riscv64-unknown-elf-gcc
host_cc=cc

for compiler in "$cc" "$host_cc"; do
    if ! command -v "$compiler" >/dev/null; then
        echo "error: $compiler not found; run tools/install-prerequisites" >&2
        exit 2
    fi
done

# The native builds: the guests' rv64gc has no vector unit, so neither may the host code
# (gcc vectorizes at -O2 since 12); and the guests' gcc contracts a * b + c into fmadd, so
# the host's contracts it too where the CPU has FMA, for the same floating-point checksums.
native_flags=(-O2 -fno-tree-vectorize -Wall -Wextra -Werror -I "$here/runtime/native")
if grep -qw fma /proc/cpuinfo; then
    native_flags+=(-mfma)
fi

# The hash covers every source file (by relative path and content), the compilers' versions
# and the native flags.
hash="$(
    cd "$here"
    {
        find . -type f \( -name '*.c' -o -name '*.h' -o -name '*.S' -o -name '*.ld' -o -name '*.sh' \) \
            -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
        "$cc" --version | head -n1
        "$host_cc" --version | head -n1
        echo "${native_flags[*]}"
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
for src in "$here"/bench/*.c; do
    "$host_cc" "${native_flags[@]}" -o "$tmp/$(basename "${src%.c}").native" "$src" -lm
done

# Publish atomically: a concurrent build of the same hash may have won the race.
if mv -T "$tmp" "$out" 2>/dev/null; then
    trap - EXIT
else
    rm -rf "$tmp"
fi
echo "$out"
