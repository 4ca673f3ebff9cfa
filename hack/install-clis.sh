#!/usr/bin/env bash
# Install (once) the real coding-agent CLIs on the host, to run them by hand (e.g. to record new
# CLI output against the scripted model server), and print their bin folder. No test uses it:
# the tests run the CLIs inside the agent image.
#
#   hack/install-clis.sh            -> prints e.g. ~/.cache/gastown/clis/<key>/bin
#   hack/install-clis.sh claude     -> only Claude Code (names: claude codex opencode aider)
#
# Versions come from images/cli-versions.env, the one file the agent image build reads too.
# Claude Code, Codex and OpenCode are npm packages (installed with `npm install --prefix`);
# Aider is a PyPI package installed into its own virtualenv so its many dependencies cannot
# disturb the project's. Everything lives outside the repository, in a folder keyed by a hash of
# the versions file (set GASTOWN_CLI_CACHE to move it); each CLI is marked installed only once it
# ran `--version`, so an interrupted install is redone, and a complete one costs nothing.
# Node.js and npm come from Debian's packages when missing (needs root, as on CI).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
versions="$repo/images/cli-versions.env"
# shellcheck source=../images/cli-versions.env
. "$versions"
key="$(sha256sum <"$versions" | cut -c1-16)"
root="${GASTOWN_CLI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gastown/clis}/$key"
bin="$root/bin"
mkdir -p "$bin"

wanted=("$@")
[ ${#wanted[@]} -eq 0 ] && wanted=(claude codex opencode aider)

log() { echo "install-clis: $*" >&2; }

need_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    return
  fi
  if [ "$(id -u)" != 0 ]; then
    log "Node.js and npm are required (install Debian's nodejs and npm packages)"
    exit 1
  fi
  log "installing Node.js and npm from Debian"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2
}

# npm_cli NAME PACKAGE VERSION BIN: install PACKAGE@VERSION into its own prefix, link BIN.
npm_cli() {
  local name="$1" package="$2" version="$3" program="$4"
  local prefix="$root/npm-$name"
  if [ -f "$prefix/.installed" ] && [ -x "$bin/$program" ]; then
    return
  fi
  need_node
  log "installing $package@$version (npm)"
  rm -rf "$prefix"
  mkdir -p "$prefix"
  # --foreground-scripts: postinstall steps (Claude Code's native binary) log where we see them.
  npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error --foreground-scripts \
    "$package@$version" >&2
  ln -sfn "$prefix/node_modules/.bin/$program" "$bin/$program"
  "$bin/$program" --version >&2
  touch "$prefix/.installed"
}

aider_cli() {
  local venv="$root/aider"
  if [ -f "$venv/.installed" ] && [ -x "$bin/aider" ]; then
    return
  fi
  local python="${GASTOWN_AIDER_PYTHON:-python3}"
  log "installing aider-chat==$AIDER_VERSION (PyPI, own virtualenv)"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "aider-chat==$AIDER_VERSION" >&2
  ln -sfn "$venv/bin/aider" "$bin/aider"
  "$bin/aider" --version >&2
  touch "$venv/.installed"
}

for name in "${wanted[@]}"; do
  case "$name" in
    claude) npm_cli claude @anthropic-ai/claude-code "$CLAUDE_CODE_VERSION" claude ;;
    codex) npm_cli codex @openai/codex "$CODEX_VERSION" codex ;;
    opencode) npm_cli opencode opencode-ai "$OPENCODE_VERSION" opencode ;;
    aider) aider_cli ;;
    *)
      log "unknown CLI $name (claude, codex, opencode, aider)"
      exit 2
      ;;
  esac
done
echo "$bin"
