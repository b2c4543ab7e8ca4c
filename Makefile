# shadowtap: the targets the README names. Everything installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install system-deps test lint demo bench example-log clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[test,fast]'
	touch $(STAMP)

system-deps:
	bash scripts/install_system_deps.sh

lint: install
	$(BIN)/ruff check .

test: install system-deps lint
	$(BIN)/python -m pytest -q

demo: install
	bash scripts/demo.sh

bench: install system-deps
	$(BIN)/python scripts/bench.py

example-log: install system-deps
	$(BIN)/python scripts/make_example_log.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache *.egg-info
