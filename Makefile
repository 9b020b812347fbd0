# Two commands on a fresh machine:  `make demo` (install + scan the bundled samples)  and  `make test`.
# Both create or reuse the virtual environment in $(VENV). torch is pinned by constraints.txt to the CPU build.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
DEMO_OUT ?= demo-output

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -c constraints.txt -e '.[cpu,dev]'
	touch $@

demo: install
	$(BIN)/gcage-fast init-model -o .demo/untrained-model --seed 0
	$(BIN)/gcage-fast scan gcage_fast/samples/images -o $(DEMO_OUT) --model .demo/untrained-model --heatmaps png --overwrite
	$(BIN)/gcage-fast verify $(DEMO_OUT)

test: install
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .demo $(DEMO_OUT) .pytest_cache
