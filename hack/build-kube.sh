#!/usr/bin/env bash
# Build (once) the multi-call control-plane binary and print its path.
#
# The binary is cached outside the repository, keyed by the Kubernetes version and a hash of
# the module's go.sum and sources, so a version bump or a source change rebuilds and anything
# else reuses. Set GASTOWN_KUBE_CACHE to move the cache.
set -euo pipefail
here="$(cd "$(dirname "$0")/kubebin" && pwd)"
version="$(cat "$here/K8S_VERSION")"
key="$(cat "$here/go.sum" "$here/go.mod" "$here"/*.go | sha256sum | cut -c1-16)"
cache="${GASTOWN_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gastown/kubebin}"
out="$cache/${version}-${key}/kube"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build-kube: Go is required to build the local control plane (go >= 1.24 on PATH)" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
minor="${version#v1.}"; minor="${minor%%.*}"
echo "build-kube: building Kubernetes ${version} control plane (first build takes a while) -> $out" >&2
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=${version}"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=${minor}"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=${version}"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=${minor}"
(cd "$here" && CGO_ENABLED=0 go build -p 2 -trimpath -ldflags "$ldflags" -o "$out.tmp" .)
mv "$out.tmp" "$out"
echo "$out"
