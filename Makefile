# Quick start: `make demo` and `make test`. Both create .venv and install ssmkit[all,dev] under
# constraints.txt when missing or out of date, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ssmkit-installed

.PHONY: demo test bench install clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssmkit demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -m "not gpu" -q

bench: $(STAMP)
	$(PY) benchmarks/scan.py

clean:
	rm -rf $(VENV) build *.egg-info outputs
