# multihome: `make run` serves the example state over HTTPS; `make test` runs every check.
# Both build .venv from the pinned requirements first, so a machine needs only Python 3.11+ and make.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUN_DIR := run
BIND ?= 127.0.0.1:8443

.PHONY: run test lint typecheck pytest bench e2e chart-check certs clean

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

typecheck: $(VENV)/.dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev
	$(VENV)/bin/pytest -q

test: lint typecheck pytest

bench: $(VENV)/.dev
	$(PY) -m bench.decisions
	$(PY) -m bench.enrichment
	$(PY) -m bench.live_state
	$(PY) -m bench.audit_scale

# helm lint and helm template, validated against the Kubernetes schemas (needs helm).
chart-check: $(VENV)/.dev
	$(PY) -m tests.helm_check

# Against a real cluster with multihome installed: MULTIHOME_E2E_KUBECONFIG=~/.kube/config make e2e
e2e: $(VENV)/.dev
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/e2e --override-ini addopts=

clean:
	rm -rf $(VENV) $(RUN_DIR) .mypy_cache .pytest_cache .ruff_cache .hypothesis
