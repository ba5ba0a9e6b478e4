# guest/build helper: packs a staged directory tree into an initramfs (newc cpio) with the
# kernel's gen_init_cpio, so ownership is root without running as root, and the archive is
# byte-for-byte reproducible (sorted entries, fixed timestamps, fixed owners).

# Writes the newc archive of TREE to OUT. Every entry is owned by 0:0 and keeps its mode; the
# console device node is added because the kernel opens /dev/console before /init runs.
cpio_from_tree() {
    local tree=$1 out=$2 list=$2.list
    find "$tree" -exec touch -h -d @0 {} +
    {
        printf 'dir /dev 0755 0 0\n'
        printf 'nod /dev/console 0600 0 0 c 5 1\n'
        (cd "$tree" && LC_ALL=C find . -mindepth 1 | LC_ALL=C sort) | while IFS= read -r path; do
            local name=${path#.} mode
            [ "$name" != /dev ] || continue
            mode=$(stat -c %a "$tree$name")
            if [ -L "$tree$name" ]; then
                printf 'slink %s %s 0777 0 0\n' "$name" "$(readlink "$tree$name")"
            elif [ -d "$tree$name" ]; then
                printf 'dir %s %s 0 0\n' "$name" "$mode"
            elif [ -f "$tree$name" ]; then
                printf 'file %s %s %s 0 0\n' "$name" "$tree$name" "$mode"
            else
                die "unsupported file type in initramfs tree: $tree$name"
            fi
        done
    } >"$list"
    gen_init_cpio -t 0 "$list" >"$out.partial" || die "gen_init_cpio failed for $list"
    mv "$out.partial" "$out"
}

# Stages the files every guest shares: /init, the web root, mount points.
stage_common() {
    local tree=$1
    mkdir -p "$tree"/{bin,sbin,etc,proc,sys,tmp,mnt,root,run,var/log,www}
    chmod 1777 "$tree/tmp"
    install -m 0755 "$guest_dir/init" "$tree/init"
    install -m 0755 "$guest_dir/counter" "$tree/bin/counter"
    install -m 0644 "$guest_dir/www/index.html" "$tree/www/index.html"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$tree/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tree/etc/group"
    chmod 0644 "$tree/etc/passwd" "$tree/etc/group"
}
