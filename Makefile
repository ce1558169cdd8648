# The book's two entry points (see README.md):
#   make book   run every chapter on the embedded default (teach profile, CPU, offline)
#   make test   lint, unit tests and every chapter in the smoke profile
# Both create or reuse the project-local virtual environment .venv first.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= teach
export HF_HUB_OFFLINE ?= 1

.PHONY: book test install lint clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e ".[book,dev]"
	@touch $@

install: $(STAMP)

book: $(STAMP)
	$(PY) -m duet_lib.book run --profile $(PROFILE) $(BOOK_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check duet_lib tests chapters benchmarks
	$(VENV)/bin/ruff format --check duet_lib tests chapters benchmarks

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf build
