# Two commands on a fresh machine: `make run` and `make test`.
# Each builds the virtualenv it needs from a lock file first (exact versions, checked
# by hash), so every machine runs what CI ran: `make run` the service's own
# dependencies only (requirements.lock), `make test` the tools on top of them
# (requirements-dev.lock), in the same venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RUNTIME_LOCK  := requirements.lock
RUNTIME_STAMP := $(VENV)/.runtime-installed
STAMP  := $(VENV)/.installed
LOCK   := requirements-dev.lock
PROMTOOL ?= promtool
RULES  := deploy/prometheus/otpgate.rules.yml
# The resolver that writes the lock files (`make lock`), and the installer of .venv.
UV_VERSION := 0.13.9
TOOLS  := .venv-tools
UPGRADE_VENV ?= .venv-upgrade
LOWEST_VENV ?= .venv-lowest

# In a venv built from anything but the lock, installed != locked by design.
NOT_THE_LOCK := --deselect tests/test_lock.py::test_installed_packages_are_exactly_the_locked_ones

.PHONY: run test test-fast system-deps browser rules node-deps lint typecheck docs check bench settings-reference lock upgrade-check lowest-check clean

# The installer: uv, pinned, in a venv of its own (`make lock` resolves with it too). It
# fetches and installs the pinned wheels in parallel, checked by the same hashes; pip,
# one package after another, took a minute and more on a busy 2-core machine.
UV := $(TOOLS)/bin/uv
VENV_INSTALL := $(UV) pip install --quiet --python $(BIN)/python

# Two stamps in one venv. A changed lock (either one) or pyproject.toml rebuilds it from
# scratch with the runtime lock alone, so nothing outside the locks lingers; the dev
# stamp is then older than the runtime one, and the next `make test` adds the rest.
$(RUNTIME_STAMP): $(RUNTIME_LOCK) $(LOCK) pyproject.toml | $(UV)
	rm -rf $(VENV)
	$(UV) venv --quiet --seed --python $(PYTHON) $(VENV)
	$(VENV_INSTALL) --require-hashes -r $(RUNTIME_LOCK)
	$(VENV_INSTALL) --no-deps -e .
	touch $(RUNTIME_STAMP)

# The dev lock pins every runtime package at the same version (tests/test_lock.py), so
# this only adds the test, lint and docs tools; `make run` afterwards installs nothing.
$(STAMP): $(RUNTIME_STAMP)
	$(VENV_INSTALL) --require-hashes -r $(LOCK)
	touch $(STAMP)

## Run the service on its embedded defaults (SQLite store and credential database, console
## SMS) at http://127.0.0.1:3000, the credential database's schema brought up to date first
run: $(RUNTIME_STAMP)
	$(BIN)/otpgate migrate
	$(BIN)/otpgate serve

## Run the whole test suite, lint, type checks, the docs build and the alert rules'
## checks included (what CI runs)
test: $(STAMP) system-deps node-deps lint typecheck docs rules
	$(BIN)/pytest

# $(call apt-install,command:package ...): the Debian package of each command missing
# from the PATH, all in one apt-get run, through sudo unless root.
define apt-install
@missing=; for pair in $(1); do \
	command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
test -z "$$missing" || { \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	echo "installing$$missing for the tests"; \
	$$SUDO apt-get update -qq && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing; }
endef

## What the tests drive from the distribution, installed when missing (through sudo
## unless root): Chromium, for the widget's and dashboard's browser tests through
## Playwright (no browser download of Playwright's own); redis-server, the suite's own
## Redis when none answers at REDIS_URL and the outage, TLS, Sentinel and Cluster
## tests' servers; promtool (Debian's prometheus), the alert rules' checks. A test
## that needs one fails, saying so, without it.
system-deps:
	$(call apt-install,chromium:chromium redis-server:redis-server promtool:prometheus)

## Chromium alone (see system-deps)
browser:
	$(call apt-install,chromium:chromium)

