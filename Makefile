# Traceward: `make run` starts the service on its embedded defaults, `make test` runs the suite.
# Both create and reuse a local .venv (the stamp file is refreshed when pyproject.toml changes).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench lint install clean system-deps

# Debian packages the end-to-end tests use: Chromium (browser tests, driven by Playwright) and
# Prometheus (scrapes /metrics for real). Installed only when missing; needs root or sudo.
SYSTEM_BINARIES := /usr/bin/chromium /usr/bin/prometheus /usr/bin/promtool
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

system-deps:
	@missing=""; for b in $(SYSTEM_BINARIES); do [ -x $$b ] || missing="$$missing $$b"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium prometheus >/dev/null; \
	fi

run: $(STAMP)
	$(BIN)/traceward serve

lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check otlp_receiver analysis diff governance server dashboards tests benchmarks
	$(BIN)/mypy otlp_receiver analysis diff governance dashboards server

test: $(STAMP) system-deps
	$(BIN)/lint-imports
	$(BIN)/ruff check otlp_receiver analysis diff governance server dashboards tests benchmarks
	$(BIN)/mypy otlp_receiver analysis diff governance dashboards server
	$(BIN)/python -m pytest -q tests
	$(BIN)/python -m pytest -q benchmarks --benchmark-disable

bench: $(STAMP)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-columns=min,median,mean,max,rounds

clean:
	rm -rf $(VENV) traceward-data
