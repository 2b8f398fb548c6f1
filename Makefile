# Both entry points create .venv and install what they need; nothing is assumed installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint schemas example-models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/reconciler demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/run_all.py

lint: $(STAMP)
	$(VENV)/bin/ruff check reconciler tests bench scripts

schemas: $(STAMP)
	$(PY) -m reconciler.manifests.schema_gen

example-models: $(STAMP)
	$(PY) scripts/build_example_fleet.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
