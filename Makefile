# The two commands: `make demo` and `make test`. Each sets everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLK := $(VENV)/bin/flk
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test setup services services-down lint vectors bench clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,redis,postgres,s3]'
	@if command -v node >/dev/null 2>&1; then :; else \
	  echo "setup: installing nodejs (Debian) for the Node conformance adapter"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null; fi
	bash scripts/install_wrk.sh
	@if command -v openssl >/dev/null 2>&1; then :; else \
	  echo "setup: installing openssl (Debian) for the local RFC 3161 TSA in tests/governance"; \
	  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null; fi
	touch $(STAMP)

setup: $(STAMP)

services: setup
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

demo: setup
	$(FLK) demo

lint: setup
	$(PY) -m ruff check .

vectors: setup
	$(FLK) vectors generate

test: setup services
	$(PY) -m ruff check .
	$(FLK) vectors check
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .hypothesis
