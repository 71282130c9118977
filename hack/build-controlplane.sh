#!/usr/bin/env bash
# Builds the pinned Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), kube-proxy and etcd from their Go modules, and the
# cluster add-ons (CoreDNS, kube-network-policies) from theirs, into a cache
# directory outside the repository. The directory name is a hash of the pins and of the
# build recipe, so a second run costs nothing and a changed pin rebuilds.
# Prints the directory holding the binaries on its last line.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="$here/controlplane"
cache_root="${KSR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-site-recovery}"

kube_version="$(awk '$1=="k8s.io/kubernetes" {print $2; exit}' "$module/go.mod")"
etcd_version="$(awk '$1=="go.etcd.io/etcd/server/v3" {print $2; exit}' "$module/go.mod")"
[ -n "$kube_version" ] && [ -n "$etcd_version" ] || { echo "build-controlplane: cannot read the pins from $module/go.mod" >&2; exit 1; }

# The add-ons cannot share the control plane's go.mod (their Kubernetes libraries differ), so each
# is installed from its own module at a pinned version, checked against the Go checksum database.
coredns_version=v1.15.0
network_policies_version=v0.8.0

# Bump when the way the binaries are built (flags, ldflags, list) changes.
recipe=2
key="$( (echo "recipe $recipe coredns $coredns_version kube-network-policies $network_policies_version"; cat "$module/go.mod" "$module/go.sum" "$module/cmd/etcd/main.go") | sha256sum | cut -c1-12)"
out="$cache_root/controlplane/kubernetes-$kube_version-etcd-$etcd_version-$key"
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl coredns kube-network-policies)

built() {
  for b in "${binaries[@]}"; do [ -x "$out/$b" ] || return 1; done
}
if built; then
  echo "control plane $kube_version / etcd $etcd_version already built" >&2
  echo "$out"
  exit 0
fi

# Concurrent callers (parallel test runs, `ksr local up` in two shells) wait for one build.
# shellcheck source=hack/build-lock.sh
source "$here/build-lock.sh"
take_build_lock "$cache_root/controlplane" "the control plane"
if built; then
  echo "$out"
  exit 0
fi

require_go build-controlplane
echo "building Kubernetes $kube_version and etcd $etcd_version into $out (a cold build takes 10-30 minutes)" >&2
start=$SECONDS
make_build_dir "$out"

major="${kube_version#v}"; major="${major%%.*}"
minor="${kube_version#v*.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=$kube_version -X k8s.io/client-go/pkg/version.gitMajor=$major -X k8s.io/client-go/pkg/version.gitMinor=$minor"

cd "$module"
CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" -o "$tmp/" \
  ./cmd/etcd \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl
echo "control plane built after $((SECONDS - start)) s; building CoreDNS $coredns_version" >&2

# Outside any module, so `go install MODULE@VERSION` uses the add-on's own go.mod and go.sum.
cd "$tmp"
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
  "github.com/coredns/coredns@$coredns_version"
echo "CoreDNS built after $((SECONDS - start)) s; building kube-network-policies $network_policies_version" >&2
# Its main package is cmd/, so go install names the binary "cmd".
CGO_ENABLED=0 GOBIN="$tmp" go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/kube-network-policies/cmd@$network_policies_version"
mv "$tmp/cmd" "$tmp/kube-network-policies"

for b in "${binaries[@]}"; do [ -x "$tmp/$b" ] || { echo "build-controlplane: $b was not produced" >&2; exit 1; }; done
rm -rf "$out"; mv "$tmp" "$out"; trap - EXIT
echo "built in $((SECONDS - start)) s" >&2
echo "$out"
