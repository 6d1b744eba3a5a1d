# multihome: `make run` serves the example state over HTTPS; `make test` runs every check.
# Both build .venv from the pinned requirements first, so a machine needs only Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR := run
BIND ?= 127.0.0.1:8443

.PHONY: chromium run test lint typecheck pytest docs bench e2e envtest envtest-assets chart-check certs clean

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

certs: $(VENV)/.runtime
	$(PY) -m webhook certs --service multihome --namespace multihome --out $(RUN_DIR)/certs \
		--dns localhost --ip 127.0.0.1

run: certs
	$(PY) -m webhook serve --bind $(BIND) --state examples/cluster \
		--tls-cert $(RUN_DIR)/certs/tls.crt --tls-key $(RUN_DIR)/certs/tls.key

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

# The audit's HTML report is tested in Debian's Chromium: installed here when root, else named.
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Chromium (apt-get) for the HTML report test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "make test needs Chromium for the HTML report test: sudo apt-get install chromium"; exit 1; fi; }

pytest: $(VENV)/.dev chromium
	$(VENV)/bin/pytest -q

# The docs site, built as it is published: a dead link, an orphan page or a stale generated
# reference page (checks, flags, chart values) fails the build.
docs: $(VENV)/.dev
	$(PY) -m tests.docs_pages --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(RUN_DIR)/site

test: lint typecheck pytest docs

bench: $(VENV)/.dev
	$(PY) -m bench.decisions
	$(PY) -m bench.enrichment
	$(PY) -m bench.live_state
	$(PY) -m bench.audit_scale
	$(PY) -m bench.allocation
	$(PY) -m bench.split
	$(PY) -m bench.log_format
	$(PY) -m bench.aws

# helm lint and helm template, validated against the Kubernetes schemas (needs helm).
chart-check: $(VENV)/.dev
	$(PY) -m tests.helm_check

# The real-control-plane tier: etcd + kube-apiserver (+ kube-controller-manager) from
# KUBEBUILDER_ASSETS, the envtest convention (`setup-envtest use 1.28.x -p path` prints one),
# the chart rendered by helm and its Deployment's containers run as a kubelet would (as root).
ENVTEST_ASSETS ?= $(CURDIR)/.envtest/bin
KUBEBUILDER_ASSETS ?= $(ENVTEST_ASSETS)
export KUBEBUILDER_ASSETS
envtest: $(VENV)/.dev
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/envtest --override-ini addopts="-ra --strict-markers"

# On this project's machines: the asset directory from ../shared/k8s and Debian's etcd.
SHARED_K8S ?= $(CURDIR)/../shared/k8s
envtest-assets:
	@command -v etcd >/dev/null || { echo "etcd is missing: apt-get install etcd-server (.ci/run does)"; exit 1; }
	@command -v kubectl >/dev/null || { echo "kubectl is missing from PATH"; exit 1; }
	mkdir -p $(ENVTEST_ASSETS)
	for b in kube-apiserver kube-controller-manager; do \
		xz -dc $(SHARED_K8S)/$$b.xz > $(ENVTEST_ASSETS)/$$b && chmod 0755 $(ENVTEST_ASSETS)/$$b; done
	cd $(ENVTEST_ASSETS) && sha256sum --check --quiet $(SHARED_K8S)/SHA256SUMS
	ln -sf "$$(command -v etcd)" $(ENVTEST_ASSETS)/etcd
	ln -sf "$$(command -v kubectl)" $(ENVTEST_ASSETS)/kubectl

# Against a real cluster with multihome installed: MULTIHOME_E2E_KUBECONFIG=~/.kube/config make e2e
e2e: $(VENV)/.dev
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/e2e --override-ini addopts=

clean:
	rm -rf $(VENV) $(RUN_DIR) .envtest .mypy_cache .pytest_cache .ruff_cache .hypothesis
