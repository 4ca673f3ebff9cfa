#!/usr/bin/env bash
# Install what a local node needs: containerd, runc, the CNI plugins, iptables and iproute2.
#
# Idempotent: does nothing when every tool is already there. Debian packages by name only (no
# downloads of prebuilt binaries). The node runs as root on Linux; anywhere else this fails with
# a clear message instead of half-installing.
set -euo pipefail
if [ "$(uname -s)" != "Linux" ]; then
  echo "install-node-deps: a local node needs Linux (this is $(uname -s))" >&2
  exit 1
fi
if [ "$(id -u)" != "0" ]; then
  echo "install-node-deps: a local node needs root (containerd, runc, CNI and iptables manage namespaces, cgroups and NAT)" >&2
  exit 1
fi
# tool -> the Debian package that provides it
declare -A need=(
  [containerd]=containerd
  [ctr]=containerd
  [runc]=runc
  [iptables]=iptables
  [ip]=iproute2
  [mount]=mount
)
missing=()
for tool in "${!need[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${need[$tool]}")
done
# The CNI plugins live outside PATH.
[ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/host-local ] && [ -x /usr/lib/cni/loopback ] \
  || missing+=(containernetworking-plugins)
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-node-deps: missing ${missing[*]} and no apt-get to install them; install them by hand" >&2
  exit 1
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-node-deps: installing ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another install may hold the dpkg lock (parallel builds): wait for it rather than failing.
apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
apt-get "${apt_opts[@]}" update -qq
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
for tool in containerd ctr runc iptables ip; do
  command -v "$tool" >/dev/null 2>&1 || { echo "install-node-deps: $tool still missing after install" >&2; exit 1; }
done
[ -x /usr/lib/cni/bridge ] || { echo "install-node-deps: CNI plugins not found under /usr/lib/cni after install" >&2; exit 1; }
