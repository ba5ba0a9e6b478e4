# guest/build step: the fast test guest's kernel, a minimal riscv64 Linux 6.1 `Image` built
# from Debian's linux-source-6.1 with tinyconfig plus guest/linux-6.1/understudy.config.

cross=riscv64-linux-gnu-

# Extracts the Debian kernel source tarball once per package version; prints the tree's path.
linux_source_tree() {
    local version tree
    version=$(installed_version linux-source-6.1)
    tree=$cache/src/linux-source-6.1_$version
    if [ ! -f "$tree/.understudy-extracted" ]; then
        [ "$print_only" = 0 ] || die "kernel source not extracted; run guest/build first"
        rm -rf "$tree" "$tree.partial"
        mkdir -p "$tree.partial"
        run_logged "extracting linux-source-6.1 $version" "$cache/src/extract.log" \
            tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$tree.partial" --strip-components=1
        mv "$tree.partial" "$tree"
        touch "$tree/.understudy-extracted"
    fi
    printf '%s\n' "$tree"
}

linux_key() {
    cache_key "$guest_dir/lib/linux-6.1.sh" "$guest_dir/linux-6.1/understudy.config" \
        "linux-source-6.1=$(installed_version linux-source-6.1)" \
        "gcc-riscv64-linux-gnu=$(installed_version gcc-riscv64-linux-gnu)" \
        "binutils-riscv64-linux-gnu=$(installed_version binutils-riscv64-linux-gnu)"
}

# Prints the directory holding Image and config for the current inputs.
linux_output() { printf '%s\n' "$cache/linux-6.1-$(linux_key)"; }

build_linux() {
    local out tree work fragment
    out=$(linux_output)
    if [ -f "$out/Image" ]; then
        say "linux 6.1 Image: cached ($out)"
        return
    fi
    tree=$(linux_source_tree)
    work=$cache/work/linux-6.1-$(linux_key)
    fragment=$guest_dir/linux-6.1/understudy.config
    mkdir -p "$work"
    # Reproducible builds: the timestamp is the package's changelog date (the
    # SOURCE_DATE_EPOCH convention), used for the version banner and the built-in initramfs.
    local epoch
    zcat /usr/share/doc/linux-source-6.1/changelog.Debian.gz >"$work/changelog" &&
        epoch=$(dpkg-parsechangelog -l "$work/changelog" -STimestamp) ||
        die "cannot read the date of linux-source-6.1 from its changelog"
    local make_args=(-C "$tree" O="$work" ARCH=riscv CROSS_COMPILE=$cross
        KBUILD_BUILD_USER=understudy KBUILD_BUILD_HOST=understudy KBUILD_BUILD_VERSION=1
        KBUILD_BUILD_TIMESTAMP="$(date -u -d "@$epoch")")
    say "configuring linux 6.1: tinyconfig + $fragment"
    make "${make_args[@]}" tinyconfig >"$work/config.log" 2>&1 || die "make tinyconfig failed; see $work/config.log"
    (cd "$work" && "$tree/scripts/kconfig/merge_config.sh" -m -O "$work" "$work/.config" "$fragment") \
        >>"$work/config.log" 2>&1 || die "merge_config.sh failed; see $work/config.log"
    make "${make_args[@]}" olddefconfig >>"$work/config.log" 2>&1 || die "make olddefconfig failed; see $work/config.log"
    # Kconfig silently drops options whose dependencies are unmet; refuse such a config.
    local line dropped=()
    while IFS= read -r line; do
        case $line in
        CONFIG_*=* | "# CONFIG_"*" is not set") grep -qxF -- "$line" "$work/.config" || dropped+=("$line") ;;
        esac
    done <"$fragment"
    ((${#dropped[@]} == 0)) || die "kconfig did not keep: ${dropped[*]} (unmet dependencies; see $work/.config)"
    run_logged "building linux 6.1 Image with make -j$jobs (6 to 8 minutes on 2 idle cores)" "$work/build.log" \
        make "${make_args[@]}" -j"$jobs" Image
    mkdir -p "$out.partial"
    cp "$work/arch/riscv/boot/Image" "$work/.config" "$out.partial/"
    mv "$out.partial/.config" "$out.partial/config"
    rm -rf "$out"
    mv "$out.partial" "$out"
    [ "${UNDERSTUDY_KEEP_WORK:-0}" = 1 ] || rm -rf "$work"
    say "linux 6.1 Image: $out/Image ($(stat -c %s "$out/Image") bytes)"
}

# The kernel tree's usr/gen_init_cpio, compiled for the host: makes initramfs archives from a
# text list, with owners and modes given in the list, so no root is needed.
gen_init_cpio() {
    local tool=$cache/tools/gen_init_cpio-$(installed_version linux-source-6.1)
    if [ ! -x "$tool" ]; then
        local tree
        tree=$(linux_source_tree)
        mkdir -p "$cache/tools"
        gcc -O2 -o "$tool.partial" "$tree/usr/gen_init_cpio.c" || die "compiling usr/gen_init_cpio.c failed"
        mv "$tool.partial" "$tool"
    fi
    "$tool" "$@"
}
