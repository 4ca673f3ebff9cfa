#!/usr/bin/env bash
# Render the plain `kubectl apply` install bundle from the Helm chart and print it.
#
#   bash hack/render-bundle.sh > manifests/install/gastown.yaml     (what `make bundle` does)
#
# The bundle is the chart with its default values, installed as release "gastown" in namespace
# gastown-system: a Namespace object (restricted Pod Security), the CRDs, then every template.
# tests/unit/test_chart.py renders it again and fails if the committed file drifts.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
helm="${GASTOWN_HELM_BIN:-$(bash "$root/hack/build-helm.sh")}"
namespace=gastown-system
# Keep helm away from the user's helm configuration and caches.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export HELM_CONFIG_HOME="$scratch/config" HELM_CACHE_HOME="$scratch/cache" HELM_DATA_HOME="$scratch/data"
cat <<HEADER
# gastown install bundle: \`kubectl apply --server-side -f manifests/install/gastown.yaml\`.
# Generated from charts/gastown by hack/render-bundle.sh (\`make bundle\`); do not edit by hand.
# Operator in namespace ${namespace}, watching all namespaces, default chart values.
---
apiVersion: v1
kind: Namespace
metadata:
  name: ${namespace}
  labels:
    app.kubernetes.io/part-of: gastown
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
HEADER
"$helm" template gastown "$root/charts/gastown" --namespace "$namespace" --include-crds
