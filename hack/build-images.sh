#!/usr/bin/env bash
# Build the operator and agent images locally, with no container registry, and print the path
# of the JSON manifest naming their refs and OCI archives (see gastown/devtools/images.py).
#
# A Debian bookworm base made by debootstrap, committed with buildah, then images/*.Dockerfile
# built on it with `buildah bud --isolation chroot --layers`. Cached outside the repository
# (~/.cache/gastown/images, or $GASTOWN_IMAGES_CACHE) by a content hash of the inputs: an
# unchanged tree rebuilds nothing. Needs root on Linux; installs buildah and debootstrap from
# Debian's packages when missing.
#
#   bash hack/build-images.sh                                  # both images, every CLI
#   bash hack/build-images.sh --image agent --build-arg agent:WITH_AIDER=0
#   .venv/bin/python -m gastown.devtools.images import --address <containerd socket>
set -euo pipefail
cd "$(dirname "$0")/.."
python="${GASTOWN_PYTHON:-.venv/bin/python}"
if [ ! -x "$python" ]; then
  echo "build-images: $python not found; run \`make setup\` first" >&2
  exit 1
fi
exec "$python" -m gastown.devtools.images build "$@"
