# syntax=docker/dockerfile:1
# The gastown agent image: what every agent Pod runs (`gastown agent run`, with the `gt` tools
# and git on PATH), with the coding-agent CLIs it drives (spec.agent.codingAgent): Claude Code
# (`claude`), Codex (`codex`), OpenCode (`opencode`) and Aider (`aider`), versions pinned below.
# Towns name it in spec.agent.image.
#
#   docker build -f images/agent.Dockerfile -t gastown/agent:0.1.0 .
#   make images    # the same with no Docker and no registry (buildah, a local Debian base)
#
# Leave a CLI out with a build arg set to 0 (WITH_CLAUDE, WITH_CODEX, WITH_OPENCODE, WITH_AIDER),
# e.g. `--build-arg WITH_AIDER=0`; pick another version with CLAUDE_CODE_VERSION, CODEX_VERSION,
# OPENCODE_VERSION or AIDER_VERSION. The pins live in images/cli-versions.env (`make images`
# passes them as build args); the ARG defaults below repeat them. Claude Code, Codex and
# OpenCode come from npm, installed with Debian's Node.js (Claude Code and OpenCode install
# native executables; Codex's launcher runs on Node.js, which the image then carries). Aider
# comes from PyPI into its own virtualenv (/opt/aider), so its pinned dependencies never meet
# the runtime's (/opt/gastown).
#
# Build context: the repository root. Pin the base image by digest for reproducible builds:
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>
# (`docker buildx imagetools inspect python:3.11-slim-bookworm` prints the digest). Every stage
# must use the same base: the virtualenvs are copied between them and refer to their Python by
# path.
#
# The operator runs agent Pods as uid/gid 1000 with a read-only root filesystem, HOME on an
# emptyDir at /home/gastown, the working copy on an emptyDir at /workspace and /tmp on another
# emptyDir: nothing in this image needs to be writable. API keys never go into the image: Towns
# pass them as Secret references (spec.agent.secretEnv).
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

# -- clis: the npm coding agents under one prefix (/opt/agent-clis/bin) ----------------------
FROM ${PYTHON_IMAGE} AS clis
ARG WITH_CLAUDE=1
ARG WITH_CODEX=1
ARG WITH_OPENCODE=1
ARG CLAUDE_CODE_VERSION=2.1.332
ARG CODEX_VERSION=0.171.0
ARG OPENCODE_VERSION=1.18.33
# Node.js has its own CA store: make npm trust the system's (including any local CA).
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
RUN set -e; mkdir -p /opt/agent-clis/bin /opt/agent-clis/lib; pkgs=""; \
    if [ "$WITH_CLAUDE" = 1 ]; then pkgs="$pkgs @anthropic-ai/claude-code@$CLAUDE_CODE_VERSION"; fi; \
    if [ "$WITH_CODEX" = 1 ]; then pkgs="$pkgs @openai/codex@$CODEX_VERSION"; fi; \
    if [ "$WITH_OPENCODE" = 1 ]; then pkgs="$pkgs opencode-ai@$OPENCODE_VERSION"; fi; \
    if [ -n "$pkgs" ]; then \
      apt-get update; \
      apt-get install --yes --no-install-recommends nodejs npm; \
      npm install --global --omit=dev --prefix /opt/agent-clis $pkgs; \
      npm cache clean --force; \
      # Claude Code's and OpenCode's installers hard-link the build for this platform into
      # their bin/; the other builds npm brought along (musl, baseline CPU) are never run.
      for pkg in @anthropic-ai/claude-code opencode-ai; do \
        dir=/opt/agent-clis/lib/node_modules/$pkg/node_modules; \
        if [ -d "$dir" ]; then find "$dir" -type f -links 1 -size +1M -delete; fi; \
      done; \
    fi

# -- aider: Aider in a virtualenv of its own (/opt/aider) -------------------------------------
FROM ${PYTHON_IMAGE} AS aider
ARG WITH_AIDER=1
ARG AIDER_VERSION=0.86.2
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN set -e; mkdir -p /opt/aider; \
    if [ "$WITH_AIDER" = 1 ]; then \
      python -m venv /opt/aider; \
      /opt/aider/bin/pip install "aider-chat==$AIDER_VERSION"; \
    fi

# -- runtime: git, the CLIs, the virtualenv, a non-root user ---------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="gastown-agent" \
      org.opencontainers.image.description="Agent runtime for gastown: gastown agent run, gt, git and the coding-agent CLIs" \
      org.opencontainers.image.licenses="Apache-2.0"
ARG WITH_CODEX=1
# git for the working copy; openssh-client for ssh:// remotes; ca-certificates for https;
# Node.js for Codex's launcher.
RUN set -e; node=""; if [ "$WITH_CODEX" = 1 ]; then node=nodejs; fi; \
    apt-get update; \
    apt-get install --yes --no-install-recommends git openssh-client ca-certificates $node; \
    rm -rf /var/lib/apt/lists/*
# uid/gid 1000 match the agent Pod's runAsUser/runAsGroup (gastown.kube.pods.AGENT_UID); the Pod
# mounts an emptyDir on the home directory.
RUN groupadd --gid 1000 gastown \
 && useradd --uid 1000 --gid 1000 --home-dir /home/gastown --no-create-home --shell /bin/sh gastown \
 && install -d -o 1000 -g 1000 /home/gastown /workspace
COPY --from=clis /opt/agent-clis /opt/agent-clis
COPY --from=aider /opt/aider /opt/aider
RUN if [ -x /opt/aider/bin/aider ]; then ln -s /opt/aider/bin/aider /opt/agent-clis/bin/aider; fi
COPY --from=build /opt/gastown /opt/gastown
# DISABLE_AUTOUPDATER: the image pins Claude Code; it must not try to replace itself.
ENV PATH=/opt/gastown/bin:/opt/agent-clis/bin:$PATH \
    HOME=/home/gastown \
    DISABLE_AUTOUPDATER=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 1000:1000
WORKDIR /workspace
# The Pod sets the command (`gastown agent run`); this default does the same.
ENTRYPOINT ["gastown"]
CMD ["agent", "run"]
