"""docker-compose.yml agrees with the code: the services, ports and environment it
gives each process are the ones Orion reads (no Docker engine runs here, so the
file is checked, not started)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from config import Settings, flower_basic_auth
from tests.unit.test_readme import variables_read

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "JWT_SECRET_KEY": "test-secret-of-at-least-32-bytes-0123",
    "POSTGRES_PASSWORD": "pg-secret",
    "ORION_DB_OWNER_PASSWORD": "pg-owner-secret",
    "ORION_DB_WEB_PASSWORD": "pg-web-secret",
    "ORION_DB_WORKER_PASSWORD": "pg-worker-secret",
    "ORION_DB_RELAY_PASSWORD": "pg-relay-secret",
    "RABBITMQ_PASSWORD": "mq-secret",
    "FLOWER_BASIC_AUTH": "ops:flower-secret",
    "REDIS_PASSWORD": "redis-secret",
    "METRICS_TOKEN": "metrics-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}
ORION = ("migrate", "web", "relay", "worker", "beat", "flower", "smtp")
# The database role of each Orion service that reads or writes tables
# (deploy/postgres/roles.sql); the others get no database credentials.
DATABASE_ROLES = {"migrate": "owner", "web": "web", "worker": "worker", "relay": "relay"}
DATABASE_SECRETS = {name: value for name, value in SECRETS.items() if "POSTGRES" in name or "_DB_" in name}
INTERPOLATION = re.compile(r"\$\{(\w+):\?[^}]*\}")
DEFAULTED = re.compile(r"\$\{(\w+):-([^}]*)\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    text = INTERPOLATION.sub(lambda m: SECRETS[m.group(1)], (ROOT / "docker-compose.yml").read_text())
    text = DEFAULTED.sub(lambda m: m.group(2), text)
    return yaml.safe_load(text)["services"]


def env(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service["environment"].items()}


def test_the_compose_tool_accepts_the_file():
    tool = (
        (
            ["docker", "compose"]
            if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
            else ["docker-compose"]
        )
        if shutil.which("docker")
        else ["docker-compose"]
    )
    assert shutil.which(tool[0]), "needs docker compose or docker-compose (./run.sh test installs it)"
    result = subprocess.run(
        [*tool, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **SECRETS},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_process_of_spec_runs_beside_its_dependencies(compose):
    assert set(compose) == {
        "postgres",
        "rabbitmq",
        "rabbitmq-setup",
        "redis",
        "proxy",
        *ORION,
        "prometheus",
        "grafana",
    }
    assert compose["worker"]["command"][:4] == ["celery", "-A", "worker", "worker"]
    assert compose["relay"]["command"] == ["python", "-m", "worker.relay"]
    assert compose["beat"]["command"][:4] == ["celery", "-A", "worker", "beat"]
    assert compose["flower"]["command"][:4] == ["celery", "-A", "worker", "flower"]
    assert compose["beat"]["deploy"]["replicas"] == 1
    assert "container_name" not in compose["worker"] and "ports" not in compose["worker"], "scalable"
    for name in ("postgres", "rabbitmq", "redis", "web"):
        assert "healthcheck" in compose[name], name
    for name in ("web", "relay", "worker", "beat", "flower"):
        conditions = {dep: spec["condition"] for dep, spec in compose[name]["depends_on"].items()}
        assert conditions["postgres"] == conditions["rabbitmq"] == conditions["redis"] == "service_healthy"
        assert conditions["migrate"] == conditions["rabbitmq-setup"] == "service_completed_successfully"


def test_every_variable_given_to_orion_is_one_it_reads(compose):
    known = variables_read()
    for name in ORION:
        assert set(env(compose[name])) <= known, (name, set(env(compose[name])) - known)
    assert "METRICS_ROOT" in (ROOT / "deploy" / "entrypoint.sh").read_text()


def test_urls_point_at_the_compose_services_with_their_credentials(compose):
    settings = Settings.from_env(env(compose["web"]))
    assert settings.mode == "services" and settings.jwt_secret_key == SECRETS["JWT_SECRET_KEY"]
    postgres = env(compose["postgres"])
    database = make_url(settings.database_url)
    assert (database.host, database.port, database.username, database.password, database.database) == (
        "postgres",
        5432,
        "orion_web",
        postgres["ORION_DB_WEB_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    rabbit = env(compose["rabbitmq"])
    broker = re.fullmatch(r"amqp://(\w+):([^@]+)@(\w+):5672/(\w+)", settings.broker_url)
    assert broker.groups() == (
        rabbit["RABBITMQ_DEFAULT_USER"],
        rabbit["RABBITMQ_DEFAULT_PASS"],
        "rabbitmq",
        rabbit["RABBITMQ_DEFAULT_VHOST"],
    )
    assert settings.redis_url.startswith(f"redis://:{SECRETS['REDIS_PASSWORD']}@redis:6379/")
    assert settings.socketio_message_queue == settings.redis_url, "the relay follows REDIS_URL"
    assert (settings.smtp_host, settings.smtp_port) == ("smtp", 8025)
    assert compose["smtp"]["command"][-5:-2] == ["0.0.0.0", "--port", str(settings.smtp_port)]


def test_published_ports_match_what_the_processes_listen_on(compose):
    web, flower = Settings.from_env(env(compose["web"])), Settings.from_env(env(compose["flower"]))
    assert compose["web"]["expose"] == [str(web.web_port)]  # to the proxy, not published
    assert f"0.0.0.0:{web.web_port}" in compose["web"]["command"]
    assert f"reverse_proxy web:{web.web_port}" in (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
    assert compose["flower"]["ports"] == [f"127.0.0.1:{flower.flower_port}:{flower.flower_port}"]
    assert flower_basic_auth(flower, env(compose["flower"])) == SECRETS["FLOWER_BASIC_AUTH"]


def test_the_worker_consumes_every_queue_and_the_dead_letter_policy_covers_them(compose):
    import celeryconfig

    queues = {queue.name for queue in celeryconfig.task_queues}
    command = compose["worker"]["command"]
    assert set(command[command.index("-Q") + 1].split(",")) == queues
    setup = (ROOT / "deploy" / "rabbitmq-setup.sh").read_text()
    pattern = re.search(r'"pattern":"([^"]+)"', setup).group(1).replace("\\\\", "\\")
    assert all(re.match(pattern, queue) for queue in queues), (pattern, queues)
    assert '"dead-letter-exchange":"orion.dead_letter"' in setup


def test_redis_persists_the_token_blocklist(compose):
    command = compose["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in compose["redis"]["volumes"])


def test_the_image_creates_every_volume_folder_for_its_user(compose):
    """A fresh named volume takes the owner of the folder it is mounted on; one the
    image lacks is created root-owned and the non-root processes cannot write it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    created = set(re.findall(r"(/var/lib/orion[\w/]*)", dockerfile.split("USER")[0]))
    assert "chown -R orion /var/lib/orion" in dockerfile and "USER orion" in dockerfile
    for name in ORION:
        for volume in compose[name].get("volumes", []):
            source, target = volume.split(":")[:2]
            if not source.startswith("."):
                assert target in created, (name, target)
    assert ".env" in (ROOT / ".dockerignore").read_text().split(), "secrets stay out of the image"


