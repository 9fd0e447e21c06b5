# tboot-py. Run as root on Debian 12: `make demo` or `make test` sets the machine up first.
SHELL := /bin/bash
PY := .venv/bin/python
VENV_STAMP := .venv/.installed
APT_STAMP := .state/.apt-installed
APT_PACKAGES := swtpm swtpm-tools libtss2-dev tpm2-tools pkg-config tboot osslsigncode \
	qemu-system-x86 ovmf mtools dosfstools busybox-static cpio gzip xz-utils hyperfine openssl \
	python3-venv postgresql zsh chromium

.PHONY: setup apt venv demo test test-fast bench bench-server lint fuzz artifacts docs clean screenshots

setup: $(APT_STAMP) $(VENV_STAMP)

apt: $(APT_STAMP)
$(APT_STAMP):
	@mkdir -p .state
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

venv: $(VENV_STAMP)
$(VENV_STAMP): pyproject.toml $(APT_STAMP)
	@test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/pip install -q -U pip
	@# compat: a plain path in a .pth; the default editable finder costs every start-up ~30 ms of imports.
	.venv/bin/pip install -q -e '.[dev,server]' --config-settings editable_mode=compat
	@touch $@

artifacts: setup
	$(PY) -m tboot_py._artifacts fetch

demo: setup artifacts
	$(PY) -m tboot_py._demo

# The event-log corpus: TBOOT_PY_CORPUS=/path/to/corpus (default ../shared/corpus). Without one the
# corpus tests do not run and the last line says how many; CI=true makes a missing corpus fail.
TESTS ?= tests
test: setup artifacts
	$(PY) -m pytest -q $(TESTS)

test-fast: setup
	$(PY) -m pytest -q tests/unit tests/property

bench: setup artifacts
	@# Byte-compiled modules, as an installed package has them (some shells disable the cache).
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m compileall -q tboot_py
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m tboot_py._bench

# Attestations/s through the real service (SQLite; PostgreSQL with one and two processes).
bench-server: setup
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m compileall -q tboot_py
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m tboot_py.server._bench

# Man pages and shell completion, regenerated from the argument parser (a test checks they match).
docs: setup
	$(PY) -m tboot_py._docs write

# Screenshots of the dashboard (fleet overview, a failing host's page) taken by its browser
# tests in headless Chromium over real swtpm agents, written to screenshots/ for a person to look at.
screenshots: setup
	rm -rf screenshots
	TBOOT_PY_SCREENSHOTS=$(CURDIR)/screenshots $(PY) -m pytest -q tests/integration/test_dashboard_browser.py
	@ls -l screenshots

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy

fuzz: setup
	$(PY) tests/fuzz/run_all.py --seconds $${FUZZ_SECONDS:-60}

clean:
	rm -rf .state/swtpm-* build dist *.egg-info
