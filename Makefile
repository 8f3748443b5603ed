# goldenbake: `make bake-and-swap` runs the whole pipeline on the local target; `make test` runs
# every test. Both install what they need first (`make install`).

SHELL := /bin/bash
SERVICE ?= demo
PYTHON ?= python3
VENV := .venv
BAKE := $(VENV)/bin/bake
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# tests marked `root` need root (the local base disk's builder); other users leave them out
NOT_ROOT := $(shell [ "$$(id -u)" = 0 ] || echo " and not root")
# command:package pairs installed through apt when the command is missing
SYSTEM_PACKAGES := packer:packer qemu-system-x86_64:qemu-system-x86 qemu-img:qemu-utils \
	mmdebstrap:mmdebstrap mke2fs:e2fsprogs ssh:openssh-client ruby:ruby haproxy:haproxy chromium:chromium

# What the service answers at its URL on the local target, through the load balancer.
define ANSWER
import json, subprocess, sys, urllib.request
status = json.loads(subprocess.run(["$(BAKE)", "--json", "local", "status"], check=True,
                                   capture_output=True, text=True).stdout)
url = status["services"][sys.argv[1]]["url"]
print(f"{sys.argv[1]} answers at {url}:")
print(urllib.request.urlopen(url, timeout=10).read().decode())
endef
export ANSWER

.PHONY: install system-packages bake-and-swap test test-fast lint bench mutation clean

install: system-packages $(VENV)/.installed

system-packages:
	@missing=""; \
	for pair in $(SYSTEM_PACKAGES); do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v "$${pair%%:*}" >/dev/null 2>&1 || \
	    missing="$$missing $${pair##*:}"; \
	done; \
	$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

bake-and-swap: install
	$(BAKE) bake-and-swap $(SERVICE)
	$(BAKE) status $(SERVICE)
	$(BAKE) local status
	@$(VENV)/bin/python -c "$$ANSWER" $(SERVICE)

# The tests that boot no machine run on every core (pytest-xdist), then the ones that do, alone:
# they share booted machines and measure traffic, and a second VM suite beside them would only
# slow both. Both parts run, whichever fails; `make test` fails if either did.
test: install
	@status=0; \
	$(VENV)/bin/pytest -m "not vm" -n auto || status=$$?; \
	$(VENV)/bin/pytest -m vm || status=$$?; \
	exit $$status

test-fast: install
	$(VENV)/bin/pytest -m "not vm$(NOT_ROOT)" -n auto

lint: install
	$(VENV)/bin/ruff check bake tests bench serverspec_tests
	$(VENV)/bin/ruff format --check bake tests bench serverspec_tests
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/python bench/local_bake.py
	$(VENV)/bin/python bench/guest_floor.py
	$(VENV)/bin/python bench/bake_overhead.py
	$(VENV)/bin/python bench/machines.py
	$(VENV)/bin/python bench/rollout.py

# A report, not a gate (and not part of `make test`): how many small code changes the fast
# suite notices; survivors and the JSON report land in .bake-mutation/report.json.
mutation: install
	$(VENV)/bin/python -m tests.mutation bake/stages bake/bluegreen.py bake/retire.py bake/config.py bake/history.py

clean:
	-$(BAKE) local down
	rm -rf .bake
