#!/usr/bin/env bash
# `make run`: run the operator against the configured cluster, or against a local control plane
# started here when no cluster is configured (no $KUBECONFIG and no ~/.kube/config).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv}"
cluster_dir="${GASTOWN_CLUSTER_DIR:-.local/cluster}"
if [ -z "${KUBECONFIG:-}" ] && [ ! -f "$HOME/.kube/config" ]; then
  if [ ! -f "$cluster_dir/state.json" ] || ! "$venv/bin/python" - "$cluster_dir" <<'PY'
import json, os, sys
pids = json.load(open(os.path.join(sys.argv[1], "state.json")))["pids"]
sys.exit(0 if pids and all(os.path.exists(f"/proc/{p}") for p in pids.values()) else 1)
PY
  then
    "$venv/bin/gastown" cluster down --dir "$cluster_dir" >/dev/null 2>&1 || true
    "$venv/bin/gastown" cluster up --dir "$cluster_dir" >/dev/null
  fi
  export KUBECONFIG="$PWD/$cluster_dir/kubeconfig"
  echo "Using the local control plane ($KUBECONFIG); stop it with 'make cluster-down'." >&2
fi
kube="$(bash hack/build-kube.sh)"
"$kube" kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
"$kube" kubectl wait --for=condition=Established --timeout=60s crd -l app.kubernetes.io/part-of=gastown >/dev/null
# Discovery (and the new resources' storage) lags establishment by a moment; wait, with a deadline.
for _ in $(seq 1 120); do
  "$kube" kubectl get gastown -A >/dev/null 2>&1 && break
  sleep 0.5
done
echo "CRDs installed. Try: kubectl apply -f manifests/samples/ && kubectl get gastown" >&2
# Humans read `make run`; pass --log-format json (the production default) to see JSON logs.
exec "$venv/bin/gastown" run --log-format plain "$@"
