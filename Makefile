# Two commands set everything up on a fresh machine: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cdl-installed
export DVC_NO_ANALYTICS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test bench lint screenshots demo proto dist clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[all,dev]"
	@touch $(STAMP)

# The main job: the studio where a display exists, the headless demo elsewhere.
run: $(STAMP)
	$(PY) -m studio

demo: $(STAMP)
	$(PY) -m studio --headless

lint: $(STAMP)
	$(VENV)/bin/ruff check runtime studio edge_agent tests installers
	$(VENV)/bin/lint-imports

test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q --timeout=900 $(PYTEST_ARGS)

# Triton's perf_analyzer (C++) beside the Python load generator for the agent throughput benchmark; where it
# cannot be fetched, that benchmark says why and measures with the Python one alone.
bench: $(STAMP)
	-PY=$(PY) tests/benchmarks/fetch_perf_analyzer.sh
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -s -m bench tests/benchmarks $(PYTEST_ARGS)

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m studio.screenshots screenshots

# The wheel, the one-file launcher, the Linux desktop package and the edge agent package, into dist/.
dist: $(STAMP)
	$(PY) installers/build.py --out dist

proto: $(STAMP)
	$(PY) -m runtime.proto.generate

clean-venv:
	rm -rf $(VENV)
