# The two quick-start commands: `make demo` and `make test`.
# Each creates .venv if missing, installs opticmem into it, and runs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench redis-server device-inputs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch, unless some torch is already there (a plain `torch`
	# requirement would pull a multi-GB CUDA build): a CPU wheel of 2.13.0 that pip's
	# find-links hold (its dependencies then from the index), else PyTorch's CPU index;
	# only if neither is reachable, 2.13.0 from the default index.
	$(PY) -c "import torch" 2>/dev/null \
	  || { $(PY) -m pip install -q --no-index --no-deps torch==2.13.0 \
	       && $(PY) -m pip install -q torch==2.13.0; } \
	  || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu \
	  || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/opticmem demo

# redis-server comes from Debian's package; the test fixture starts and stops it.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; }

test: $(STAMP) redis-server
	$(PY) -m pytest

# mypy checks the package through a tree of links laid out as installed (see
# [tool.mypy] in pyproject.toml), so imports between the folders are type-checked.
TYPECHECK := build/typecheck/opticmem

lint: $(STAMP)
	rm -rf $(TYPECHECK) && mkdir -p $(TYPECHECK)
	for f in memory/*; do ln -s ../../../$$f $(TYPECHECK)/; done
	for p in render encoder integrations; do ln -s ../../../$$p $(TYPECHECK)/$$p; done
	$(VENV)/bin/ruff check . && $(VENV)/bin/mypy && $(VENV)/bin/mypy benchmarks tools

bench: $(STAMP) redis-server
	$(PY) -m benchmarks

# What tools/device_train.sh and tools/device_bench.sh carry to the lent GPU machine, which
# has no network: pydantic's wheels for its Python 3.12 in .whl/, the
# synthetic-text sources in data/synth/ (built once with wordfreq and Faker, ~2 minutes),
# and for `device_bench.sh queue` a redis-server with its libraries and redis-py's wheel in
# .redis.tar.xz.
device-inputs: $(STAMP) redis-server
	ls .whl/pydantic-*.whl >/dev/null 2>&1 || $(PY) -m pip download -q --only-binary=:all: \
	  --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
	  --platform manylinux_2_17_x86_64 -d .whl pydantic
	test -f .redis.tar.xz || PYTHON=$(PY) tools/pack_redis.sh
	test -f data/synth/meta.json || { $(PY) -m pip install -q -e ".[synth]" \
	  && $(PY) tools/export_synth_sources.py; }

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
