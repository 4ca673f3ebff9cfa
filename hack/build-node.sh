#!/usr/bin/env bash
# Build (once) the local node's binaries and print their paths, one `name=path` per line:
#   kubenode  the multi-call kubelet / kube-scheduler / cri-clean binary (hack/kubenode)
#   pause     the pod sandbox program (hack/kubenode/pause), static
#   probe     the node's test workload (hack/kubenode/probe), static
#
# Cached outside the repository like the control plane (hack/build-kube.sh), keyed by the
# Kubernetes version and a hash of the sources: the big kubenode binary by the module and its
# top-level sources, the two small programs by their own sources, so editing one does not rebuild
# the other. Set GASTOWN_KUBE_CACHE to move the cache.
set -euo pipefail
here="$(cd "$(dirname "$0")/kubenode" && pwd)"
version="$(cat "$here/../kubebin/K8S_VERSION")"
if ! grep -q "k8s.io/kubernetes ${version}\$" "$here/go.mod"; then
  echo "build-node: hack/kubenode/go.mod is not on Kubernetes ${version} (the control plane's); run hack/kubenode/gen-gomod.sh" >&2
  exit 1
fi
cache="${GASTOWN_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gastown}/kubenode"
node_key="$(cat "$here/go.sum" "$here/go.mod" "$here"/*.go | sha256sum | cut -c1-16)"
small_key="$(cat "$here/go.mod" "$here"/pause/*.go "$here"/probe/*.go | sha256sum | cut -c1-16)"
node_out="$cache/${version}-${node_key}/kubenode"
small_dir="$cache/programs-${small_key}"

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    echo "build-node: Go is required to build the local node (go >= 1.24 on PATH)" >&2
    exit 1
  fi
}

if [ ! -x "$small_dir/pause" ] || [ ! -x "$small_dir/probe" ]; then
  need_go
  mkdir -p "$small_dir"
  for prog in pause probe; do
    (cd "$here" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$small_dir/$prog.tmp" "./$prog")
    mv "$small_dir/$prog.tmp" "$small_dir/$prog"
  done
fi

if [ ! -x "$node_out" ]; then
  need_go
  mkdir -p "$(dirname "$node_out")"
  minor="${version#v1.}"; minor="${minor%%.*}"
  echo "build-node: building Kubernetes ${version} kubelet and kube-scheduler (first build takes a while) -> $node_out" >&2
  ldflags="-s -w"
  ldflags+=" -X k8s.io/component-base/version.gitVersion=${version}"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${version}"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
  (cd "$here" && CGO_ENABLED=0 go build -p 2 -trimpath -ldflags "$ldflags" -o "$node_out.tmp" .)
  mv "$node_out.tmp" "$node_out"
fi
echo "kubenode=$node_out"
echo "pause=$small_dir/pause"
echo "probe=$small_dir/probe"
