# Both entry points create .venv and install what they need from the lock; nothing is assumed
# installed by hand. What the tests run against is exactly what requirements.lock pins, with hashes.
#
# The main Python is Debian 12's own when the box has it (3.11.2, what edge boxes and Raspberry Pi
# OS run, and the oldest we support); the other supported Pythons get a smoke test.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
OTHER_PYTHONS ?= 3.12 3.13
LOCK := requirements.lock
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The lock resolves for every supported Python at once (markers where they differ).
LOCK_COMMAND = $(VENV)/bin/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 \
	--generate-hashes --quiet -o $(LOCK)

.PHONY: demo test test-suite test-fast test-deps smoke bench bench-deps lint lock schemas example-models clean packaging-tools

$(STAMP): $(LOCK) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reconciler demo

test: packaging-tools test-suite smoke

# The checkers of packaging/ (tests/integration/test_operator_packages.py): hadolint and
# kubernetes-validate are dev dependencies, in the lock; systemd-analyze is Debian's systemd package,
# installed when missing and this is root on a Debian box. Otherwise its checks skip and say why.
packaging-tools: $(STAMP)
	@command -v systemd-analyze >/dev/null \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	       && apt-get install -y --no-install-recommends systemd >/dev/null; } \
	  || echo "packaging-tools: systemd-analyze is missing (apt-get install systemd, as root): its checks skip"

# The layers first (.importlinter draws them): a pure core that imports a door fails here, in seconds.
test-suite: $(STAMP) test-deps
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# What tests need beyond Python: a real OCI registry (Debian's docker-registry, run by the tests on
# 127.0.0.1 from its binary) and htpasswd. Installed when missing and we are root; the package enables
# a system service on all interfaces, which is disabled and stopped at once. Otherwise its tests skip
# and say why.
REGISTRY_PACKAGES := docker-registry apache2-utils
test-deps:
	@if [ -x /usr/bin/docker-registry ] && command -v htpasswd >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	  echo "test-deps: $(REGISTRY_PACKAGES) missing and cannot be installed here (not root or no apt): the OCI registry tests skip"; exit 0; fi; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(REGISTRY_PACKAGES) \
	  || echo "test-deps: apt-get could not install $(REGISTRY_PACKAGES): the OCI registry tests skip"; \
	if [ -x /usr/bin/docker-registry ]; then \
	  (systemctl disable --now docker-registry || update-rc.d docker-registry disable) >/dev/null 2>&1; \
	  (service docker-registry stop) >/dev/null 2>&1; true; fi

# The unit suite alone (tests/unit: the pure core and seams with tiny fakes; no git server, agent
# process, onnxruntime session or HTTP server): under a minute on 2 cores. tests/integration has the rest.
test-fast: $(STAMP)
	$(PY) -m pytest -q tests/unit

# Under each other supported Python: a fresh venv from the lock, then two real sites converge,
# move to a new version and serve it (tests/integration/test_e2e.py), and the fleet cache reads trees.
smoke:
	@set -e; for version in $(OTHER_PYTHONS); do \
	  python=$$(scripts/find-python $$version) || { echo "smoke: SKIPPED Python $$version: not installed on this box"; continue; }; \
	  venv=.venv-$$version; \
	  if [ ! -f $$venv/.installed ] || [ $(LOCK) -nt $$venv/.installed ] || [ pyproject.toml -nt $$venv/.installed ]; then \
	    rm -rf $$venv; $$python -m venv $$venv; \
	    $$venv/bin/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK); \
	    $$venv/bin/python -m pip install --quiet --no-deps -e .; \
	    touch $$venv/.installed; \
	  fi; \
	  echo "smoke: $$($$venv/bin/python -V) from $$python"; \
	  $$venv/bin/python -m pytest -q -p no:cacheprovider tests/integration/test_e2e.py tests/integration/test_source.py tests/unit/test_lock.py; \
	done

# Refresh the lock to the newest releases pyproject's ranges admit; run `make test` after it.
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(LOCK_COMMAND)

bench: $(STAMP)
	$(PY) bench/run_all.py

# What bench/bench_fleet_sim.py serves git with, as production would: Debian's nginx, fcgiwrap and
# git's own http-backend (without them the simulator uses reconciler's test server and says so).
bench-deps:
	@if command -v nginx >/dev/null && command -v fcgiwrap >/dev/null; then echo "bench-deps: nginx and fcgiwrap present"; \
	else apt-get install -y --no-install-recommends nginx-light fcgiwrap; fi

lint: $(STAMP)
	$(VENV)/bin/ruff check reconciler tests bench scripts

schemas: $(STAMP)
	$(PY) -m reconciler.devtools.schema_gen

example-models: $(STAMP)
	$(PY) scripts/build_example_fleet.py

clean:
	rm -rf $(VENV) .venv-3.* .pytest_cache .ruff_cache
