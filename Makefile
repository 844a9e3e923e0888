# Two entry points for a fresh machine with Python 3.11 and make: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-quick clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/optllm demo

test: $(STAMP)
	$(PY) -m pytest -n 2 --timeout 900

bench: $(STAMP)
	$(VENV)/bin/optllm bench overruling logparsing routerbench routellm:gsm8k synthetic --reps 10 --out bench-results

bench-quick: $(STAMP)
	$(VENV)/bin/optllm bench overruling --quick --out bench-quick

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
