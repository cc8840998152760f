# The two commands of the quick start:
#   make main   set up (first time) and run the main job
#   make test   set up (first time) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: main test setup clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

main: setup
	$(BIN)/python -m simulations.run

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) outputs .pytest_cache
