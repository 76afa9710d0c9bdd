# The two commands: `make demo` and `make test`. Each sets everything up first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FLK := $(VENV)/bin/flk
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-pure setup services services-down lint vectors bench clean lab notebooks-executed

# The compiled fast paths (impl/core/_fastcore.c, impl/verifier/_fastverify.c, impl/dedup/_fastsqlite.c) need gcc, the Python headers, libssl-dev and libsqlite3-dev;
# without them the install still succeeds and the pure-Python core is used.
HAVE_CTOOLS := command -v gcc >/dev/null 2>&1 \
	&& echo '\#include <openssl/sha.h>' | gcc -E - >/dev/null 2>&1 \
	&& $(PYTHON) -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"

$(STAMP): pyproject.toml setup.py impl/core/_fastcore.c impl/core/_fastcore.h impl/core/_fastcore_constants.h \
	  impl/verifier/_fastverify.c impl/verifier/_fastverify_constants.h sim/_fasthistory.c impl/dedup/_fastsqlite.c impl/dedup/_walbuf.h
	@if $(HAVE_CTOOLS); then :; else \
	  echo "setup: installing gcc, python3-dev and libssl-dev (Debian) for the compiled core"; \
	  (apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev libssl-dev >/dev/null) \
	  || echo "setup: could not install them; the pure-Python core will be used"; fi
	bash scripts/install_deb.sh /usr/include/sqlite3.h libsqlite3-dev "for the compiled SQLite dedup rows" \
	  || echo "setup: could not install libsqlite3-dev; the SQLite store's pure rows will be used"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -qq -e '.[dev,redis,postgres,s3]'  # -qq: no setuptools notes for the editable layout (errors still shown)
	bash scripts/install_deb.sh node nodejs "for the Node conformance adapter"
	bash scripts/install_wrk.sh
	bash scripts/install_go.sh
	bash scripts/install_rust.sh
	bash scripts/install_chromium.sh
	bash scripts/install_observability.sh
	bash scripts/install_deb.sh openssl openssl "for the local RFC 3161 TSA in tests/governance"
	bash scripts/install_deb.sh ip iproute2 "for flk cluster network namespaces"
	bash scripts/install_deb.sh nft nftables "for flk cluster partitions (kernel drop rules)"
	bash scripts/install_deb.sh faketime faketime "for flk cluster clock skew (libfaketime)"
	@$(PY) -c "from flk.impl.core.canonical import CORE_PATH; print('setup: core path:', CORE_PATH)"
	touch $(STAMP)

setup: $(STAMP)

services: setup
	bash scripts/services.sh up

services-down:
	bash scripts/services.sh down

demo: setup
	$(FLK) demo

# JupyterLab on the notebooks folder, loopback only, no browser (open the URL it prints);
# --allow-root only where the shell is root (containers, CI), which Jupyter refuses otherwise
LAB_PORT ?= 8888
lab: setup
	$(VENV)/bin/jupyter lab --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) --ServerApp.root_dir=notebooks \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

# Executed copies of the notebooks (with outputs) in runs/notebooks/ for browsing;
# the stored notebooks stay output-free. NOTEBOOKS="01-quickstart 04-chaos" runs only those.
notebooks-executed: setup
	$(PY) scripts/execute_notebooks.py $(NOTEBOOKS)

lint: setup
	$(PY) -m ruff check .

vectors: setup
	$(FLK) vectors generate

# pytest runs on PYTEST_WORKERS processes (pytest-xdist), a whole test file per worker so module
# fixtures are built once; PYTEST_WORKERS=0 runs everything in this process. CI has 2 cores and
# 3 workers: about a fifth of a worker's time is spent waiting (on a server starting, a crash
# cycle, a syslog delivery) rather than computing, and the third worker fills it (a run of the
# suite on 2 cores, same machine and code: 929 s with 2 workers, 799 s with 3).
PYTEST_WORKERS ?= 3

# The vectors are checked on both cores: the compiled fast path and the pure-Python reference
# (FLK_PURE=1); tests/foundation/test_fastcore.py re-runs the differential suites with FLK_PURE=1.
# pytest runs with a temp folder of its own (TMPDIR; mode 1777 like /tmp: the private PostgreSQL
# servers run as the postgres user inside it): what the run leaves there besides pytest's and
# dask's own folders is a leak, and scripts/check_temp_left.py fails the run.
test: setup services
	$(PY) -m ruff check .
	$(FLK) vectors check
	FLK_PURE=1 $(FLK) vectors check
	@tmp=$$(mktemp -d "$${TMPDIR:-/tmp}/flk-make-test-XXXXXX") && chmod 1777 "$$tmp" && echo "pytest temp folder: $$tmp" && \
	  TMPDIR=$$tmp $(PY) -m pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); \
	  rc=$$?; $(PY) scripts/check_temp_left.py $$tmp || rc=1; rm -rf $$tmp; exit $$rc

# The whole suite with the accelerated core disabled (the pure-Python reference everywhere).
test-pure:
	FLK_PURE=1 $(MAKE) test

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .hypothesis
