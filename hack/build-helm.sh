#!/usr/bin/env bash
# Build (once) the helm binary from its Go module and print its path.
#
# Same design as build-kube.sh: the binary is cached outside the repository, keyed by the helm
# version and a hash of the module's go.mod and go.sum, so a version bump rebuilds and anything
# else reuses. Set GASTOWN_HELM_CACHE to move the cache. Nothing is ever written into the repo.
#
# Helm v3 keeps its root command constructor in package main (helm.sh/helm/v3/cmd/helm), which
# cannot be imported, so hack/helm/go.mod declares it with a `tool` directive and we build that
# package directly: the binary is helm's own main, at the exact version pinned in go.mod.
#
# To bump: edit HELM_VERSION, then `cd hack/helm && go get helm.sh/helm/v3@$(cat HELM_VERSION)
# && go mod tidy`.
set -euo pipefail
here="$(cd "$(dirname "$0")/helm" && pwd)"
version="$(cat "$here/HELM_VERSION")"
key="$(cat "$here/go.mod" "$here/go.sum" "$here/HELM_VERSION" | sha256sum | cut -c1-16)"
cache="${GASTOWN_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gastown/helm}"
out="$cache/${version}-${key}/helm"
if [ -x "$out" ]; then
  echo "$out"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "build-helm: Go is required to build helm (go >= 1.26 on PATH)" >&2
  exit 1
fi
pinned="$(cd "$here" && go list -m -f '{{.Version}}' helm.sh/helm/v3)"
if [ "$pinned" != "$version" ]; then
  echo "build-helm: hack/helm/HELM_VERSION says $version but go.mod pins $pinned" >&2
  exit 1
fi
mkdir -p "$(dirname "$out")"
# helm derives its default Kubernetes capabilities (and the lint rules' deprecation checks)
# from the client-go it was built with; its own Makefile sets these, so we do too.
k8s="$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/client-go)"
k8s="${k8s#v}"
k8s_major="$(( ${k8s%%.*} + 1 ))"
k8s_minor="$(echo "$k8s" | cut -d. -f2)"
echo "build-helm: building helm ${version} (first build takes a few minutes) -> $out" >&2
v=helm.sh/helm/v3/internal/version
ldflags="-s -w"
ldflags+=" -X ${v}.version=${version}"
ldflags+=" -X ${v}.metadata="
ldflags+=" -X ${v}.gitTreeState=clean"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=${k8s_major}"
ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor}"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=${k8s_major}"
ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}"
(cd "$here" && CGO_ENABLED=0 go build -p "${GASTOWN_HELM_BUILD_JOBS:-2}" -trimpath -ldflags "$ldflags" \
  -o "$out.tmp" helm.sh/helm/v3/cmd/helm)
mv "$out.tmp" "$out"
echo "$out"
