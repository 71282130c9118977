#!/usr/bin/env bash
# Builds the pinned helm CLI from its Go module into the same cache the control plane uses
# (~/.cache/kube-site-recovery/helm/<version>-<recipe hash>), so a second run costs nothing.
# Prints the path of the helm binary on its last line.
set -euo pipefail

# helm v3.19 is built against client-go v0.34, the same minor as the pinned control plane,
# so most of its modules are already in Go's module cache after the control plane's build.
helm_version=v3.19.5
cache_root="${KSR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-site-recovery}"
# Bump when the way the binary is built (flags, ldflags) changes.
recipe=2
key="$(echo "helm $helm_version recipe $recipe" | sha256sum | cut -c1-12)"
out="$cache_root/helm/helm-$helm_version-$key"

if [ -x "$out/helm" ]; then
  echo "helm $helm_version already built" >&2
  echo "$out/helm"
  exit 0
fi

# shellcheck source=hack/build-lock.sh
source "$(dirname "${BASH_SOURCE[0]}")/build-lock.sh"
take_build_lock "$cache_root/helm" helm
if [ -x "$out/helm" ]; then
  echo "$out/helm"
  exit 0
fi

require_go build-helm
echo "building helm $helm_version from its Go module into $out (a cold build takes a few minutes)" >&2
start=$SECONDS
make_build_dir "$out"
# As helm's Makefile does: its version, and the Kubernetes version of its client modules (the
# default .Capabilities.KubeVersion of `helm template` and `helm lint`; otherwise v1.20).
k8s_minor=34
ldflags="-X helm.sh/helm/v3/internal/version.version=$helm_version -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags="$ldflags -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath \
  -ldflags "-s -w $ldflags" \
  "helm.sh/helm/v3/cmd/helm@$helm_version"
[ -x "$tmp/helm" ] || { echo "build-helm: helm was not produced" >&2; exit 1; }
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out/helm"
