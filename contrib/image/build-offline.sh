#!/bin/sh
# Builds a runnable dockns image without a registry or network: FROM scratch, the locally built
# binary, the shared libraries `ldd` lists for it, and /etc/passwd + /etc/group with a non-root
# `dockns` user (uid/gid 65532). No shell, no package manager. Same name (dockns:local), config
# path (/etc/dockns/dockns.toml) and HEALTHCHECK (`dockns health`) as the Dockerfile's image.
#
#   contrib/image/build-offline.sh [BINARY] [TAG]
#   contrib/image/build-offline.sh target/release/dockns dockns:local
#
# Extra host programs (and their libraries) can be added with EXTRA="/usr/bin/getent ..."; the
# tests use that for a client image. Images are made with `docker import`, which needs no base
# image and no builder.
set -eu

BIN=${1:-target/release/dockns}
TAG=${2:-dockns:local}
EXTRA=${EXTRA:-}

[ -x "$BIN" ] || { echo "build-offline.sh: $BIN is not an executable; build it first: cargo build --release" >&2; exit 2; }
command -v docker >/dev/null || { echo "build-offline.sh: docker is not installed" >&2; exit 2; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc/dockns" "$root/tmp"
chmod 1777 "$root/tmp"
cp -L "$BIN" "$root/usr/local/bin/dockns"

# Every shared library a program needs, at the same path as on this host.
copy_libs() {
    ldd "$1" 2>/dev/null | awk '
        /=> \// { print $3; next }   # libfoo.so => /lib/.../libfoo.so (0x...)
        /^[ \t]*\// { print $1 }     # /lib64/ld-linux-x86-64.so.2 (0x...)
    ' | while read -r lib; do
        [ -e "$lib" ] || continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}
copy_libs "$BIN"
for prog in $EXTRA; do
    mkdir -p "$root$(dirname "$prog")"
    cp -L "$prog" "$root$prog"
    copy_libs "$prog"
done

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
dockns:x:65532:65532:dockns:/nonexistent:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
dockns:x:65532:
GROUP
# Name lookups inside the image go to DNS first (glibc's default without this file differs).
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"

tar -C "$root" --numeric-owner --owner=0 --group=0 -cf - . | docker import \
    --change 'USER 65532:65532' \
    --change 'EXPOSE 53/udp 53/tcp 9153/tcp' \
    --change 'HEALTHCHECK --interval=3s --timeout=2s --retries=2 CMD ["/usr/local/bin/dockns", "health"]' \
    --change 'ENTRYPOINT ["/usr/local/bin/dockns"]' \
    --change 'CMD ["serve", "--config", "/etc/dockns/dockns.toml"]' \
    --message "dockns offline image from $BIN" \
    - "$TAG" >/dev/null
echo "$TAG"
