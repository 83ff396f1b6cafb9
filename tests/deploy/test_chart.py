"""The Helm chart, rendered and linted by Helm's own Go library (helm-python-sdk) with no cluster.

Every scenario under ``helm/deepminer/ci/`` (and the defaults) is linted,
rendered, validated against the Kubernetes JSON schemas (kubernetes-validate,
strict: unknown fields fail) for the oldest supported and the newest release,
and its ServiceMonitor against the Prometheus Operator's models. Then the
behaviour each values switch promises is checked on the rendered objects.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from service.dimse.settings import DimseSettings
from service.settings import Settings
from tests.conftest import require_or_skip


def _require(module: str) -> ModuleType:
    """The module, or :func:`require_or_skip` of this file (``scripts/test.sh`` installs the deploy-test extra)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        require_or_skip(f"{module} is not installed: pip install -e '.[deploy-test]'")


helm = _require("helm_python")
kubernetes_validate = _require("kubernetes_validate")
prometheus_operator = _require("cloudcoil.models.prometheus_operator.v1")

CHART = Path(__file__).resolve().parents[2] / "helm" / "deepminer"
SCENARIOS = sorted(CHART.glob("ci/*-values.yaml"))
RELEASE, NAMESPACE = "demo", "ml"
FULLNAME = f"{RELEASE}-deepminer"
OLDEST_KUBERNETES = "1.27"  # Chart.yaml kubeVersion

