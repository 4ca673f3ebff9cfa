# syntax=docker/dockerfile:1
# The gastown agent image: what every agent Pod runs (`gastown agent run`, with the `gt` tools
# and git on PATH). Towns name it in spec.agent.image.
#
#   docker build -f images/agent.Dockerfile -t gastown/agent:0.1.0 .
#
# Build context: the repository root. Pin the base image by digest for reproducible builds:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints the digest). Both stages
# must use the same base: the virtualenv is copied between them and refers to its Python by path.
#
# The operator runs agent Pods as uid/gid 1000 with a read-only root filesystem, HOME and the
# working copy on an emptyDir at /workspace, and /tmp on another emptyDir: nothing in this image
# needs to be writable.
#
# Adding a coding-agent CLI. This image has no coding agent of its own; add the one your Towns
# use (spec.agent.codingAgent) in a derived image (`FROM gastown/agent:0.1.0`, then
# `USER root`, the lines below, `USER 1000:1000`) or in the runtime stage below, after the
# apt-get line. Claude Code, for example, is an npm package and needs Node.js:
#
#   # Node.js from the official image (pin it by digest too), then the CLI, installed globally:
#   COPY --from=node:22-bookworm-slim /usr/local/bin/node /usr/local/bin/node
#   COPY --from=node:22-bookworm-slim /usr/local/lib/node_modules /usr/local/lib/node_modules
#   RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
#    && npm install --global --omit=dev @anthropic-ai/claude-code@<version> \
#    && npm cache clean --force
#
# Other CLIs follow the same pattern (Codex: `npm install --global @openai/codex`; Aider:
# `/opt/gastown/bin/pip install aider-chat`). API keys never go into the image: Towns pass them
# as Secret references (spec.agent.secretEnv).
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

# -- runtime: git, the virtualenv, a non-root user ------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gastown-agent" \
      org.opencontainers.image.description="Agent runtime for gastown: gastown agent run, gt, git" \
      org.opencontainers.image.licenses="Apache-2.0"
# git for the working copy; openssh-client for ssh:// remotes; ca-certificates for https.
RUN apt-get update \
 && apt-get install --yes --no-install-recommends git openssh-client ca-certificates \
 && rm -rf /var/lib/apt/lists/*
# uid/gid 1000 match the agent Pod's runAsUser/runAsGroup (gastown.kube.pods.AGENT_UID).
RUN groupadd --gid 1000 gastown \
 && useradd --uid 1000 --gid 1000 --home-dir /workspace/.home --no-create-home --shell /bin/sh gastown
COPY --from=build /opt/gastown /opt/gastown
ENV PATH=/opt/gastown/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /workspace
# The Pod sets the command (`gastown agent run`); this default does the same.
ENTRYPOINT ["gastown"]
CMD ["agent", "run"]
