# guest/build step: the fast test guest's initramfs, the static busybox (with its applet
# links) plus /init and the web root.

minimal_key() {
    cache_key "$guest_dir/lib/minimal.sh" "$guest_dir/lib/initramfs.sh" "$guest_dir/init" \
        "$guest_dir/counter" "$guest_dir/www/index.html" "busybox=${busybox_dir##*/}" \
        "linux-source-6.1=$(installed_version linux-source-6.1)"
}

minimal_output() { printf '%s\n' "$cache/minimal-initramfs-$(minimal_key)"; }

build_minimal_initramfs() {
    local out tree
    out=$(minimal_output)
    if [ -f "$out/initramfs.cpio" ]; then
        say "minimal initramfs: cached ($out)"
        return
    fi
    tree=$cache/work/${out##*/}
    rm -rf "$tree"
    stage_common "$tree"
    install -m 0755 "$busybox_dir/busybox" "$tree/bin/busybox"
    # busybox.links names every applet by its install path (/bin/sh, /usr/sbin/httpd, ...).
    local link directory relative
    while IFS= read -r link; do
        [ "$link" != /bin/busybox ] || continue
        directory=${link%/*}
        directory=${directory:-/}
        mkdir -p "$tree$directory"
        relative=$(realpath -m --relative-to="$directory" /bin/busybox)
        ln -sfn "$relative" "$tree$link"
    done <"$busybox_dir/busybox.links"
    mkdir -p "$out.partial"
    say "packing minimal initramfs"
    cpio_from_tree "$tree" "$out.partial/initramfs.cpio"
    gzip -9 -n -c "$out.partial/initramfs.cpio" >"$out.partial/initramfs.cpio.gz"
    rm -rf "$out"
    mv "$out.partial" "$out"
    rm -rf "$tree"
    say "minimal initramfs: $out/initramfs.cpio ($(stat -c %s "$out/initramfs.cpio") bytes)"
}
