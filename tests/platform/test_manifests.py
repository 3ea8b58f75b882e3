"""Cluster manifests parse, carry the required fields, and agree with the Dockerfile and the CLI."""
import math
import re
import shlex

import pytest
import yaml

from pipelines.commands import parser
from tests.conftest import ROOT

PLATFORM = ROOT / "platform"
K8S = PLATFORM / "kubernetes"


def load(path, kind=None):
    """The document of `kind` in `path` (default: the Ray one, RayCluster or RayJob)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    return next(d for d in docs if d["kind"] == kind or (kind is None and d["apiVersion"] == "ray.io/v1")) \
        if path.parent == K8S else docs[0]


def dockerfile():
    text = (PLATFORM / "docker" / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR\s+(\S+)", text, re.M).group(1)
    base = re.search(r"^ARG BASE=rayproject/ray:(\S+?)-", text, re.M).group(1)
    return text, workdir, base


def ray_version():
    return next(l.split("==")[1] for l in (ROOT / "requirements.txt").read_text().splitlines()
                if l.startswith("ray[") or l.startswith("ray=="))


def cluster_specs():
    rc = load(K8S / "raycluster.yaml")
    job = load(K8S / "rayjob.yaml")
    return [("raycluster", rc["spec"]), ("rayjob", job["spec"]["rayClusterSpec"])]


def containers(spec):
    yield "head", spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    for g in spec["workerGroupSpecs"]:
        yield g["groupName"], g["template"]["spec"]["containers"][0]


def test_kinds_and_versions():
    rc, job = load(K8S / "raycluster.yaml"), load(K8S / "rayjob.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    _, _, base = dockerfile()
    for _, spec in cluster_specs():
        assert spec["rayVersion"] == ray_version() == base


@pytest.mark.parametrize("name,spec", cluster_specs())
def test_cpu_and_gpu_worker_groups(name, spec):
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert {"cpu-workers", "gpu-workers"} <= set(groups)
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"
    cpu = groups["cpu-workers"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"]
    assert spec["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "0.0.0.0"


@pytest.mark.parametrize("name,spec", cluster_specs())
def test_every_container_runs_the_project_image(name, spec):
    _, workdir, _ = dockerfile()
    for group, c in containers(spec):
        assert c["image"].startswith("dynnets/platform:"), (name, group)
        assert c["image"].endswith("-gpu") == (group == "gpu-workers"), (name, group)
        assert c["workingDir"] == workdir
        assert {"name": "TF_USE_LEGACY_KERAS", "value": "1"} in c["env"]


def test_rayjob_entrypoint_is_a_valid_cli_command():
    job = load(K8S / "rayjob.yaml")["spec"]
    argv = shlex.split(job["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines"]
    args = parser().parse_args(argv[3:])  # exits (SystemExit) on a flag the CLI does not have
    assert args.command == "tune" and args.family
    from pipelines.commands.tune import options_from_args

    options_from_args(args).validate()
    env = yaml.safe_load(job["runtimeEnvYAML"])
    _, workdir, _ = dockerfile()
    assert env["working_dir"] == workdir and env["env_vars"]["TF_USE_LEGACY_KERAS"] == "1"
    assert job["shutdownAfterJobFinishes"] is True


def test_dockerfile_installs_pinned_requirements_and_the_packages():
    text, workdir, _ = dockerfile()
    assert "pip install --no-cache-dir -r /app/requirements.txt" in text
    for pkg in ("keras_layers", "pipelines", "tune_spaces"):
        assert f"COPY {pkg} {workdir}/{pkg}" in text
    assert "TF_USE_LEGACY_KERAS=1" in text


def test_autoscaler_cluster_yaml():
    cfg = load(PLATFORM / "ray" / "cluster.yaml")
    for key in ("cluster_name", "max_workers", "provider", "available_node_types", "head_node_type",
                "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in cfg, key
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert cfg["docker"]["image"] == "dynnets/platform:latest"
    assert cfg["available_node_types"]["gpu_worker"]["docker"]["worker_image"] == "dynnets/platform:latest-gpu"
    assert sum(t["max_workers"] for t in cfg["available_node_types"].values()) <= cfg["max_workers"]
    assert any("--dashboard-port=8265" in c for c in cfg["head_start_ray_commands"])


def test_local_head_scripts_and_make_targets():
    start = (PLATFORM / "ray" / "start-head.sh").read_text()
    assert "--dashboard-host=127.0.0.1" in start and 'DASH="${RAY_DASHBOARD_PORT:-8265}"' in start
    assert "ray stop" not in (PLATFORM / "ray" / "stop-head.sh").read_text()
    make = (ROOT / "Makefile").read_text()
    assert "cluster-up: install\n\tplatform/ray/start-head.sh" in make
    assert "cluster-down:\n\tplatform/ray/stop-head.sh" in make
    assert not (PLATFORM / "__init__.py").exists()


def test_autoscaler_cluster_runs_every_node_with_token_auth():
    """Ray 2.60 starts without authentication when no token file exists: every node of the cloud cluster gets
    the token and starts in token mode."""
    cfg = yaml.safe_load((PLATFORM / "ray" / "cluster.yaml").read_text())
    assert cfg["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c and "chmod 600" in c for c in starts), starts


@pytest.mark.parametrize("name,spec", cluster_specs())
def test_every_pod_mounts_the_shared_runs_volume_and_gets_the_tracking_uri(name, spec):
    """The head has 0 CPUs, so every trial runs on another pod: runs must be on a volume all pods share."""
    pvc = load(K8S / "raycluster.yaml", "PersistentVolumeClaim")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    config = load(K8S / "raycluster.yaml", "ConfigMap")
    assert config["data"]["MLFLOW_TRACKING_URI"].startswith("http")
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    for t in templates:
        volumes = {v["name"]: v for v in t["spec"]["volumes"]}
        assert volumes["runs"]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
        c = t["spec"]["containers"][0]
        assert {"name": "runs", "mountPath": "/mnt/runs"} in c["volumeMounts"]
        assert {"configMapRef": {"name": config["metadata"]["name"]}} in c["envFrom"]


def test_rayjob_keeps_its_results_on_the_shared_volume():
    argv = shlex.split(load(K8S / "rayjob.yaml")["spec"]["entrypoint"])
    args = parser().parse_args(argv[3:])
    assert args.storage.startswith("/mnt/runs/")


def test_autoscaler_nodes_share_the_runs_volume_and_the_tracking_uri():
    cfg = load(PLATFORM / "ray" / "cluster.yaml")
    options = cfg["docker"]["run_options"]
    assert "-v /mnt/runs:/mnt/runs" in options
    assert any(o.startswith("--env MLFLOW_TRACKING_URI=http") for o in options)
    assert any("mount -t nfs4" in c and "/mnt/runs" in c for c in cfg["initialization_commands"])
    assert cfg["available_node_types"]["head"]["resources"] == {"CPU": 0}


def test_make_image_builds_the_image_the_manifests_run():
    make = (ROOT / "Makefile").read_text()
    assert "IMAGE ?= dynnets/platform" in make
    assert "image:\n\tdocker build -f platform/docker/Dockerfile -t $(IMAGE):latest ." in make
    assert "-t $(IMAGE):latest-gpu" in make


# ----------------------------------------------------------------------------- accelerators (issue 19)

def test_the_gpu_and_tpu_images_install_tensorflow_at_the_pinned_version():
    text, _, _ = dockerfile()
    assert re.search(r"^ARG ACCELERATOR=cpu$", text, re.M)
    # the version is read from requirements.txt inside the build: the same pin, never a second copy of it
    assert "TF=\"$(sed -n 's/^tensorflow==//p' /app/requirements.txt)\"" in text
    assert 'gpu) pip install --no-cache-dir "tensorflow[and-cuda]==${TF}"' in text
    assert '"tensorflow-tpu==${TF}"' in text and "pip uninstall -y tensorflow" in text
    assert "exit 1" in text  # an unknown ACCELERATOR fails the build
    make = (ROOT / "Makefile").read_text()
    gpu = re.search(r"^image-gpu:\n\t(.+)$", make, re.M).group(1)
    assert "--build-arg ACCELERATOR=gpu" in gpu and "BASE=rayproject/ray:2.60.0-py311-gpu" in gpu
    assert gpu.endswith("-t $(IMAGE):latest-gpu .")
    tpu = re.search(r"^image-tpu:\n\t(.+)$", make, re.M).group(1)
    assert "--build-arg ACCELERATOR=tpu" in tpu and tpu.endswith("-t $(IMAGE):latest-tpu .")
    assert re.search(r"^image:\n\tdocker build -f platform/docker/Dockerfile -t \$\(IMAGE\):latest \.$", make, re.M)


def test_the_kuberay_tpu_cluster_runs_one_single_host_tpu_vm_per_worker_pod():
    rc = load(K8S / "raycluster-tpu.yaml")
    assert (rc["apiVersion"], rc["kind"]) == ("ray.io/v1", "RayCluster")
    spec = rc["spec"]
    _, workdir, base = dockerfile()
    assert spec["rayVersion"] == ray_version() == base
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    tpu = groups["tpu-workers"]
    assert tpu["numOfHosts"] == 1 and tpu["minReplicas"] == 0 <= tpu["replicas"] <= tpu["maxReplicas"]
    pod = tpu["template"]["spec"]
    selector = pod["nodeSelector"]
    assert selector["cloud.google.com/gke-tpu-accelerator"].startswith("tpu-")
    topology = [int(n) for n in selector["cloud.google.com/gke-tpu-topology"].split("x")]
    chips = math.prod(topology)
    c = pod["containers"][0]
    assert c["resources"]["limits"]["google.com/tpu"] == c["resources"]["requests"]["google.com/tpu"] == str(chips)
    assert chips <= 8  # one host: the chips a `--tpus-per-worker` worker reserves
    assert c["image"] == "dynnets/platform:latest-tpu" and c["workingDir"] == workdir
    assert {"name": "TF_USE_LEGACY_KERAS", "value": "1"} in c["env"]
    assert {"name": "runs", "mountPath": "/mnt/runs"} in c["volumeMounts"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_the_tpu_vm_autoscaler_config_starts_tpu_vm_hosts_with_the_pinned_tensorflow():
    cfg = load(PLATFORM / "ray" / "cluster-tpu.yaml")
    assert cfg["provider"]["type"] == "gcp"
    assert cfg["head_node_type"] in cfg["available_node_types"]
    tpus = {n: t for n, t in cfg["available_node_types"].items() if t.get("resources", {}).get("TPU")}
    assert tpus
    for t in tpus.values():
        assert {"acceleratorType", "runtimeVersion"} <= set(t["node_config"])
        chips_per_host = {"v4-8": 4, "v5p-8": 4, "v5litepod-4": 4, "v5litepod-8": 8, "v6e-8": 8}
        assert t["resources"]["TPU"] == chips_per_host[t["node_config"]["acceleratorType"]]
    assert sum(t["max_workers"] for t in cfg["available_node_types"].values()) <= cfg["max_workers"]
    assert any("tensorflow-tpu==${TF}" in c and "requirements.txt" in c for c in cfg["worker_setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c and "TF_USE_LEGACY_KERAS=1" in c for c in starts)
    assert any("--dashboard-host=127.0.0.1" in c for c in cfg["head_start_ray_commands"])


def test_the_tpu_manifest_s_example_command_is_a_valid_cli_command():
    text = (K8S / "raycluster-tpu.yaml").read_text()
    command = re.search(r"pipelines submit .*? -- (tune .*?)\n#\s+(.*)\n", text)
    argv = shlex.split(command.group(1).rstrip("\\ ") + " " + command.group(2))
    args = parser().parse_args(argv)
    from pipelines.commands.tune import options_from_args

    assert options_from_args(args).validate().scaling().resolved_accelerator() == "tpu"
