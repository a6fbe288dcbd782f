# Two commands a newcomer types: `make run` and `make test`. Everything else is plumbing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
PORT   ?= 8501
VERL   := verl==0.9.1

.PHONY: run test check lint bench chromium clean demo

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or: make PYTHON=python3 ...)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq -r requirements-dev.txt
	@# verl's own file logger writes the verl test files; its package deps (ray, a
	@# transformers pin) are not needed for that one module, hence --no-deps.
	$(PY) -m pip install -qq --no-deps $(VERL)
	@# klwatch itself, editable: .venv/bin/klwatch, and `import monitor` from any directory.
	@# Its dependencies are the pinned ones above (--no-deps); the build backend is the pinned
	@# setuptools already in the venv (--no-build-isolation: nothing fetched to build).
	$(PY) -m pip install -qq --no-deps --no-build-isolation -e .
	touch $@

# The dashboard on the embedded sample runs, plus a live demo training run into runs/.
# Ctrl-C reaches both (same process group); the trap also stops the trainer if make is
# killed some other way. The trainer gets one thread so the dashboard stays responsive.
run: $(VENV)/.installed
	@mkdir -p runs
	@OMP_NUM_THREADS=1 $(PY) -m trainer --steps 100000 --kl-controller adaptive \
	    --run-dir runs/live-demo-$$(date +%Y%m%d-%H%M%S) --quiet & trainer=$$!; \
	  trap 'kill -TERM $$trainer 2>/dev/null; wait $$trainer' EXIT; \
	  echo "klwatch: http://127.0.0.1:$(PORT)  (demo trainer pid $$trainer writing into runs/)"; \
	  $(PY) -m streamlit run app.py --server.port $(PORT) -- --root sample_runs --root runs

chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
	  (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium); }

test: $(VENV)/.installed chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

# The quick lane before a commit: lint, format, types and the tests that take seconds (no
# browser; no torchrun, TRL, transformers, kill -9 or packaging tests: those are marked
# slow), spread over every core (pytest-xdist). `make test` runs everything, one test at a
# time (the browser tests time latencies), and is what CI runs.
check: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q -m "not browser and not slow" -n auto

lint: $(VENV)/.installed
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: $(VENV)/.installed
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis build dist *.egg-info
