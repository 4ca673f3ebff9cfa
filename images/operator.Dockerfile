# syntax=docker/dockerfile:1
# The gastown operator image: `gastown run` (kopf) and nothing else.
#
#   docker build -f images/operator.Dockerfile -t gastown/operator:0.1.0 .
#   make images    # the same with no Docker and no registry (buildah, a local Debian base)
#
# Build context: the repository root. The tag must match the chart's appVersion (or set
# image.tag). Pin the base image by digest for reproducible builds: pass
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# where <digest> comes from `docker buildx imagetools inspect python:3.11-slim-bookworm` (or
# `crane digest python:3.11-slim-bookworm`). Both stages must use the same base: the virtualenv
# is copied from one to the other and refers to its Python by path.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: install the package and its dependencies into a virtualenv -----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/gastown
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN /opt/gastown/bin/pip install --no-compile . \
 && /opt/gastown/bin/python -m compileall -q /opt/gastown/lib

# -- runtime: the virtualenv on a clean base, as a non-root user -----------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gastown-operator" \
      org.opencontainers.image.description="Kubernetes operator that runs a town of AI coding agents" \
      org.opencontainers.image.licenses="Apache-2.0"
# git (and ssh for ssh remotes): the operator checks every agent's claim of a push or a merge
# against the rig's remote itself, read-only (ls-remote and fetch into a cache under /tmp).
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# uid/gid 1000 match the chart's podSecurityContext (runAsUser/runAsGroup 1000).
RUN groupadd --gid 1000 gastown \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin gastown
COPY --from=build /opt/gastown /opt/gastown
# The chart mounts the root filesystem read-only with an emptyDir on /tmp: no bytecode writes,
# unbuffered logs (kopf logs JSON lines to stdout), the claim checker's git cache under /tmp.
ENV PATH=/opt/gastown/bin:$PATH \
    GASTOWN_CACHE_DIR=/tmp/gastown-verify \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1000:1000
# kopf liveness (--liveness) and Prometheus metrics (--metrics-port), as set by the chart.
EXPOSE 8080 9090
ENTRYPOINT ["gastown"]
CMD ["run"]
