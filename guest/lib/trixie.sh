# guest/build step: the real-workload guest, built only from unmodified Debian trixie riscv64
# packages: the distribution kernel, busybox-static, redis-server and the shared libraries it
# needs, fetched through a private APT configuration and unpacked with dpkg-deb -x.

trixie_apt_config() { private_apt "$cache/apt/trixie-riscv64" riscv64 trixie deb; }

# Sets trixie_packages to sorted "name=version" lines: the kernel image package the
# linux-image-riscv64 metapackage points at, busybox-static, and redis-server with its
# dependency closure (where the binary's shared libraries come from).
trixie_resolve() {
    local config=$1 kernel_package
    kernel_package=$(APT_CONFIG=$config apt-cache depends linux-image-riscv64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    [ -n "$kernel_package" ] || die "linux-image-riscv64 has no kernel dependency in the trixie index"
    local simulated package version
    simulated=$(APT_CONFIG=$config apt-get -s -q install --no-install-recommends redis-server 2>&1) ||
        die "cannot resolve redis-server in the trixie index:
$simulated"
    trixie_packages=$(
        for package in "$kernel_package" busybox-static; do
            version=$(apt_candidate "$config" "$package")
            [ -n "$version" ] || die "$package is not in the trixie riscv64 index"
            printf '%s=%s\n' "$package" "$version"
        done
        # The whole dependency closure: the libraries are found in it by soname below.
        printf '%s\n' "$simulated" | awk '$1 == "Inst" { gsub(/[()]/, "", $3); print $2 "=" $3 }'
    )
    trixie_packages=$(printf '%s\n' "$trixie_packages" | LC_ALL=C sort)
    trixie_kernel_package=$kernel_package
}

trixie_locate() {
    trixie_config=$(trixie_apt_config)
    private_apt_update "$trixie_config"
    # Resolving takes seconds (apt rebuilds its cache); the answer only changes when the
    # indexes are refreshed or this file changes, so it is remembered per index fetch.
    local state resolved
    state=$(dirname "$trixie_config")/state
    resolved=$state/resolved-$(cache_key "$state/updated" "$guest_dir/lib/trixie.sh")
    if [ -f "$resolved" ]; then
        trixie_kernel_package=$(sed -n 1p "$resolved")
        trixie_packages=$(sed 1d "$resolved")
    else
        trixie_resolve "$trixie_config"
        printf '%s\n%s\n' "$trixie_kernel_package" "$trixie_packages" >"$resolved.partial"
        mv "$resolved.partial" "$resolved"
    fi
    trixie_dir=$cache/trixie-$(cache_key "$guest_dir/lib/trixie.sh" "$guest_dir/lib/initramfs.sh" \
        "$guest_dir/init" "$guest_dir/counter" "$guest_dir/www/index.html" "$guest_dir/trixie/modules" \
        "$trixie_packages" "linux-source-6.1=$(installed_version linux-source-6.1)")
}

# Prints the first of the given paths that exists, or nothing.
first_existing() {
    local path
    for path; do
        if [ -e "$path" ]; then
            printf '%s\n' "$path"
            return
        fi
    done
}

# Prints a module's direct dependencies from its .modinfo section.
module_depends() {
    riscv64-linux-gnu-objcopy -O binary --only-section=.modinfo "$1" /dev/stdout |
        tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' '\n' | sed '/^$/d'
}

build_trixie() {
    trixie_locate
    if [ -f "$trixie_dir/Image" ] && [ -f "$trixie_dir/initramfs.cpio" ]; then
        say "trixie guest: cached ($trixie_dir)"
        return
    fi
    local work=$cache/work/${trixie_dir##*/}
    rm -rf "$work"
    mkdir -p "$work/debs" "$work/root"
    local -a wanted
    mapfile -t wanted <<<"$trixie_packages"
    run_logged "downloading ${#wanted[@]} trixie riscv64 packages" "$work/download.log" \
        env -C "$work/debs" APT_CONFIG="$trixie_config" apt-get download "${wanted[@]}"
    local deb
    for deb in "$work"/debs/*.deb; do
        dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x failed for $deb"
    done
    say "unpacked ${#wanted[@]} packages"
    local root=$work/root tree=$work/tree
    stage_common "$tree"
    # Merged /usr like trixie itself: /lib/ld-linux-riscv64-lp64d.so.1 is usr/lib's.
    mkdir -p "$tree/usr/lib/riscv64-linux-gnu" "$tree/usr/bin"
    ln -s usr/lib "$tree/lib"
    mkdir -p "$trixie_dir.partial"
    printf '%s\n' "$trixie_packages" >"$trixie_dir.partial/packages"

    # The kernel: Debian's riscv64 image package ships the flat Image as /boot/vmlinux-*.
    local kernel_version image
    kernel_version=$(ls "$root/usr/lib/modules" | head -n 1)
    [ -n "$kernel_version" ] || die "no modules directory in $trixie_kernel_package"
    image=$(first_existing "$root/boot/vmlinux-$kernel_version" "$root/boot/vmlinuz-$kernel_version")
    [ -n "$image" ] || die "no kernel image in /boot of $trixie_kernel_package"
    case $(od -An -c -j 56 -N 4 "$image" | tr -d ' ') in
    RSC*) ;; # "RSC\x05": the riscv Image header magic2 (Documentation/riscv/boot-image-header.rst)
    *) die "$image is not a flat riscv Image" ;;
    esac
    cp "$image" "$trixie_dir.partial/Image"

    # Kernel modules: the listed ones plus their dependencies, in load order.
    local modules_dir=$root/usr/lib/modules/$kernel_version
    declare -A module_path=() module_builtin=() module_state=()
    local path name
    while IFS= read -r path; do
        name=${path##*/}
        name=${name%%.ko*}
        module_path[${name//-/_}]=$path
    done < <(find "$modules_dir/kernel" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')
    while IFS= read -r path; do
        name=${path##*/}
        name=${name%.ko}
        module_builtin[${name//-/_}]=1
    done <"$modules_dir/modules.builtin"
    mkdir -p "$tree/usr/lib/modules/understudy" "$tree/etc/understudy"
    local order=()
    # Depth-first, dependencies first; the state marks guard against cycles.
    add_module() {
        local name=${1//-/_} dependency plain
        [ -z "${module_builtin[$name]:-}" ] || return 0
        [ "${module_state[$name]:-}" != done ] || return 0
        [ "${module_state[$name]:-}" != visiting ] || die "module dependency cycle at $name"
        [ -n "${module_path[$name]:-}" ] || die "module $name is neither built in nor shipped by $trixie_kernel_package"
        module_state[$name]=visiting
        plain=$tree/usr/lib/modules/understudy/$name.ko
        case ${module_path[$name]} in
        *.xz) xz -dc "${module_path[$name]}" >"$plain" ;;
        *.zst) zstd -q -dc "${module_path[$name]}" >"$plain" ;;
        *) cp "${module_path[$name]}" "$plain" ;;
        esac
        for dependency in $(module_depends "$plain"); do
            add_module "$dependency"
        done
        module_state[$name]=done
        order+=("$name")
    }
    local listed
    while IFS= read -r listed; do
        case $listed in '' | '#'*) continue ;; esac
        add_module "$listed"
    done <"$guest_dir/trixie/modules"
    printf '%s\n' "${order[@]}" >"$tree/etc/understudy/modules"
    chmod 0644 "$tree/etc/understudy/modules" "$tree"/usr/lib/modules/understudy/*.ko
    cp "$tree/etc/understudy/modules" "$trixie_dir.partial/modules"
    say "kernel $kernel_version; modules in load order: ${order[*]}"

    # busybox-static; /init installs its applet links at boot since the riscv64 binary
    # cannot run here to list them.
    local busybox
    busybox=$(first_existing "$root/usr/bin/busybox" "$root/bin/busybox")
    [ -n "$busybox" ] || die "busybox-static has no busybox binary"
    install -m 0755 "$busybox" "$tree/bin/busybox"
    ln -s busybox "$tree/bin/sh"

    # redis-server and every shared library it needs, found in the unpacked packages.
    local redis
    redis=$(readlink -f "$root/usr/bin/redis-server")
    [ -f "$redis" ] || die "redis-server binary not found in the unpacked packages"
    install -m 0755 "$redis" "$tree/usr/bin/redis-server"
    local interpreter
    interpreter=$(riscv64-linux-gnu-readelf -l "$redis" | sed -n 's/.*program interpreter: \(.*\)]/\1/p')
    [ -n "$interpreter" ] || die "redis-server has no program interpreter"
    local pending=("$redis") done_libraries=" " object library found
    while ((${#pending[@]})); do
        object=${pending[0]}
        pending=("${pending[@]:1}")
        for library in $(riscv64-linux-gnu-readelf -d "$object" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p') \
            "${interpreter##*/}"; do
            [[ $done_libraries == *" $library "* ]] && continue
            found=$(first_existing "$root/usr/lib/riscv64-linux-gnu/$library" "$root/lib/riscv64-linux-gnu/$library")
            [ -n "$found" ] || die "shared library $library (needed by ${object##*/}) is in none of the packages"
            install -m 0755 "$(readlink -f "$found")" "$tree/usr/lib/riscv64-linux-gnu/$library"
            done_libraries+="$library "
            pending+=("$found")
        done
    done
    # The interpreter's own path (/lib/ld-linux-riscv64-lp64d.so.1 reaches usr/lib via /lib).
    if [ ! -e "$tree/usr${interpreter#/usr}" ]; then
        mkdir -p "$(dirname "$tree/usr${interpreter#/usr}")"
        ln -s "riscv64-linux-gnu/${interpreter##*/}" "$tree/usr${interpreter#/usr}"
    fi
    say "redis-server with libraries:$done_libraries"

    say "packing trixie initramfs"
    cpio_from_tree "$tree" "$trixie_dir.partial/initramfs.cpio"
    gzip -1 -n -c "$trixie_dir.partial/initramfs.cpio" >"$trixie_dir.partial/initramfs.cpio.gz"
    rm -rf "$trixie_dir"
    mv "$trixie_dir.partial" "$trixie_dir"
    [ "${UNDERSTUDY_KEEP_WORK:-0}" = 1 ] || rm -rf "$work"
    say "trixie guest: $trixie_dir (Image $(stat -c %s "$trixie_dir/Image") bytes, initramfs $(stat -c %s "$trixie_dir/initramfs.cpio") bytes)"
}
