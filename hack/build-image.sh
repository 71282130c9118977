#!/usr/bin/env bash
# Builds the kube-site-recovery image with podman on a machine that reaches no container
# registry: the base images come from hack/build-base-images.sh. Podman runs with the runc
# runtime (crun refuses hybrid cgroup hierarchies), explicit ulimits (podman's defaults exceed
# what an unprivileged sandbox allows) and host networking (npm ci reaches the npm registry
# without a container network). Usage: hack/build-image.sh [TAG]; prints TAG on its last line.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
tag="${1:-localhost/kube-site-recovery:dev}"

mapfile -t bases < <(bash "$here/build-base-images.sh")
[ "${#bases[@]}" -eq 2 ] || { echo "build-image: build-base-images.sh printed no image names" >&2; exit 1; }

ca_args=()
# The host's CA bundle (which holds a TLS-inspecting egress proxy's CA, where there is one): mounted
# for npm, not copied into the image.
bundle="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"
if [ -n "$bundle" ] && [ -f "$bundle" ]; then
  ca_args=(--volume "$bundle:/etc/ssl/host-ca.crt:ro" --build-arg npm_config_cafile=/etc/ssl/host-ca.crt)
fi

podman --runtime runc build --network host \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --build-arg "RUNTIME_IMAGE=${bases[0]}" --build-arg "BUILD_IMAGE=${bases[1]}" \
  "${ca_args[@]}" --file "$root/Dockerfile" --tag "$tag" "$root" >&2
echo "$tag"
