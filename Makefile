# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo up test lint bench system-deps bench-deps java-deps kafka-deps prometheus-deps \
  haproxy-deps

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@ $(VENV)/.installed-test $(VENV)/.installed

# Debian packages the tests use: mosquitto clients (mosquitto_pub/sub) drive the broker in tests.
system-deps:
	@command -v mosquitto_pub >/dev/null && command -v mosquitto_sub >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto-clients)

# A real Apache Kafka for the tests (tests/apache_kafka.py): Java 17+ and Maven, then the broker's
# jars from Maven Central (tools/kafka/pom.xml pins the version) into tools/kafka/target/lib.
KAFKA_LIB := tools/kafka/target/lib
java-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null || \
	  ($(SUDO) apt-get update -q && \
	   ($(SUDO) apt-get install -y -q openjdk-17-jre-headless maven || \
	    $(SUDO) apt-get install -y -q default-jre-headless maven))

kafka-deps: java-deps $(KAFKA_LIB)/.fetched

$(KAFKA_LIB)/.fetched: tools/kafka/pom.xml
	rm -rf $(KAFKA_LIB)
	cd tools/kafka && mvn -q -B dependency:copy-dependencies
	touch $@

# A real Prometheus for the tests (tests/prometheus_fixture.py, bayou/prometheus.py) and promtool
# to check the shipped config and rules (dashboards/prometheus/). Debian's package starts its own
# service on install where systemd runs (and its recommended node exporter, on 9100); the tests
# start their own Prometheus on free ports, so stop and disable the packaged services: nothing
# may listen on 9090 because of us. Quiet and harmless where there is no systemd (containers,
# CI) or a service never started.
prometheus-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q prometheus && \
	   (if [ -d /run/systemd/system ]; then \
	      $(SUDO) systemctl disable --now prometheus prometheus-node-exporter \
	        >/dev/null 2>&1 || true; \
	    else \
	      for s in prometheus prometheus-node-exporter; do \
	        $(SUDO) service $$s stop >/dev/null 2>&1 || true; \
	      done; \
	    fi))

# HAProxy, to check the compose stack's load balancer config (tests/test_compose.py runs
# `haproxy -c`). Debian's package enables its service where systemd runs; its default config
# listens on nothing, but stop and disable it all the same: the tests need only the binary.
haproxy-deps:
	@command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q haproxy && \
	   (if [ -d /run/systemd/system ]; then \
	      $(SUDO) systemctl disable --now haproxy >/dev/null 2>&1 || true; \
	    else \
	      $(SUDO) service haproxy stop >/dev/null 2>&1 || true; \
	    fi))

# The benchmark compares against a real mosquitto broker.
bench-deps: system-deps
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
	  ($(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q mosquitto)

# `make demo DEMO_FLAGS=--prometheus` also runs a Prometheus scraping the stack.
demo: $(VENV)/.installed
	$(BIN)/bayou up --demo $(DEMO_FLAGS)

up: $(VENV)/.installed
	$(BIN)/bayou up

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(VENV)/.installed-test system-deps kafka-deps prometheus-deps haproxy-deps lint
	$(BIN)/pytest

# `make bench BENCH_FLAGS="--kafka both"` also runs ingest, fan-out, agent_count and e2e_latency
# on a 3-broker Apache Kafka (installed by kafka-deps when a --kafka flag is given).
bench: $(VENV)/.installed-bench bench-deps $(if $(findstring --kafka,$(BENCH_FLAGS)),kafka-deps)
	$(BIN)/python -m benchmarks.run $(BENCH_FLAGS)
