# `make run` serves the registry on 127.0.0.1:5000 with storage in ./data;
# `make test` runs the whole suite; `make bench` compares against Distribution.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests and benchmarks drive: a real client, the reference registry, a load generator,
# a browser for the web UI's tests (Playwright drives /usr/bin/chromium; it never downloads one)
SYSTEM_PACKAGES := skopeo docker-registry wrk chromium
SYSTEM_COMMANDS := skopeo docker-registry wrk chromium

# `make run ADDR=0.0.0.0:5000 ROOT=/srv/registry`, or REGISTRY_HTTP_ADDR / REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY;
# `make run CONFIG=config.yml` serves from a config file instead
ADDR ?= $(or $(REGISTRY_HTTP_ADDR),127.0.0.1:5000)
ROOT ?= $(or $(REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY),./data)

.PHONY: run test quick bench system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

system-deps:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(SYSTEM_PACKAGES)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

run: $(STAMP)
ifdef CONFIG
	$(BIN)/registry serve --config $(CONFIG)
else
	$(BIN)/registry serve --addr $(ADDR) --root $(ROOT)
endif

test: $(STAMP) system-deps
	$(BIN)/pytest -n 2

# the suite without the slowest end-to-end tests (real engines, a browser, long stress runs): for a quick loop
quick: $(STAMP) system-deps
	$(BIN)/pytest -n 2 -m "not slow"

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache
