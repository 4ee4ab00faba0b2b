#!/bin/bash
# Builds the pgs image without a registry: the layout of deploy/docker/Dockerfile
# (/app with bin, dist/bundle, dist/web and the production node_modules; user
# 10001; entrypoint "node /app/bin/pgs.js", command "start --foreground"), from
# this machine's node binary and the libraries it loads, loaded with docker import.
# Run it after npm ci && npm run build.
#   bash deploy/docker/build-local.sh [TAG]      (default pgs:local)
set -euo pipefail
tag=${1:-pgs:local}
here=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$here/dist/bundle/pgs.js" ] || { echo "build first: npm run build" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/app/dist" "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/var/run/pgs"
chmod 1777 "$root/tmp"
cp -a "$here/package.json" "$here/bin" "$root/app/"
cp -a "$here/dist/bundle" "$here/dist/web" "$root/app/dist/"
# The packages the bundle loads at run time (the production dependencies, no optional PostgreSQL).
(cd "$here" && npm ls --omit=dev --omit=optional --parseable --all 2>/dev/null) | while read -r dir; do
  case "$dir" in "$here"/node_modules/*) ;; *) continue ;; esac
  rel=${dir#"$here"/}
  mkdir -p "$root/app/$(dirname "$rel")"
  cp -a "$dir" "$root/app/$rel"
done
node=$(command -v node)
cp -L "$node" "$root/usr/local/bin/node"
# "pgs" on the PATH (kubectl exec deploy/pgs -- pgs list): its #! line needs /usr/bin/env.
mkdir -p "$root/usr/bin"
cp -L /usr/bin/env "$root/usr/bin/env"
ln -s /app/bin/pgs.js "$root/usr/local/bin/pgs"
{ ldd "$node"; ldd /usr/bin/env; } | awk '/=> \// { print $3 } /^\t\/lib/ { print $1 }' | sort -u | while read -r lib; do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\npgs:x:10001:10001::/var/run/pgs:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\npgs:x:10001:\n' > "$root/etc/group"
chown 10001:10001 "$root/var/run/pgs"
chmod 0700 "$root/var/run/pgs"
tar -C "$root" -c . | docker import \
  -c 'WORKDIR /app' -c 'ENV PATH=/usr/local/bin:/usr/bin:/bin PGS_HOME=/var/run/pgs' -c 'USER 10001:10001' \
  -c 'EXPOSE 5432 5480' -c 'ENTRYPOINT ["node", "/app/bin/pgs.js"]' -c 'CMD ["start", "--foreground"]' \
  - "$tag" >/dev/null
echo "$tag"
