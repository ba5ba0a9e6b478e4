# guest/build step: a static riscv64 busybox cross-built from Debian bookworm's busybox source
# package, fetched with `apt-get source` through a private deb-src configuration.

busybox_apt_config() { private_apt "$cache/apt/bookworm-src" amd64 bookworm deb-src; }

# Source version from the private Sources index (part of the cache key).
busybox_source_version() {
    local version
    version=$(APT_CONFIG=$1 apt-cache showsrc --only-source busybox 2>/dev/null |
        awk '/^Version:/ { print $2 }' | sort -V | tail -n 1)
    [ -n "$version" ] || die "busybox source package not found in the bookworm deb-src index"
    printf '%s\n' "$version"
}

busybox_key() {
    cache_key "$guest_dir/lib/busybox.sh" "$guest_dir/busybox/understudy.config" \
        "busybox-source=$1" \
        "gcc-riscv64-linux-gnu=$(installed_version gcc-riscv64-linux-gnu)" \
        "libc6-dev-riscv64-cross=$(installed_version libc6-dev-riscv64-cross)"
}

# Sets busybox_dir to the directory that holds (or will hold) busybox and busybox.links.
busybox_locate() {
    local config
    config=$(busybox_apt_config)
    private_apt_update "$config"
    busybox_version=$(busybox_source_version "$config")
    busybox_dir=$cache/busybox-$(busybox_key "$busybox_version")
    busybox_config=$config
}

build_busybox() {
    busybox_locate
    if [ -x "$busybox_dir/busybox" ]; then
        say "busybox: cached ($busybox_dir)"
        return
    fi
    local work=$cache/work/busybox-${busybox_dir##*-}
    rm -rf "$work"
    mkdir -p "$work"
    run_logged "fetching busybox $busybox_version source (apt-get source)" "$work/source.log" \
        env -C "$work" APT_CONFIG="$busybox_config" apt-get source --download-only "busybox=$busybox_version"
    local dsc
    dsc=$(ls "$work"/busybox_*.dsc)
    # apt-get source checked the files against the signed Sources index; unpack them with the
    # Debian patches applied.
    run_logged "unpacking busybox source" "$work/unpack.log" \
        dpkg-source --no-check -x "$dsc" "$work/src"
    local src=$work/src
    # Debian's own configuration for its static busybox flavour, then our changes on top.
    cp "$src/debian/config/pkg/static" "$src/.config"
    local line name
    while IFS= read -r line; do
        case $line in
        CONFIG_*=*) name=${line%%=*} ;;
        "# CONFIG_"*" is not set") name=${line#\# }; name=${name%% *} ;;
        *) continue ;;
        esac
        sed -i -e "/^$name=/d" -e "/^# $name is not set\$/d" "$src/.config"
        printf '%s\n' "$line" >>"$src/.config"
    done <"$guest_dir/busybox/understudy.config"
    # Reproducible builds: the version banner's timestamp is the changelog date
    # (SOURCE_DATE_EPOCH, which busybox's kconfig honours), not the time of the build.
    local epoch
    epoch=$(dpkg-parsechangelog -l "$src/debian/changelog" -STimestamp) || die "cannot read busybox's changelog date"
    export SOURCE_DATE_EPOCH=$epoch
    (cd "$src" && { yes '' || true; } | make oldconfig) >"$work/config.log" 2>&1 || die "busybox oldconfig failed; see $work/config.log"
    run_logged "building static busybox for riscv64" "$work/build.log" \
        make -C "$src" -j"$jobs" busybox busybox.links
    riscv64-linux-gnu-readelf -h "$src/busybox" | grep -q 'RISC-V' || die "busybox was not built for RISC-V"
    if riscv64-linux-gnu-readelf -l "$src/busybox" | grep -q 'INTERP'; then
        die "busybox is not static"
    fi
    mkdir -p "$busybox_dir.partial"
    cp "$src/busybox" "$src/busybox.links" "$src/.config" "$busybox_dir.partial/"
    mv "$busybox_dir.partial/.config" "$busybox_dir.partial/config"
    rm -rf "$busybox_dir"
    mv "$busybox_dir.partial" "$busybox_dir"
    [ "${UNDERSTUDY_KEEP_WORK:-0}" = 1 ] || rm -rf "$work"
    say "busybox: $busybox_dir/busybox ($(stat -c %s "$busybox_dir/busybox") bytes)"
}
