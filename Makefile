# gastown-operator — run `make help` for the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
CLUSTER_DIR ?= .local/cluster
NAMESPACE ?= default
export GASTOWN_CLUSTER_DIR := $(CLUSTER_DIR)

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: setup
setup: $(VENV)/.installed ## Create the virtualenv and install the project with dev tools.

.PHONY: kube-bin
kube-bin: ## Build (once, cached outside the repo) the local control-plane binary.
	@bash hack/build-kube.sh

.PHONY: images
images: setup ## Build the operator and agent images locally (no registry; cached by content hash).
	@bash hack/build-images.sh $(IMAGES_ARGS)

.PHONY: clis
clis: ## Install the pinned coding-agent CLIs (Claude Code, Codex, OpenCode, Aider) into a cache.
	@bash hack/install-clis.sh >/dev/null

.PHONY: node-bin
node-bin: ## Install the local node's packages (Linux, root) and build kubelet/kube-scheduler (cached).
	@bash hack/install-node-deps.sh
	@bash hack/build-node.sh >/dev/null

.PHONY: cluster-up
cluster-up: setup kube-bin ## Start a local control plane and, on Linux as root, a real node (kubelet, containerd, scheduler).
	@$(VENV)/bin/gastown cluster up --dir $(CLUSTER_DIR)

.PHONY: cluster-down
cluster-down: setup ## Stop the local control plane started by cluster-up.
	@$(VENV)/bin/gastown cluster down --dir $(CLUSTER_DIR)

.PHONY: manifests
manifests: setup ## Regenerate the CRDs (crds/ and the chart) from the pydantic models.
	$(VENV)/bin/gastown crds crds charts/gastown/crds
	$(VENV)/bin/gastown docs docs/configuration.md

.PHONY: lint
lint: setup ## ruff, mypy, import-linter contracts, generated files up to date.
	$(VENV)/bin/ruff check operator tests bench hack
	$(VENV)/bin/ruff format --check operator tests bench hack
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/gastown crds --check crds charts/gastown/crds
	$(VENV)/bin/gastown docs --check docs/configuration.md

.PHONY: test
test: lint kube-bin helm-bin ## Lint, then run every test (unit, integration, e2e) against a real local control plane.
	$(VENV)/bin/pytest

.PHONY: test-unit
test-unit: setup ## Only the unit tests (no cluster needed).
	$(VENV)/bin/pytest tests/unit

.PHONY: bench
bench: setup kube-bin ## Run the benchmarks in bench/ and print the figures.
	$(PY) bench/bench_reconcile.py
	$(PY) bench/bench_operator.py

.PHONY: soak
soak: setup kube-bin ## Soak: 500 beads over 20 minutes with leader kills/freezes, API server and etcd restarts, partitions.
	$(PY) bench/soak.py $(SOAK_ARGS)

.PHONY: demo
demo: setup kube-bin ## A whole town locally: control plane, real node, operator, Claude Code agents in containers landing a convoy.
	$(PY) -m gastown.devtools.demo

.PHONY: run
run: setup kube-bin ## Run the operator: on $$KUBECONFIG if set, else on a local control plane it starts.
	@bash hack/run.sh

.PHONY: clean
clean: ## Remove local state (virtualenv, local cluster data, caches).
	-$(VENV)/bin/gastown cluster down --dir $(CLUSTER_DIR) 2>/dev/null
	rm -rf $(VENV) .local .mypy_cache .ruff_cache .pytest_cache .hypothesis

# -- Helm chart and install bundle ----------------------------------------------------------

.PHONY: helm-bin
helm-bin: ## Build (once, cached outside the repo) helm from its Go module (hack/helm).
	@bash hack/build-helm.sh

.PHONY: chart-lint
chart-lint: helm-bin ## helm lint --strict the chart (also run by tests/unit/test_chart.py).
	@"$$(bash hack/build-helm.sh)" lint --strict charts/gastown

.PHONY: bundle
bundle: helm-bin ## Regenerate the kubectl-apply bundle manifests/install/gastown.yaml from the chart.
	@bash hack/render-bundle.sh > manifests/install/gastown.yaml.tmp
	@mv manifests/install/gastown.yaml.tmp manifests/install/gastown.yaml

.PHONY: chart-golden
chart-golden: setup helm-bin ## Refresh the chart's golden renders in tests/data/chart/ (review the diff).
	GASTOWN_UPDATE_GOLDEN=1 $(VENV)/bin/pytest -q tests/unit/test_chart.py -k golden
