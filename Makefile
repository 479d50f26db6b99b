# The README's two commands are `make demo` and `make test`; everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-mixed test lint bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# --no-reuse: a second demo would otherwise answer every item from the first run's results
# (at no cost), and its report would show nothing spent or saved.
demo: install
	$(BIN)/batcher run jobs/example.toml --sandbox --no-reuse

# The same job on four providers: DeepSeek (direct mode), Gemini, OpenAI and Anthropic.
demo-mixed: install
	$(BIN)/batcher run jobs/example-mixed.toml --sandbox --no-reuse

# Debian's chromium opens the HTML report in tests/test_report_html.py; CI runs as root.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# -n 3: most of the suite waits on subprocesses and sandbox turnarounds, so three workers
# keep two cores busy.
test: install browser
	$(BIN)/ruff check batcher tests bench scripts
	$(BIN)/pytest -n 3

lint: install
	$(BIN)/ruff check batcher tests bench scripts
	$(BIN)/ruff format --check batcher tests bench scripts

bench: install
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) state/*.db state/*.db-wal state/*.db-shm
