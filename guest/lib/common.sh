# Shared helpers for guest/build: logging, cache keys, prerequisites, the Debian mirror and
# private APT configurations that never touch the system's apt state.

# Prints a progress line on stderr so --print-paths output on stdout stays machine-readable.
say() { printf '[guest/build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'guest/build: error: %s\n' "$*" >&2; exit 1; }

# sha256 over the given strings and files, in order; a file contributes its name and bytes so
# renaming an input also changes the key. Keys are shortened to 16 hex digits for paths.
cache_key() {
    local item
    for item in "$@"; do
        if [ -f "$item" ]; then
            printf 'file %s\n' "${item#"$guest_dir"/}"
            cat "$item"
        else
            printf 'text %s\n' "$item"
        fi
    done | sha256sum | cut -c1-16
}

# Runs a long command with its output in LOG, printing a heartbeat with the log's last line
# every 30 s, and the log's tail if it fails.
run_logged() {
    local what=$1 log=$2
    shift 2
    local started=$SECONDS
    say "$what (log: $log)"
    "$@" >"$log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        local i
        for i in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "  ... $what: $((SECONDS - started)) s, $(tail -n 1 "$log" | cut -c1-100)"
        fi
    done
    if ! wait "$pid"; then
        tail -n 40 "$log" >&2
        die "$what failed after $((SECONDS - started)) s; full log: $log"
    fi
    say "  $what done in $((SECONDS - started)) s"
}

# Debian packages the build needs on this (amd64, Debian 12) host, by the command they provide.
host_packages=(
    gcc-riscv64-linux-gnu:riscv64-linux-gnu-gcc
    libc6-dev-riscv64-cross:/usr/riscv64-linux-gnu/include/stdio.h
    linux-source-6.1:/usr/src/linux-source-6.1.tar.xz
    gcc:gcc make:make bc:bc flex:flex bison:bison
    libssl-dev:/usr/include/openssl/ssl.h libelf-dev:/usr/include/libelf.h
    cpio:cpio dpkg-dev:dpkg-source xz-utils:xz zstd:zstd gpgv:gpgv
    debian-archive-keyring:/usr/share/keyrings/debian-archive-keyring.gpg
    binutils:readelf
)

# Installs missing build prerequisites when root; otherwise names them and stops.
ensure_prerequisites() {
    local entry package probe missing=()
    for entry in "${host_packages[@]}"; do
        package=${entry%%:*}
        probe=${entry#*:}
        if [[ $probe == /* ]]; then
            [ -e "$probe" ] || missing+=("$package")
        else
            command -v "$probe" >/dev/null 2>&1 || missing+=("$package")
        fi
    done
    ((${#missing[@]})) || return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing build prerequisites; install them with:
  sudo apt-get install --no-install-recommends ${missing[*]}"
    fi
    say "installing build prerequisites: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        die "could not install ${missing[*]}; run apt-get update and retry"
}

# Version of an installed Debian package, part of cache keys.
installed_version() {
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || die "package $1 is not installed"
}

# The Debian archive mirror the system already uses: the URI of the first apt source whose
# suite is exactly the system's codename (so not -security, -updates or third-party suites).
# UNDERSTUDY_DEBIAN_MIRROR overrides it. Reads deb822 *.sources files and one-line *.list files.
debian_mirror() {
    if [ -n "${UNDERSTUDY_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "${UNDERSTUDY_DEBIAN_MIRROR%/}"
        return
    fi
    local codename
    codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")
    [ -n "$codename" ] || die "cannot read VERSION_CODENAME from /etc/os-release; set UNDERSTUDY_DEBIAN_MIRROR"
    local files=() f
    for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
    local uri=""
    for f in "${files[@]}"; do
        uri=$(awk -v codename="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " codename " ") && uris != "" && !found) {
                    split(uris, u, " "); print u[1]; found = 1
                }
                types = ""; uris = ""; suites = ""
            }
            /^[ \t]*$/ { flush(); next }
            /^#/ { next }
            tolower($1) == "types:" { $1 = ""; types = $0 }
            tolower($1) == "uris:" { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
            tolower($1) == "suites:" { $1 = ""; suites = $0; gsub(/^ +| +$/, "", suites) }
            END { flush() }' "$f")
        [ -z "$uri" ] || break
    done
    if [ -z "$uri" ]; then
        files=()
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
        if ((${#files[@]})); then
            uri=$(awk -v codename="$codename" '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == codename) { print $i; exit }
                }' "${files[@]}")
        fi
    fi
    [ -n "$uri" ] || die "no Debian mirror for suite '$codename' in the system's apt sources; set UNDERSTUDY_DEBIAN_MIRROR"
    printf '%s\n' "${uri%/}"
}

# Creates a private APT configuration under DIR for one suite and architecture and prints the
# path of its config file. The system's apt configuration, lists and dpkg status are not read
# or written: Dir::Etc, Dir::State and Dir::Cache all live under DIR, and the dpkg status is an
# empty file. Signatures are verified with Debian's archive keyring.
private_apt() {
    local dir=$1 arch=$2 suite=$3 types=$4
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mkdir -p "$dir"/etc/apt.conf.d "$dir"/etc/preferences.d "$dir"/etc/sources.list.d \
        "$dir"/etc/trusted.gpg.d "$dir"/state/lists/partial "$dir"/cache/archives/partial
    [ -f "$dir/state/status" ] || : >"$dir/state/status"
    write_atomically "$dir/apt.conf" <<CONF
Dir::Etc "$dir/etc";
Dir::Etc::sourcelist "$dir/etc/sources.list";
Dir::Etc::sourceparts "$dir/etc/sources.list.d";
Dir::Etc::parts "$dir/etc/apt.conf.d";
Dir::Etc::preferencesparts "$dir/etc/preferences.d";
Dir::Etc::trustedparts "$dir/etc/trusted.gpg.d";
Dir::State "$dir/state";
Dir::State::status "$dir/state/status";
Dir::Cache "$dir/cache";
APT::Architecture "$arch";
APT::Architectures { "$arch"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
APT::Sandbox::User "root";
CONF
    write_atomically "$dir/etc/sources.list.d/debian.sources" <<SOURCES
Types: $types
URIs: $mirror
Suites: $suite
Components: main
Signed-By: $keyring
SOURCES
    write_atomically "$dir/etc/sources.list" </dev/null
    printf '%s\n' "$dir/apt.conf"
}

# Replaces FILE with standard input by a rename, so a guest/build running at the same time
# (tests ask for --print-paths in parallel) never reads it half written.
write_atomically() {
    cat >"$1.$$.partial" && mv -f "$1.$$.partial" "$1"
}

# Fetches the package indexes of a private APT configuration when they are missing or when
# --refresh was given. Package versions come from these indexes and are part of cache keys,
# so artifacts only change when the indexes are deliberately refreshed.
private_apt_update() {
    local config=$1 dir
    dir=$(dirname "$config")
    if [ "$refresh" = 1 ] || [ ! -f "$dir/state/updated" ]; then
        [ "$print_only" = 0 ] || die "nothing cached under $cache yet (no package indexes in $dir); run guest/build"
        run_logged "fetching package indexes ($(sed -n 's/^Suites: //p' "$dir/etc/sources.list.d/debian.sources"))" \
            "$dir/update.log" env APT_CONFIG="$config" apt-get update
        # apt-get update exits 0 when a fetch fails with only a warning; insist on an index.
        if ! compgen -G "$dir/state/lists/*_Packages*" >/dev/null && ! compgen -G "$dir/state/lists/*_Sources*" >/dev/null; then
            tail -n 20 "$dir/update.log" >&2
            if grep -qE 'NO_PUBKEY|not signed|EXPKEYSIG' "$dir/update.log"; then
                die "the Debian archive keyring cannot verify the suite; install a newer debian-archive-keyring"
            fi
            die "no package index was fetched from $mirror; check the network and the apt sources"
        fi
        date -u +%FT%TZ >"$dir/state/updated"
    fi
}

# Candidate version of a binary package in a private configuration, or empty.
apt_candidate() {
    APT_CONFIG=$1 apt-cache policy "$2" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}