Manifest = dict[str, Any]


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None) -> tuple[list[Manifest], str]:
    """The chart's objects (hooks and test pods included) and its NOTES.txt, as an install renders them."""
    rendered = chart.render(values=values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    notes = rendered.pop(f"{CHART.name}/templates/NOTES.txt", "")
    manifests = [doc for text in rendered.values() for doc in yaml.safe_load_all(text) if doc]
    return manifests, notes


def scenario(path: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return values


def only(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def kinds(manifests: list[Manifest]) -> list[str]:
    return sorted(m["kind"] for m in manifests)


def server_container(manifests: list[Manifest]) -> dict[str, Any]:
    containers = only(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "server")


# -- every scenario ---------------------------------------------------------


def test_the_scenarios_cover_the_issue() -> None:
    names = {p.name.removesuffix("-values.yaml") for p in SCENARIOS}
    assert {"cpu", "gpu", "servicemonitor-on", "servicemonitor-off", "external-database", "dimse"} <= names


@pytest.mark.parametrize("values_file", [None, *SCENARIOS], ids=lambda p: p.stem if p else "defaults")
def test_scenario_lints_clean(values_file: Path | None) -> None:
    values = scenario(values_file) if values_file else {}
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{OLDEST_KUBERNETES}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 1 is info ("icon is recommended")
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values_file", [None, *SCENARIOS], ids=lambda p: p.stem if p else "defaults")
def test_scenario_renders_valid_kubernetes_objects(chart: Any, values_file: Path | None) -> None:
    values = scenario(values_file) if values_file else {}
    chart.validate_schema(values)
    manifests, notes = render(chart, values)
    assert "Deployment" in kinds(manifests) and notes.strip()
    newest = kubernetes_validate.utils.latest_version()
    for manifest in manifests:
        if manifest["apiVersion"] == "monitoring.coreos.com/v1":
            _validate_service_monitor(manifest)
            continue
        for version in (OLDEST_KUBERNETES, newest):
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{manifest['kind']}/{manifest['metadata']['name']} at {where} (k8s {version}): {exc.message}"
                )


def _validate_service_monitor(manifest: Manifest) -> None:
    """Against the Prometheus Operator's models; unknown fields fail (the models would drop them silently)."""
    model = prometheus_operator.ServiceMonitor.model_validate(manifest)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == manifest


@pytest.mark.parametrize("values_file", [None, *SCENARIOS], ids=lambda p: p.stem if p else "defaults")
def test_config_map_is_valid_service_settings(
    chart: Any, values_file: Path | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every DEEPMINER_* key the chart sets is a setting of the service, with a value it accepts."""
    manifests, _ = render(chart, scenario(values_file) if values_file else {})
    settings = config_map_settings(manifests, monkeypatch)
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert str(settings.bundle) == "/models/bundle"


def config_map_settings(manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's settings from the ConfigMap alone, after checking that each of its keys is one of them."""
    data = only(manifests, "ConfigMap")["data"]
    fields = {f"DEEPMINER_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields, f"not service settings: {sorted(set(data) - fields)}"
    for name in [k for k in os.environ if k.startswith("DEEPMINER_")]:
        monkeypatch.delenv(name)
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    return Settings()


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, sub in schema.get("properties", {}).items():
        yield f"{prefix}{key}"
        yield from _schema_paths(sub, f"{prefix}{key}.")


def test_values_yaml_comments_every_key_of_the_schema() -> None:
    """values.yaml is the chart's reference: a comment line sits right above every key the schema defines."""
    defined = set(_schema_paths(json.loads((CHART / "values.schema.json").read_text())))
    lines = (CHART / "values.yaml").read_text().splitlines()
    parents: list[tuple[int, str]] = []
    seen, uncommented = set(), []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while parents and parents[-1][0] >= indent:
            parents.pop()
        path = ".".join([key for _, key in parents] + [match.group(2)])
        parents.append((indent, match.group(2)))
        # Kubernetes' own probe fields (periodSeconds, ...) are covered by the comment on their probe.
        kubernetes_field = path.startswith("probes.") and path.count(".") == 2
        if path in defined:
            seen.add(path)
            if not kubernetes_field and not lines[number - 1].lstrip().startswith("#"):
                uncommented.append(path)
    assert uncommented == []
    optional = {path for path in defined - seen if path.startswith("probes.")}  # e.g. initialDelaySeconds
    assert defined - seen - optional == {"global"}, "every chart key has its default in values.yaml"


# -- what the defaults promise ------------------------------------------------


def test_defaults_run_non_root_read_only_with_probes(chart: Any) -> None:
    manifests, notes = render(chart)
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"] + pod.get("initContainers", []):
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
    server = server_container(manifests)
    mounts = {m["mountPath"]: m["name"] for m in server["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]] and "/data" in mounts
    assert server["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert server["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "warm-up needs minutes"
    assert server["resources"]["requests"]["cpu"] and server["resources"]["limits"]["memory"]
    assert "nvidia.com/gpu" not in server["resources"].get("limits", {})
    assert "WARNING: SQLite" in notes


def test_defaults_keep_sqlite_in_one_pod_and_migrate_it_there(chart: Any) -> None:
    manifests, _ = render(chart)
    deployment = only(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert only(manifests, "ConfigMap")["data"]["DEEPMINER_DATABASE_URL"] == "sqlite:////data/deepminer.db"
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert [(c["name"], c["args"]) for c in init] == [("migrate", ["migrate"])]
    assert "Job" not in kinds(manifests)
    with pytest.raises(helm.HelmRenderError, match="SQLite store lives in one pod"):
        render(chart, {"replicaCount": 2})


def test_service_pdb_and_test_pod_select_only_the_server(chart: Any) -> None:
    manifests, _ = render(chart)
    server_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = only(manifests, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for selector in (
        service["spec"]["selector"],
        only(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= server_labels.items()
        assert selector["app.kubernetes.io/component"] == "server"
    assert only(manifests, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    test_pod = only(manifests, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert test_pod["spec"]["containers"][0]["command"][-1] == f"http://{FULLNAME}:80/readyz"
    assert test_pod["metadata"]["labels"]["app.kubernetes.io/component"] == "test"


def test_schema_rejects_misspelt_and_out_of_range_values(chart: Any) -> None:
    for bad in (
        {"replicas": 2},
        {"config": {"device": "gpu"}},
        {"config": {"precision": "fp8"}},
        {"gpu": {"count": 0}},
        {"database": {"url": "mysql://x"}},
        {"config": {"extraEnv": {"NOT A NAME": "x"}}},
        {"dimse": {"metricsPort": 0}},
        {"dimse": {"service": {"port": 70000}}},
        {"dimse": {"service": {"type": "ExternalName"}}},
        {"dimse": {"aeTitle": "A_TITLE_OF_17_CHR"}},
        {"dimse": {"allowedCallingAeTitles": ["BACK\\SLASH"]}},
        {"dimse": {"destination": {"port": "104"}}},
        {"dimse": {"spool": {"size": "lots"}}},
        {"dimse": {"replicas": 2}},
        {"holdoutImages": {"claimName": "holdout"}},
        {"holdoutImages": {"subPath": "/cbis-ddsm"}},
        {"holdoutImages": {"mountPath": "holdout-images"}},
    ):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(bad)


# -- the switches -------------------------------------------------------------


def test_gpu_requests_the_device_and_lands_on_gpu_nodes(chart: Any) -> None:
    manifests, notes = render(chart, scenario(CHART / "ci" / "gpu-values.yaml"))
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    assert server_container(manifests)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert server_container(manifests)["image"].endswith(":0.1.0-gpu")
    assert "GPU: 1 x nvidia.com/gpu" in notes


def test_service_monitor_and_scrape_annotations_are_alternatives(chart: Any) -> None:
    on, _ = render(chart, scenario(CHART / "ci" / "servicemonitor-on-values.yaml"))
    monitor = only(on, "ServiceMonitor")
    assert monitor["spec"]["endpoints"] == [
        {"port": "http", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= only(on, "Service")["metadata"]["labels"].items()
    assert "prometheus.io/scrape" not in only(on, "Deployment")["spec"]["template"]["metadata"]["annotations"]

    off, _ = render(chart, scenario(CHART / "ci" / "servicemonitor-off-values.yaml"))
    assert "ServiceMonitor" not in kinds(off)
    assert "prometheus.io/scrape" not in only(off, "Deployment")["spec"]["template"]["metadata"]["annotations"]

    defaults, _ = render(chart)
    annotations = only(defaults, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "8000"
    assert "ServiceMonitor" not in kinds(defaults)


def test_external_database_autoscales_and_migrates_in_a_hook(chart: Any) -> None:
    manifests, _ = render(chart, scenario(CHART / "ci" / "external-database-values.yaml"))
    deployment = only(manifests, "Deployment")
    assert "replicas" not in deployment["spec"] and "strategy" not in deployment["spec"]
    assert "DEEPMINER_DATABASE_URL" not in only(manifests, "ConfigMap")["data"]
    env_from = server_container(manifests)["envFrom"]
    assert {"secretRef": {"name": "deepminer-database"}} in env_from
    assert "Secret" not in kinds(manifests)  # nothing secret in values: the chart renders none

    job = only(manifests, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    migrate = job["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"] == ["migrate"] and migrate["envFrom"] == [{"secretRef": {"name": "deepminer-database"}}]
    assert job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "migrations"

    hpa = only(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    metrics = {m["type"]: m for m in hpa["spec"]["metrics"]}
    assert metrics["Resource"]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 70}
    assert metrics["Pods"]["pods"]["metric"]["name"] == "deepminer_inflight_requests"
    assert metrics["Pods"]["pods"]["target"] == {"type": "AverageValue", "averageValue": "2"}


def test_hpa_on_cpu_only_by_default(chart: Any) -> None:
    manifests, _ = render(chart, {"database": {"existingSecret": "db"}, "autoscaling": {"enabled": True}})
    assert [m["type"] for m in only(manifests, "HorizontalPodAutoscaler")["spec"]["metrics"]] == ["Resource"]
    with pytest.raises(helm.HelmRenderError, match="autoscaling needs a metric"):
        render(
            chart,
            {
                "database": {"existingSecret": "db"},
                "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None},
            },
        )


def test_database_url_reaches_the_pods_and_the_pre_install_hook_through_secrets(chart: Any) -> None:
    url = "postgresql+psycopg://deepminer:pw@db:5432/deepminer"
    manifests, _ = render(chart, {"database": {"url": url}, "secretEnv": {"DEEPMINER_EXTRA_SECRET": "s3"}})
    release_secret = only(manifests, "Secret", FULLNAME)
    assert release_secret["stringData"] == {"DEEPMINER_DATABASE_URL": url, "DEEPMINER_EXTRA_SECRET": "s3"}
    assert "helm.sh/hook" not in release_secret["metadata"].get("annotations", {})
    # A pre-install hook runs before the release's Secret exists: it has one of its own, created first.
    hook_secret = only(manifests, "Secret", f"{FULLNAME}-migrate")
    assert hook_secret["stringData"] == {"DEEPMINER_DATABASE_URL": url}
    assert int(hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        only(manifests, "Job")["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    assert {"secretRef": {"name": FULLNAME}} in server_container(manifests)["envFrom"]
    assert url not in yaml.safe_dump(only(manifests, "ConfigMap"))


def test_bundle_from_a_pvc_is_mounted_read_only(chart: Any) -> None:
    manifests, notes = render(chart, scenario(CHART / "ci" / "cpu-values.yaml"))
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    mount = next(m for m in server_container(manifests)["volumeMounts"] if m["name"] == "bundle")
    assert mount == {"name": "bundle", "mountPath": "/models/bundle", "readOnly": True, "subPath": "resnet152-v1"}
    volume = next(v for v in pod["volumes"] if v["name"] == "bundle")
    assert volume["persistentVolumeClaim"] == {"claimName": "deepminer-bundles", "readOnly": True}
    assert "from PVC deepminer-bundles" in notes


def test_bundle_from_an_image_is_copied_by_an_init_container(chart: Any) -> None:
    manifests, _ = render(chart, scenario(CHART / "ci" / "gpu-values.yaml"))
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    copy = next(c for c in pod["initContainers"] if c["name"] == "copy-bundle")
    assert copy["image"] == "registry.example.com/deepminer-bundle:resnet152-v1"
    assert copy["command"] == ["cp", "-R", "/models/bundle/.", "/bundle/"]
    assert next(v for v in pod["volumes"] if v["name"] == "bundle")["emptyDir"] == {"sizeLimit": "4Gi"}
    with pytest.raises(helm.HelmRenderError, match="not both"):
        render(
            chart,
            {"bundle": {"initImage": {"repository": "r", "tag": "t"}, "persistentVolumeClaim": {"claimName": "c"}}},
        )


def test_bundle_baked_into_the_image_is_not_hidden_by_a_volume(chart: Any) -> None:
    manifests, notes = render(chart)
    assert all(m["name"] != "bundle" for m in server_container(manifests)["volumeMounts"])
    assert 'Dockerfile target "bundled"' in notes


HOLDOUT_MOUNT = "holdout-images"


def holdout_mounts(manifests: list[Manifest]) -> list[tuple[str, str, dict[str, Any]]]:
    """(object, container, mount) of every container of every pod template that mounts the hold-out images."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    for manifest in manifests:
        spec = manifest.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec)  # Deployment / StatefulSet / Job, or a bare Pod
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            found += [
                (f"{manifest['kind']}/{manifest['metadata']['name']}", container["name"], mount)
                for mount in container.get("volumeMounts", [])
                if mount["name"] == HOLDOUT_MOUNT
            ]
    return found


def test_holdout_images_unset_change_nothing(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a claim the block is inert: the same objects whatever its other keys say, and no setting."""
    for values in ({}, scenario(CHART / "ci" / "dimse-values.yaml")):
        manifests, notes = render(chart, values)
        ignored = values | {"holdoutImages": {"existingClaim": "", "subPath": "unused", "mountPath": "/elsewhere"}}
        assert render(chart, ignored) == (manifests, notes)
        assert holdout_mounts(manifests) == []
        pods = [only(manifests, "Deployment")["spec"]["template"]["spec"]]
        assert all(v["name"] != HOLDOUT_MOUNT for pod in pods for v in pod["volumes"])
        assert config_map_settings(manifests, monkeypatch).holdout_images_dir is None
        assert "HOLDOUT" not in yaml.safe_dump(manifests) and "Hold-out" not in notes


def test_holdout_images_from_a_pvc_reach_the_api_read_only(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    values = scenario(CHART / "ci" / "external-database-values.yaml")
    manifests, notes = render(chart, values)
    assert holdout_mounts(manifests) == [
        (
            f"Deployment/{FULLNAME}",
            "server",
            {"name": HOLDOUT_MOUNT, "mountPath": "/holdout-images", "readOnly": True, "subPath": "cbis-ddsm"},
        )
    ], "the API server alone mounts them: not the migration Job, the test pod or the listener"
    pod = only(manifests, "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == HOLDOUT_MOUNT)
    assert volume == {
        "name": HOLDOUT_MOUNT,
        "persistentVolumeClaim": {"claimName": "deepminer-holdout", "readOnly": True},
    }
    settings = config_map_settings(manifests, monkeypatch)
    assert settings.holdout_images_dir == Path("/holdout-images")
    assert "Hold-out mammograms from PVC deepminer-holdout, sub-path cbis-ddsm, at /holdout-images" in notes

    values["holdoutImages"] = {"existingClaim": "holdout", "mountPath": "/srv/holdout"}
    manifests, _ = render(chart, values)
    assert [mount for _, _, mount in holdout_mounts(manifests)] == [
        {"name": HOLDOUT_MOUNT, "mountPath": "/srv/holdout", "readOnly": True}
    ]
    assert config_map_settings(manifests, monkeypatch).holdout_images_dir == Path("/srv/holdout")
    manifests, _ = render(
        chart, scenario(CHART / "ci" / "dimse-values.yaml") | {"holdoutImages": values["holdoutImages"]}
    )
    assert [where for where, _, _ in holdout_mounts(manifests)] == [f"Deployment/{FULLNAME}"]
    for taken in ("/data", "/tmp/", "/models/bundle"):
        values["holdoutImages"]["mountPath"] = taken
        with pytest.raises(helm.HelmRenderError, match="holdoutImages.mountPath"):
            render(chart, values)


# -- the DICOM listener ---------------------------------------------------------

DIMSE = f"{FULLNAME}-dimse"


def dimse_values(**more: Any) -> dict[str, Any]:
    """The dimse scenario, with ``more`` merged into its ``dimse`` block."""
    values = scenario(CHART / "ci" / "dimse-values.yaml")
    values["dimse"] = {**values["dimse"], **more}
    return values


def listener_container(manifests: list[Manifest]) -> dict[str, Any]:
    containers = only(manifests, "StatefulSet", DIMSE)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["dimse"]
    return dict(containers[0])


def test_the_listener_is_off_by_default(chart: Any) -> None:
    manifests, notes = render(chart)
    assert "StatefulSet" not in kinds(manifests)
    assert [m["metadata"]["name"] for m in manifests if m["kind"] == "Service"] == [FULLNAME]
    assert "dimse" not in yaml.safe_dump(manifests) and "DICOM listener" not in notes


def test_the_listener_runs_the_dimse_verb_with_its_spool_ports_and_probes(chart: Any) -> None:
    manifests, notes = render(chart, scenario(CHART / "ci" / "dimse-values.yaml"))
    statefulset = only(manifests, "StatefulSet", DIMSE)
    spec, pod = statefulset["spec"], statefulset["spec"]["template"]["spec"]
    assert spec["replicas"] == 1 and spec["serviceName"] == f"{DIMSE}-headless"
    [claim] = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "spool"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "storageClassName": "fast-ssd",
        "resources": {"requests": {"storage": "50Gi"}},
    }
    listener = listener_container(manifests)
    assert listener["args"] == ["dimse"] and listener["image"] == server_container(manifests)["image"]
    assert {p["name"]: p["containerPort"] for p in listener["ports"]} == {"dicom": 11112, "metrics": 9104}
    mounts = {m["mountPath"]: m["name"] for m in listener["volumeMounts"]}
    assert mounts == {"/models/bundle": "bundle", "/spool": "spool", "/tmp": "tmp"}
    assert listener["envFrom"] == server_container(manifests)["envFrom"], "the API's bundle and store settings"
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert listener[probe]["httpGet"] == {"path": path, "port": "metrics"}
    startup = listener["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "warm-up needs minutes"
    assert listener["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert listener["resources"]["requests"]["cpu"] and listener["resources"]["limits"]["memory"]

    dicom = only(manifests, "Service", DIMSE)
    assert dicom["spec"]["type"] == "LoadBalancer" and dicom["spec"]["loadBalancerSourceRanges"] == ["10.20.0.0/16"]
    assert dicom["spec"]["ports"] == [{"name": "dicom", "port": 104, "targetPort": "dicom", "protocol": "TCP"}]
    headless = only(manifests, "Service", f"{DIMSE}-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in headless["spec"]["ports"]} == {"dicom": 11112, "metrics": 9104}
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    server_labels = only(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    for service in (dicom, headless):
        assert service["spec"]["selector"].items() <= pod_labels.items()
        assert not service["spec"]["selector"].items() <= server_labels.items()
    assert not only(manifests, "Service", FULLNAME)["spec"]["selector"].items() <= pod_labels.items()
    assert "AE title DEEPMINER on service/demo-deepminer-dimse (LoadBalancer) port 104" in notes
    assert "Results go to ORTHANC at orthanc.pacs.svc:4242" in notes


def test_the_listener_env_is_valid_listener_settings(chart: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every DEEPMINER_DIMSE_* variable the chart sets is a listener setting, with a value it accepts."""
    manifests, _ = render(chart, scenario(CHART / "ci" / "dimse-values.yaml"))
    env = {e["name"]: e["value"] for e in listener_container(manifests)["env"]}
    fields = {f"DEEPMINER_DIMSE_{name.upper()}" for name in DimseSettings.model_fields}
    assert set(env) <= fields, f"not listener settings: {sorted(set(env) - fields)}"
    for name in [k for k in os.environ if k.startswith("DEEPMINER_DIMSE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = DimseSettings()  # type: ignore[call-arg]  # the required titles come from the environment
    assert (settings.host, settings.port, settings.ae_title) == ("0.0.0.0", 11112, "DEEPMINER")
    assert settings.allowed_calling_ae_titles == ["ORTHANC"] and str(settings.spool_dir) == "/spool"
    assert settings.max_spool_bytes == 20 * 1024**3 and settings.metrics_port == 9104
    assert (settings.destination_ae_title, settings.destination_host, settings.destination_port) == (
        "ORTHANC",
        "orthanc.pacs.svc",
        4242,
    )
    assert (settings.send_retries, settings.send_backoff_s, settings.send_timeout_s) == (8, 2.0, 30.0)

    without, _ = render(chart, dimse_values(destination={"aeTitle": "", "host": "", "port": 104}))
    assert not [e for e in listener_container(without)["env"] if "DESTINATION" in e["name"]]


def test_the_service_monitor_scrapes_the_listener(chart: Any) -> None:
    manifests, _ = render(chart, scenario(CHART / "ci" / "dimse-values.yaml"))
    monitor = only(manifests, "ServiceMonitor", DIMSE)
    assert monitor["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "30s", "scrapeTimeout": "10s"}
    ]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    selected = [m for m in manifests if m["kind"] == "Service" and wanted <= m["metadata"]["labels"].items()]
    with_metrics = [s["metadata"]["name"] for s in selected if "metrics" in {p["name"] for p in s["spec"]["ports"]}]
    assert with_metrics == [f"{DIMSE}-headless"]
    assert only(manifests, "ServiceMonitor", FULLNAME)["spec"]["endpoints"][0]["port"] == "http"

    annotated, _ = render(chart, dimse_values() | {"metrics": {"serviceMonitor": {"enabled": False}}})
    assert "ServiceMonitor" not in kinds(annotated)
    annotations = only(annotated, "StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == "9104"


def test_the_listener_service_type_and_node_port_are_configurable(chart: Any) -> None:
    cluster, _ = render(chart, dimse_values(service={"type": "ClusterIP", "port": 11104}))
    spec = only(cluster, "Service", DIMSE)["spec"]
    assert spec["type"] == "ClusterIP" and spec["ports"][0]["port"] == 11104 and "loadBalancerSourceRanges" not in spec
    node, _ = render(chart, dimse_values(service={"type": "NodePort", "port": 104, "nodePort": 30104}))
    assert only(node, "Service", DIMSE)["spec"]["ports"][0]["nodePort"] == 30104


def test_the_listener_refuses_a_configuration_that_cannot_work(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"dimse.allowedCallingAeTitles is empty"):
        render(chart, dimse_values(allowedCallingAeTitles=[]))
    with pytest.raises(helm.HelmRenderError, match="reads the unit labels from the API's store"):
        render(chart, {"dimse": {"enabled": True, "allowedCallingAeTitles": ["ORTHANC"]}})
    with pytest.raises(helm.HelmRenderError, match=r"dimse.destination.host is required"):
        render(chart, dimse_values(destination={"aeTitle": "ORTHANC", "host": "", "port": 4242}))


def test_the_listener_runs_the_model_where_the_api_does(chart: Any) -> None:
    """On GPU nodes with the GPU when the API has one; the bundle copied from its image as for the API."""
    values = scenario(CHART / "ci" / "gpu-values.yaml") | {
        "dimse": {"enabled": True, "allowedCallingAeTitles": ["MODALITY1"]}
    }
    manifests, _ = render(chart, values)
    pod = only(manifests, "StatefulSet", DIMSE)["spec"]["template"]["spec"]
    assert listener_container(manifests)["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and pod["runtimeClassName"] == "nvidia"
    assert [c["name"] for c in pod["initContainers"]] == ["copy-bundle"]
    assert next(v for v in pod["volumes"] if v["name"] == "bundle")["emptyDir"] == {"sizeLimit": "4Gi"}


def _set_values(command: str) -> dict[str, Any]:
    """The values of a ``helm install`` command's ``--set a.b=c`` flags (``{X,Y}`` lists, integers, booleans)."""
    values: dict[str, Any] = {}
    for flag in re.findall(r"--set '?([^'\s]+)'?", command):
        path, raw = flag.split("=", 1)
        value: Any = raw
        if raw.startswith("{"):
            value = raw.strip("{}").split(",")
        elif raw.isdigit():
            value = int(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        *parents, leaf = path.split(".")
        node = values
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def test_the_listener_install_command_of_the_docs_renders(chart: Any) -> None:
    docs = (CHART.parents[1] / "docs" / "deploy.md").read_text()
    section = docs[docs.index("## 9. Connect a PACS by DIMSE") :]
    command = re.search(r"helm upgrade --install (?:.*?\\\n)*.*", section)
    assert command, "docs/deploy.md section 9 has a helm upgrade --install example"
    values = _set_values(command.group(0).replace("\\\n", " "))
    assert values["dimse"]["enabled"] is True
    chart.validate_schema(values)
    manifests, _ = render(chart, values)
    env = {e["name"]: e["value"] for e in listener_container(manifests)["env"]}
    assert env["DEEPMINER_DIMSE_ALLOWED_CALLING_AE_TITLES"] == '["ORTHANC"]'
    assert env["DEEPMINER_DIMSE_DESTINATION_PORT"] == "4242"
    assert only(manifests, "Service", DIMSE)["spec"]["ports"][0]["port"] == 104
