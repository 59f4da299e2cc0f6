# Quick start: `make demo` and `make test`. Both create .venv and install ssmkit[all,dev] under
# constraints.txt when missing or out of date, then run. The install is a strict editable one (a tree of links
# under build/ that IDEs and type checkers follow); it is redone when a Python module is added or removed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ssmkit-installed
MODULES := build/ssmkit-modules.txt
# Rewrite the module list only when it changes, so that the install is redone only then.
$(shell mkdir -p build; find ssmkit core kernels vision audio genomics timeseries recsys -name '*.py' \
	-not -path '*/__pycache__/*' | LC_ALL=C sort > $(MODULES).new; \
	cmp -s $(MODULES).new $(MODULES) && rm $(MODULES).new || mv $(MODULES).new $(MODULES))

.PHONY: demo test test-heavy bench install clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt $(MODULES) | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt \
		--config-settings editable_mode=strict -e ".[all,dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ssmkit demo

# Two pytest workers of one thread each (most tests are small and single-threaded; a module's tests stay on one
# worker so its module fixtures run once); `make test TEST_WORKERS=0` runs them in this process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(VENV)/bin/ruff check .
	OMP_NUM_THREADS=1 $(PY) -m pytest -m "not gpu and not heavy" -q -n $(TEST_WORKERS) --dist loadscope

test-heavy: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -m heavy -q

bench: $(STAMP)
	$(PY) benchmarks/scan.py

clean:
	rm -rf $(VENV) build *.egg-info outputs
