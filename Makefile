# dnsd: `make run` serves the embedded default; `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8600
# Debian packages the tests drive for real: dig, dnsmasq (upstream and peer),
# ZooKeeper (the registry), iproute2 (network namespaces for glibc clients),
# and the resolvers people run: musl, Go, c-ares (Node.js), Java, Unbound, curl.
# A private Docker engine (docker.io; iptables, which dockerd needs even with
# --iptables=false), busybox-static (the test containers), debootstrap (the
# image's local base: no registry is reached) and docker-compose (the demo).
# Chromium renders the status page headless. gcc and the Python headers build
# the UDP loop's compiled half (dnsd/_fastudp.c).
DEBS   := dnsutils dnsmasq-base zookeeperd iproute2 python3-venv musl-tools golang-go \
          unbound curl nodejs default-jre-headless openssl \
          docker.io iptables busybox-static debootstrap docker-compose chromium \
          gcc libc6-dev python3-dev
# The benchmark's load generator (make bench only).
BENCH_DEBS := dnsperf dnsmasq-base
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# Every pip install takes its versions from the constraints file (see `make lock`).
CONSTRAINTS := .constraints.txt
PIP := $(BIN)/python -m pip install -q -c $(CONSTRAINTS)

.PHONY: run test test-docker deps bench-deps venv lint lock bench bench-scale clean

# dnsd and what it needs to run (make run); the test tools come on top (make test).
$(BIN)/dnsd: pyproject.toml $(CONSTRAINTS) dnsd/_fastudp.c
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || { $(MAKE) deps && $(PYTHON) -m venv $(VENV); }
	$(PIP) -e .
	@touch $@

$(VENV)/.tested: $(BIN)/dnsd
	$(PIP) -e '.[test]'
	@touch $@

venv: $(VENV)/.tested

run: $(BIN)/dnsd
	$(BIN)/dnsd --listen 127.0.0.1:$(PORT) --static resolv-examples/services.toml

# Rebuild the constraints from a fresh virtualenv with the newest versions the
# dependency ranges in pyproject.toml allow; review the diff, then commit it.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q '.[test]'
	{ sed -n '1,3p' $(CONSTRAINTS); .lock-venv/bin/python -m pip freeze --exclude dnsd; } \
		> $(CONSTRAINTS).new && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	rm -rf .lock-venv

deps bench-deps: PKGS = $(if $(filter bench-deps,$@),$(BENCH_DEBS),$(DEBS))
deps bench-deps:
	@missing=""; for p in $(PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

lint: $(VENV)/.tested
	$(BIN)/ruff check dnsd tests
	$(BIN)/mypy dnsd

test: deps $(VENV)/.tested lint
	$(BIN)/python -m pytest -q

# What runs against a real Docker engine (as root), with the slower checks
# `make test` leaves out (the image built by the classic builder too): about
# 3 minutes, plus one more the first time (the image's local base is made).
test-docker: deps $(VENV)/.tested
	$(BIN)/python -m pytest -q -m '' tests/integration/test_docker_engine.py \
		tests/integration/test_docker.py tests/integration/test_docker_source.py \
		tests/integration/test_docker_image.py tests/integration/test_docker_compose.py

bench: bench-deps $(VENV)/.tested
	$(BIN)/python -m tests.perf.bench

bench-scale: bench-deps $(VENV)/.tested
	$(BIN)/python -m tests.perf.scale

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
