"""deploy/k8s passes offline schema validation and agrees with the code and with
docker-compose.yml. No cluster runs here: the manifests are checked, not applied
(docs/operations.md, "Kubernetes")."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy.engine import make_url

from config import Settings
from tests.support.k8s import (
    K8S,
    KEDA_CRDS,
    KUBERNETES_VERSION,
    ROOT,
    documents,
    env_names,
    keda_crd,
    kustomization,
    load_manifests,
    pod_specs,
    secret_refs,
    validate,
)
from tests.unit.test_readme import variables_read

ORION_IMAGE = "orion"
# Deployment or Job name -> compose service running the same process.
COMPOSE_SERVICE = {
    "orion-web": "web",
    "orion-relay": "relay",
    "orion-worker": "worker",
    "orion-beat": "beat",
    "orion-flower": "flower",
    "orion-smtp": "smtp",
    "orion-migrate": "migrate",
}
# What each Orion process is given from Secrets, and nothing more.
SECRET_VARIABLES = {
    "orion-web": {"JWT_SECRET_KEY", "METRICS_TOKEN", "DATABASE_URL", "BROKER_URL", "REDIS_URL"},
    "orion-worker": {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "REDIS_URL"},
    "orion-relay": {"DATABASE_URL", "BROKER_URL", "RESULT_BACKEND", "REDIS_URL"},
    "orion-beat": {"BROKER_URL"},
    "orion-flower": {"BROKER_URL", "FLOWER_BASIC_AUTH"},
    "orion-migrate": {"DATABASE_URL"},
    "orion-smtp": set(),
}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return load_manifests()


def named(objects: list[dict], kind: str, name: str) -> dict:
    return next(obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name)


def orion_containers(objects: list[dict]) -> dict[str, dict]:
    return {
        name: spec["containers"][0]
        for name, spec in pod_specs(objects).items()
        if spec["containers"][0]["image"].split(":")[0] == ORION_IMAGE
    }


def example_secrets() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc["stringData"] for doc in documents(K8S / "secret.example.yaml")}


def test_every_manifest_passes_the_kubernetes_and_keda_schemas(objects):
    for obj in objects + documents(K8S / "secret.example.yaml"):
        validate(obj)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "Job", "ConfigMap", "ScaledObject", "TriggerAuthentication"} <= kinds


def test_the_vendored_keda_schemas_are_the_crds_of_those_kinds():
    for kind in KEDA_CRDS:
        crd = keda_crd(kind)
        kubernetes_validate.validate(crd, KUBERNETES_VERSION, strict=True)
        assert crd["spec"]["group"] == "keda.sh"
        assert crd["spec"]["names"]["kind"] in (kind, f"Cluster{kind}")


@pytest.mark.parametrize(
    "path, value",
    [
        (("spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet", "pathh"), "/healthz"),
        (("spec", "replicas"), "two"),
        (("spec", "template", "spec", "containers", 0, "resources", "requests", "cpu"), ["1"]),
    ],
)
def test_a_broken_deployment_fails_validation(objects, path, value):
    broken = set_at(copy.deepcopy(named(objects, "Deployment", "orion-web")), path, value)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(broken)


@pytest.mark.parametrize(
    "kind, name, path, value",
    [
        ("ScaledObject", "orion-worker", ("spec", "minReplicas"), 1),
        ("ScaledObject", "orion-worker", ("spec", "maxReplicaCount"), "ten"),
        ("ScaledObject", "orion-worker", ("spec", "triggers", 0, "metadata", "value"), 100),
        ("TriggerAuthentication", "orion-rabbitmq", ("spec", "secretTargetRef", 0, "secret"), "x"),
    ],
)
def test_a_broken_keda_object_fails_validation(objects, kind, name, path, value):
    broken = set_at(copy.deepcopy(named(objects, kind, name)), path, value)
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


def set_at(obj: dict, path: tuple, value) -> dict:
    target = obj
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return obj


def test_kustomization_lists_every_manifest_and_no_example():
    listed = set(kustomization()["resources"])
    present = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present - {"secret.example.yaml"}


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (with its kustomize) is not installed")
def test_kubectl_kustomize_renders_what_the_tests_check(objects):
    rendered = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=True)
    assert sorted(map(identity, yaml.safe_load_all(rendered.stdout))) == sorted(map(identity, objects))


def identity(obj: dict) -> tuple:
    return obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace")


def test_keda_scales_the_worker_on_exactly_orions_queues(objects):
    import celeryconfig

    scaled = named(objects, "ScaledObject", "orion-worker")["spec"]
    assert named(objects, "Deployment", scaled["scaleTargetRef"]["name"])
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"rabbitmq"}
    queues = [t["metadata"]["queueName"] for t in triggers]
    assert sorted(queues) == sorted(queue.name for queue in celeryconfig.task_queues)
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    auth = {t["authenticationRef"]["name"] for t in triggers}
    assert auth == {obj["metadata"]["name"] for obj in objects if obj["kind"] == "TriggerAuthentication"}
    refs = named(objects, "TriggerAuthentication", auth.pop())["spec"]["secretTargetRef"]
    assert [(r["parameter"], r["name"], r["key"]) for r in refs] == [("host", "orion-services", "BROKER_URL")]
    assert example_secrets()["orion-services"]["BROKER_URL"].startswith("amqp://")
    assert "replicas" not in named(objects, "Deployment", "orion-worker")["spec"], "KEDA owns the count"


def test_each_process_runs_what_compose_runs(objects):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    containers = orion_containers(objects)
    assert set(containers) == set(COMPOSE_SERVICE)
    for name, container in containers.items():
        assert "command" not in container, f"{name}: command would skip deploy/entrypoint.sh"
        assert container["args"] == compose[COMPOSE_SERVICE[name]]["command"], name


def test_beat_is_one_replica_never_two_at_once(objects):
    beat = named(objects, "Deployment", "orion-beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"]["type"] == "Recreate"


def test_probes_hit_routes_the_web_app_serves(objects):
    from web import create_app

    app = create_app()
    web = orion_containers(objects)["orion-web"]
    probes = {kind: web[kind]["httpGet"]["path"] for kind in ("livenessProbe", "readinessProbe")}
    assert probes == {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert set(probes.values()) <= routes
    assert app.test_client().get("/healthz").status_code == 200
    worker_probe = " ".join(orion_containers(objects)["orion-worker"]["livenessProbe"]["exec"]["command"])
    assert re.search(r"celery -A worker inspect ping -d \\?\"?celery@\$HOSTNAME", worker_probe)


def test_every_variable_given_to_orion_is_one_it_reads(objects):
    known = variables_read()
    for name, container in orion_containers(objects).items():
        assert env_names(container, objects) <= known, (name, env_names(container, objects) - known)


def test_settings_from_the_manifests_match_ports_and_services(objects):
    web = orion_containers(objects)["orion-web"]
    secrets = example_secrets()
    env = {
        **named(objects, "ConfigMap", "orion-config")["data"],
        **{item["name"]: item["value"] for item in web["env"] if "value" in item},
        **{var: secrets[secret][key] for var, secret, key in secret_refs(web)},
    }
    env["JWT_SECRET_KEY"] = "k8s-test-secret-of-at-least-32-bytes-0123"  # the example's is a placeholder
    settings = Settings.from_env(env)
    assert settings.mode == "services" and settings.proxy_hops == 1
    assert (
        web["ports"][0]["containerPort"] == settings.web_port
        and f"0.0.0.0:{settings.web_port}" in web["args"]
    )
    assert named(objects, "Service", settings.smtp_host)["spec"]["ports"][0]["port"] == settings.smtp_port
    assert str(settings.smtp_port) in orion_containers(objects)["orion-smtp"]["args"]
    flower = orion_containers(objects)["orion-flower"]
    assert flower["ports"][0]["containerPort"] == settings.flower_port


def test_secrets_go_only_where_they_are_used(objects):
    secrets = example_secrets()
    for name, container in orion_containers(objects).items():
        refs = secret_refs(container)
        assert {var for var, _, _ in refs} == SECRET_VARIABLES[name], name
        assert all(var == key and key in secrets[secret] for var, secret, key in refs), name
        assert not any("secretRef" in source for source in container.get("envFrom", [])), name
    config = named(objects, "ConfigMap", "orion-config")["data"]
    assert not set(config) & {var for names in SECRET_VARIABLES.values() for var in names}


def test_each_component_logs_in_to_the_database_as_a_role_of_its_own(objects):
    """Security issue item 8: every pod got the one DATABASE_URL; now each component
    has a Secret of its own, naming its own role of deploy/postgres/roles.sql."""
    secrets, roles = example_secrets(), {}
    for name, container in orion_containers(objects).items():
        refs = [secret for var, secret, _ in secret_refs(container) if var == "DATABASE_URL"]
        if refs:
            (secret,) = refs
            assert secret == f"orion-database-{name.removeprefix('orion-')}", name
            roles[name] = make_url(secrets[secret]["DATABASE_URL"]).username
    assert roles == {
        "orion-migrate": "orion_owner",
        "orion-web": "orion_web",
        "orion-worker": "orion_worker",
        "orion-relay": "orion_relay",
    }
    assert "DATABASE_URL" not in secrets["orion-services"]


def test_pods_run_unprivileged_with_resources_and_no_service_links(objects):
    for name, spec in pod_specs(objects).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["automountServiceAccountToken"] is False, name
        # Service links would set e.g. FLOWER_PORT=tcp://... for a Service named flower.
        assert spec["enableServiceLinks"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name


def test_orion_writes_only_to_its_own_volumes(objects):
    """The root filesystem is read-only: /tmp, $HOME (gunicorn's control socket) and
    ORION_DATA_DIR are emptyDirs or claims; the image's user is uid 10001, home /home/orion."""
    data_dir = named(objects, "ConfigMap", "orion-config")["data"]["ORION_DATA_DIR"]
    assert "useradd --create-home --uid 10001 orion" in (ROOT / "Dockerfile").read_text()
    for name, container in orion_containers(objects).items():
        assert pod_specs(objects)[name]["securityContext"]["runAsUser"] == 10001, name
        mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
        assert {"/tmp", "/home/orion", data_dir} <= mounts, name


def test_worker_shutdown_outlasts_the_task_time_limit(objects):
    import celeryconfig

    grace = pod_specs(objects)["orion-worker"]["terminationGracePeriodSeconds"]
    assert grace > celeryconfig.task_time_limit


def test_services_and_volumes_point_at_what_exists(objects):
    pods = {
        obj["metadata"]["name"]: obj["spec"]["template"] for obj in objects if obj["kind"] == "Deployment"
    }
    claims = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "PersistentVolumeClaim"}
    for service in (obj for obj in objects if obj["kind"] == "Service"):
        selector = service["spec"]["selector"].items()
        targets = [t for t in pods.values() if selector <= t["metadata"]["labels"].items()]
        assert len(targets) == 1, service["metadata"]["name"]
        ports = {p["name"] for p in targets[0]["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports
    for name, spec in pod_specs(objects).items():
        used = {
            v["persistentVolumeClaim"]["claimName"]
            for v in spec.get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        assert used <= claims, name


def test_the_rabbitmq_setup_job_runs_the_compose_script(objects):
    script = (ROOT / "deploy" / "rabbitmq-setup.sh").read_text()
    assert named(objects, "ConfigMap", "orion-rabbitmq-setup")["data"]["rabbitmq-setup.sh"] == script
    job = pod_specs(objects)["orion-rabbitmq-setup"]["containers"][0]
    assert {item["name"] for item in job["env"]} == set(re.findall(r"\$(RABBITMQ_\w+)", script))