## The Prometheus alert rules: promtool's syntax check, then their unit tests
## (synthetic series in deploy/prometheus/otpgate.rules.test.yml)
rules:
	$(call apt-install,$(PROMTOOL):prometheus)
	$(PROMTOOL) check rules $(RULES)
	$(PROMTOOL) test rules $(RULES:.yml=.test.yml)

## The official Node `twilio` SDK, which tests/test_twilio_verify_node.py drives against
## otpgate: installed from tests/node_twilio/package-lock.json when node_modules is missing.
## Needs Node.js 20+ and npm; the test fails, saying so, without node.
node-deps:
	@test -d tests/node_twilio/node_modules/twilio || { \
		echo "installing the Node twilio SDK for the Verify v2 tests"; \
		cd tests/node_twilio && npm ci --no-audit --no-fund; }

## The unit tier only: no Redis, no SNS emulator, no service processes. Its tests mostly
## wait (retry back-off, timeouts), so four processes share two cores well.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not integration" -q -n 4

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard bench)
	$(BIN)/ruff format --check src tests $(wildcard bench)
	$(BIN)/lint-imports
	$(BIN)/python -m otpgate.config.reference --check

typecheck: $(STAMP)
	$(BIN)/mypy src

## Build the documentation site into site/ (open site/index.html); strict, so a broken
## link or a page missing from the nav fails it. Nothing is fetched from the network.
## (NO_MKDOCS_2_WARNING: the theme's banner about its successor, printed on every build.)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

## Write .env.example and docs/reference/settings.md from the settings models
## (src/otpgate/config/); `make lint` fails while either differs from them
settings-reference: $(STAMP)
	$(BIN)/python -m otpgate.config.reference

## Side-by-side benchmark against the Node service (see bench/README.md)
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

## Re-resolve the lock files after editing pyproject.toml (keeps pins that still fit;
## UPGRADE=1 takes the newest versions pyproject allows)
lock: $(UV)
	$(UV) pip compile pyproject.toml --extra dev $(if $(UPGRADE),--upgrade) \
		--generate-hashes --universal --python-version 3.11 --no-header -q -o $(LOCK)
	$(UV) pip compile pyproject.toml -c $(LOCK) \
		--generate-hashes --universal --python-version 3.11 --no-header -q -o requirements.lock

## Install the newest versions pyproject allows in a throwaway venv and run every check
## there: an upgrade is then a deliberate `make lock UPGRADE=1`, not a surprise
upgrade-check:
	rm -rf $(UPGRADE_VENV)
	$(PYTHON) -m venv $(UPGRADE_VENV)
	$(UPGRADE_VENV)/bin/pip install --quiet --upgrade -e '.[dev]'
	@echo "Versions that differ from $(LOCK) (locked < newest):"
	@$(UPGRADE_VENV)/bin/python -m tests.lockfile $(LOCK) || true
	$(UPGRADE_VENV)/bin/ruff check src tests $(wildcard bench)
	$(UPGRADE_VENV)/bin/lint-imports
	$(UPGRADE_VENV)/bin/mypy src
	$(UPGRADE_VENV)/bin/pytest -q $(NOT_THE_LOCK)
	rm -rf $(UPGRADE_VENV)

## Install the lowest versions pyproject allows for each direct dependency in a throwaway
## venv and run the tests there: the lower bounds are what people installing otpgate into
## their own environment may get. (Installed != locked there, so that one test is skipped.)
lowest-check: $(UV)
	rm -rf $(LOWEST_VENV)
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(UV) pip compile pyproject.toml --extra dev --resolution lowest-direct \
		--python-version 3.11 --no-header -q -o $(LOWEST_VENV)/requirements-lowest.txt
	$(LOWEST_VENV)/bin/pip install --quiet -r $(LOWEST_VENV)/requirements-lowest.txt
	$(LOWEST_VENV)/bin/pip install --quiet --no-deps -e .
	$(LOWEST_VENV)/bin/pytest -q $(NOT_THE_LOCK)
	rm -rf $(LOWEST_VENV)

clean:
	rm -rf $(VENV) $(TOOLS) $(UPGRADE_VENV) $(LOWEST_VENV) .pytest_cache .mypy_cache .ruff_cache site