def test_web_is_reached_through_the_tls_proxy_only(compose):
    """Security issue item 7: TLS in the deployment, HTTP redirected (Caddy does both
    for a site address), and the app told the client's address and scheme."""
    assert "ports" not in compose["web"] and compose["web"]["expose"] == ["8000"]
    assert {"80:80", "443:443"} <= set(compose["proxy"]["ports"])
    caddyfile = (ROOT / "deploy" / "caddy" / "Caddyfile").read_text()
    assert "reverse_proxy web:8000" in caddyfile
    assert "./deploy/caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in compose["proxy"]["volumes"]
    assert Settings.from_env(env(compose["web"])).proxy_hops == 1


def test_secrets_go_only_where_they_are_used(compose):
    """Security issue item 8: the JWT key only to the web process; Redis with a password."""
    assert env(compose["web"])["JWT_SECRET_KEY"] == SECRETS["JWT_SECRET_KEY"]
    for name in set(ORION) - {"web"}:
        assert "JWT_SECRET_KEY" not in env(compose[name]), name
    assert "--requirepass" in compose["redis"]["command"]
    assert SECRETS["REDIS_PASSWORD"] in compose["redis"]["command"]
    for name in ("web", "worker", "relay", "beat"):
        assert f":{SECRETS['REDIS_PASSWORD']}@redis:6379" in env(compose[name])["REDIS_URL"], name


