# hdc: `make demo` and `make test` each create .venv when it is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO := runs/demo

.PHONY: demo test test-browser bench clean

# torch goes in first, on its own: the pinned range picks the local CPU wheel, and nothing
# installed later can pull a CUDA build in its place.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check 'torch>=2.2,<2.14'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# The suite also runs `hdc batch` on a local Ray cluster of 2 workers: Ray Data is an optional
# extra, installed for the tests and not for the demo.
RAY_STAMP := $(VENV)/.ray-stamp
$(RAY_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,ray]'
	touch $(RAY_STAMP)

test: $(RAY_STAMP)
	$(BIN)/python -m pytest -q

# The demo: the news corpus and a few sample documents (examples/, which the README's commands
# use), then a model trained, evaluated, run, exported and inspected in runs/demo.
demo: $(STAMP)
	$(BIN)/python -m hdc.news data/news --examples examples
	rm -rf $(DEMO)
	$(BIN)/hdc train --config configs/news.yaml --train data/news/train.jsonl --valid data/news/valid.jsonl --out $(DEMO)
	$(BIN)/hdc evaluate $(DEMO) data/news/test.jsonl --report $(DEMO)/report
	$(BIN)/hdc predict $(DEMO) data/news/test.jsonl --output $(DEMO)/predictions.jsonl
	head -n 3 $(DEMO)/predictions.jsonl
	$(BIN)/hdc export $(DEMO) $(DEMO)/bundle
	$(BIN)/hdc predict $(DEMO)/bundle data/news/test.jsonl --output $(DEMO)/predictions-onnx.jsonl
	head -n 3 $(DEMO)/predictions-onnx.jsonl
	$(BIN)/hdc inspect $(DEMO) examples/article.txt --html $(DEMO)/article.html
	@echo "demo done: open $(DEMO)/article.html to see the weights of every level." >&2
	@echo "next: . $(BIN)/activate, then the README's commands, e.g. hdc predict $(DEMO) examples/article.txt" >&2

# Installs Debian's Chromium (needs root or sudo) and runs the inspection tests, the page render included.
test-browser: $(STAMP)
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/pip install -q playwright
	$(BIN)/python -m pytest -q tests/test_explain.py

bench: $(STAMP)
	$(BIN)/python bench/news.py

clean:
	rm -rf $(VENV) runs bench/out
