# `make run` serves the registry on 127.0.0.1:5000 with storage in ./data;
# `make test` runs the whole suite; `make bench` compares against Distribution.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Debian packages the tests and benchmarks drive: a real client, the reference registry, a load generator,
# a browser for the web UI's tests (Playwright drives /usr/bin/chromium; it never downloads one),
# the container engines with a base image builder (tests/engines.py), and the checkers of deploy/
SYSTEM_PACKAGES := skopeo docker-registry wrk chromium docker.io podman debootstrap docker-compose systemd
SYSTEM_COMMANDS := skopeo docker-registry wrk chromium dockerd podman debootstrap docker-compose systemd-analyze
# Every dependency pinned with its hashes, generated from pyproject.toml by `make lock`:
# the image installs requirements.lock (with the tracing extra), the development venv requirements-dev.lock (all extras).
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
PIP_TOOLS := pip-tools==7.6.2
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= \
	$(VENV)-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras --all-build-deps \
	--index-url https://pypi.org/simple --no-emit-index-url --no-emit-find-links

# `make run ADDR=0.0.0.0:5000 ROOT=/srv/registry`, or REGISTRY_HTTP_ADDR / REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY;
# `make run CONFIG=config.yml` serves from a config file instead
ADDR ?= $(or $(REGISTRY_HTTP_ADDR),127.0.0.1:5000)
ROOT ?= $(or $(REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY),./data)

.PHONY: run test quick bench system-deps lock clean

$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Refresh both locks to the newest releases pyproject.toml allows (the dev lock keeps the runtime pins)
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/pip install --quiet $(PIP_TOOLS)
	$(PIP_COMPILE) --upgrade --extra tracing -o $(LOCK) pyproject.toml
	$(PIP_COMPILE) --upgrade --all-extras -c $(LOCK) -o $(DEV_LOCK) pyproject.toml

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
	$(BIN)/pytest -n 2 --dist loadgroup

# the suite without the slowest end-to-end tests (real engines, a browser, long stress runs): for a quick loop
quick: $(STAMP) system-deps
	$(BIN)/pytest -n 2 -m "not slow"

bench: $(STAMP) system-deps
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(VENV)-lock .pytest_cache