def test_prometheus_scrapes_the_web_with_its_metrics_token_and_loads_the_rules(compose):
    """The token the web checks is the one Prometheus sends: the entrypoint writes
    it to the credentials file prometheus.yml names (Prometheus expands no variables)."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    web = Settings.from_env(env(compose["web"]))
    assert job["static_configs"] == [{"targets": [f"web:{web.web_port}"]}]
    assert web.metrics_token == env(compose["prometheus"])["METRICS_TOKEN"] == SECRETS["METRICS_TOKEN"]
    credentials = job["authorization"]["credentials_file"]
    assert f'"$$METRICS_TOKEN" > {credentials} ' in compose["prometheus"]["entrypoint"][2]
    assert any(credentials.startswith(path + "/") for path in compose["prometheus"]["tmpfs"])
    mounts = dict(volume.split(":")[1::-1] for volume in compose["prometheus"]["volumes"])
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    assert mounts["/etc/prometheus/rules"] == "./deploy/prometheus/rules"


def test_grafana_provisions_the_prometheus_data_source_and_the_dashboard(compose):
    grafana = ROOT / "deploy" / "grafana"
    mounts = dict(volume.split(":")[1::-1] for volume in compose["grafana"]["volumes"])
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    provisioning = grafana / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090" and "9090:9090" in compose["prometheus"]["ports"][0]
    [provider] = yaml.safe_load((provisioning / "dashboards/orion.yml").read_text())["providers"]
    assert mounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    dashboard = json.loads((grafana / "dashboards" / "orion.json").read_text())
    sources = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert sources == {source["uid"]}
    assert env(compose["grafana"])["GF_SECURITY_ADMIN_PASSWORD"] == SECRETS["GRAFANA_ADMIN_PASSWORD"]


def test_each_component_logs_in_to_the_database_as_a_role_of_its_own(compose):
    """Security issue item 8: no database secret is shared between containers. The
    postgres container makes one role per component (its init script runs
    roles.sql with each password) and alone knows the superuser's password; each
    Orion service gets the URL of its own role; beat, Flower and the SMTP sink,
    which read no table, get no database credentials at all."""
    postgres = env(compose["postgres"])
    assert (
        postgres["POSTGRES_USER"] == "postgres"
        and postgres["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]
    )
    mounts = dict(volume.split(":")[:2] for volume in compose["postgres"]["volumes"])
    init = ROOT / "deploy" / "postgres" / "init-roles.sh"
    assert mounts["./deploy/postgres/init-roles.sh"].startswith("/docker-entrypoint-initdb.d/")
    assert mounts["./deploy/postgres/roles.sql"] in init.read_text()
    seen = set()
    for name, component in DATABASE_ROLES.items():
        url = make_url(Settings.from_env(env(compose[name])).database_url)
        secret = f"ORION_DB_{component.upper()}_PASSWORD"
        assert (url.username, url.password, url.host, url.database) == (
            f"orion_{component}",
            SECRETS[secret],
            "postgres",
            postgres["POSTGRES_DB"],
        ), name
        assert postgres[secret] == SECRETS[secret], "the role is made with the password the service uses"
        assert f'{component}_password="${{{secret}:?' in init.read_text(), "the init script passes it on"
        others = set(DATABASE_SECRETS.values()) - {SECRETS[secret]}
        assert not others & set(env(compose[name]).values()) and not any(
            other in value for other in others for value in env(compose[name]).values()
        ), (name, "carries another component's database secret")
        seen.add(url.password)
    assert len(seen) == len(DATABASE_ROLES)
    for name in set(ORION) - set(DATABASE_ROLES):
        values = env(compose[name]).values()
        assert "DATABASE_URL" not in env(compose[name]) and "PAYMENT_SANDBOX_URL" not in env(compose[name]), (
            name
        )
        assert not any(secret in value for secret in DATABASE_SECRETS.values() for value in values), name
    roles = (ROOT / "deploy" / "postgres" / "roles.sql").read_text()
    for component in DATABASE_ROLES.values():
        assert f"\\set {component} :prefix _{component}" in roles
    assert "\\set prefix orion" in roles


def test_the_smtp_sink_gets_no_secret_at_all(compose):
    """It only receives mail: no database, broker or Redis credentials."""
    values = env(compose["smtp"]).values()
    assert not any(secret in value for secret in SECRETS.values() for value in values)
