"""Static checks of the deployment recipes that cannot run here (cloud, Kubernetes, Docker).

Every YAML parses; the `ray up` config passes Ray's own schema; the KubeRay, compose and
Dockerfile recipes hold the properties the README promises (GPU workers, token auth, the
writer's URL only on the head, the reader's on the dashboard, the same install as CI); and
the helper scripts are valid shell that does what they say.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IMAGE = "registry.example.com/insgd-study:0.1.0"
VALUES = {
    "INSGD_IMAGE": IMAGE,
    "INSGD_AMI": "ami-0123456789abcdef0",
    "INSGD_SG": "sg-0123456789abcdef0",
    "INSGD_EFS": "fs-0123456789abcdef0",
    "INSGD_RWX_STORAGE_CLASS": "standard-rwx",
}


def envsubst(text: str, names: list[str]) -> str:
    """`envsubst '${A} ${B}'`: replace only the listed variables (the real tool if present)."""
    env = {**os.environ, **{n: VALUES[n] for n in names}}
    if shutil.which("envsubst"):
        shell_format = " ".join(f"${{{n}}}" for n in names)
        return subprocess.run(
            ["envsubst", shell_format],
            input=text,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    for name in names:
        text = text.replace(f"${{{name}}}", VALUES[name]).replace(f"${name}", VALUES[name])
    return text


def placeholders(text: str) -> set[str]:
    """The ${INSGD_...} placeholders a recipe leaves for envsubst."""
    return set(re.findall(r"\$\{(INSGD_[A-Z_]+)\}", text))


def documented_envsubst_names(text: str) -> list[str]:
    """The variable list of the `envsubst '${A} ${B}'` command documented in a recipe."""
    match = re.search(r"envsubst '([^']+)'", text)
    assert match, "the recipe documents no envsubst command"
    return re.findall(r"\$\{(\w+)\}", match.group(1))


def render(path: Path) -> list[dict[str, Any]]:
    """Render a recipe exactly as its own header says, then parse every YAML document."""
    text = path.read_text()
    names = documented_envsubst_names(text) if placeholders(text) else []
    assert placeholders(text) == set(names), f"{path.name}: placeholders vs envsubst list"
    rendered = envsubst(text, names)
    assert not placeholders(rendered)
    return [doc for doc in yaml.safe_load_all(rendered) if doc is not None]


def all_yaml() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# ------------------------------------------------------------------------------ every YAML
def test_every_yaml_parses_after_rendering() -> None:
    files = all_yaml()
    names = {p.relative_to(DEPLOY).as_posix() for p in files}
    assert {
        "ray/cluster.yaml",
        "kuberay/raycluster.yaml",
        "kuberay/rayjob.yaml",
        "compose.yaml",
    } <= names
    for path in files:
        docs = render(path)
        assert docs and all(isinstance(d, dict) for d in docs), path


# ------------------------------------------------------------------------------ ray up
def test_ray_up_config_passes_rays_schema() -> None:
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    config = render(DEPLOY / "ray" / "cluster.yaml")[0]
    validate_config(config)
    validate_config(fillout_defaults(config))

    assert config["docker"]["image"] == IMAGE
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials must not run on the driver's node"
    workers = [t for name, t in types.items() if name != config["head_node_type"]]
    assert len(workers) == 1
    gpu = workers[0]
    # one GPU node always up (the driver refuses trials that fit on no live node), more
    # added by the autoscaler
    assert gpu["min_workers"] == 1 < gpu["max_workers"] <= config["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith(("g4dn", "g5", "g6", "p3", "p4", "p5"))
    assert gpu["node_config"]["IamInstanceProfile"] == {"Name": "insgd-ray-worker"}
    assert head["node_config"]["IamInstanceProfile"] == {"Name": "insgd-ray-head"}
    for node_type in types.values():
        assert node_type["node_config"]["SecurityGroupIds"] == [VALUES["INSGD_SG"]]


def test_ray_up_keeps_node_shell_variables_and_token_auth() -> None:
    config = render(DEPLOY / "ray" / "cluster.yaml")[0]
    worker_start = " ".join(config["worker_start_ray_commands"])
    assert "$RAY_HEAD_IP:6379" in worker_start, "envsubst must not eat the nodes' variables"
    head_start = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head_start and "--dashboard-host=0.0.0.0" in head_start
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    # the database URL (a path to it) reaches the head's container only
    assert (
        "--env INSGD_STORAGE_FILE=/home/ray/.insgd/writer_db_url"
        in config["docker"]["head_run_options"]
    )
    assert "INSGD_STORAGE" not in str(config["docker"].get("worker_run_options", ""))
    assert "INSGD_STORAGE" not in " ".join(config["docker"]["run_options"])


def test_iam_documents_grant_the_head_only_the_worker_role() -> None:
    import json

    trust = json.loads((DEPLOY / "ray" / "iam" / "ec2-trust.json").read_text())
    assert trust["Statement"] == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ]
    (grant,) = json.loads((DEPLOY / "ray" / "iam" / "head-pass-worker-role.json").read_text())[
        "Statement"
    ]
    assert grant["Action"] == "iam:PassRole"
    assert grant["Resource"] == "arn:aws:iam::*:role/insgd-ray-worker"
    readme = (DEPLOY / "README.md").read_text()
    for name in ("ec2-trust.json", "head-pass-worker-role.json"):
        assert f"deploy/ray/iam/{name}" in readme


def test_ray_up_shares_efs_at_the_same_path_on_every_node() -> None:
    config = render(DEPLOY / "ray" / "cluster.yaml")[0]
    init = " ".join(config["initialization_commands"])
    assert f"{VALUES['INSGD_EFS']}.efs.{config['provider']['region']}.amazonaws.com:/ /shared" in (
        init
    )
    assert "-v /shared:/shared" in config["docker"]["run_options"]


# ------------------------------------------------------------------------------ KubeRay
def test_raycluster_has_gpu_workers_token_auth_and_secret_only_on_head() -> None:
    import ray

    cluster = by_kind(render(DEPLOY / "kuberay" / "raycluster.yaml"), "RayCluster")
    assert cluster["apiVersion"] == "ray.io/v1"
    spec = cluster["spec"]
    assert spec["rayVersion"] == ray.__version__, "image and CRD must agree on Ray's version"
    assert spec["authOptions"] == {"mode": "token", "secretName": "insgd-ray-token"}
    assert spec["enableInTreeAutoscaling"] is True

    head_pod = spec["headGroupSpec"]["template"]["spec"]
    (head,) = head_pod["containers"]
    assert head["image"] == IMAGE
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    url_file = env_of(head)["INSGD_STORAGE_FILE"]
    mounts = {m["name"]: m["mountPath"] for m in head["volumeMounts"]}
    volumes = {v["name"]: v for v in head_pod["volumes"]}
    (secret_volume,) = [n for n, v in volumes.items() if "secret" in v]
    assert volumes[secret_volume]["secret"]["secretName"] == "insgd-db-writer"
    assert Path(url_file).parent == Path(mounts[secret_volume])
    assert volumes[secret_volume]["secret"]["defaultMode"] & 0o007 == 0

    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] == group["replicas"] == 1 < group["maxReplicas"]
    worker_pod = group["template"]["spec"]
    (worker,) = worker_pod["containers"]
    assert worker["image"] == IMAGE
    assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "INSGD_STORAGE" not in str(worker) and "secret" not in str(worker_pod["volumes"])
    # both see the same shared volume (Tune checkpoints, datasets)
    assert volumes["shared"]["persistentVolumeClaim"]["claimName"] == "insgd-shared"
    assert "insgd-shared" in str(worker_pod["volumes"])


def test_rayjob_runs_launch_on_the_cluster_with_the_token_secret() -> None:
    cluster = by_kind(render(DEPLOY / "kuberay" / "raycluster.yaml"), "RayCluster")
    job = by_kind(render(DEPLOY / "kuberay" / "rayjob.yaml"), "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("insgd-study launch ")
    assert "--storage" not in spec["entrypoint"], "the URL comes from the head's Secret"
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    (submitter,) = spec["submitterPodTemplate"]["spec"]["containers"]
    env = env_of(submitter)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"]["secretKeyRef"] == {
        "name": cluster["spec"]["authOptions"]["secretName"],
        "key": "auth_token",
    }
    assert "--results-dir /shared/" in spec["entrypoint"]
    assert "--data-dir /shared/" in spec["entrypoint"]


def test_kubernetes_dashboard_uses_the_reader_and_postgres_the_init_script() -> None:
    docs = render(DEPLOY / "kuberay" / "dashboard.yaml")
    deployment = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["insgd-study", "dashboard"]
    assert env_of(container)["INSGD_STORAGE_FILE"].startswith("/var/run/secrets/insgd/")
    assert {"secretName": "insgd-db-reader", "defaultMode": 0o440} == next(
        v["secret"] for v in pod["volumes"] if "secret" in v
    )
    assert container["readinessProbe"]["httpGet"]["path"] == "/api/studies"

    postgres = by_kind(render(DEPLOY / "kuberay" / "postgres.yaml"), "StatefulSet")
    pod = postgres["spec"]["template"]["spec"]
    init = next(v["configMap"] for v in pod["volumes"] if "configMap" in v)
    assert {i["key"]: i["path"] for i in init["items"]} == {
        "roles.sql": "roles.sql.in",
        "init-roles.sh": "10-roles.sh",
    }
    env = env_of(pod["containers"][0])
    assert env["POSTGRES_DB"] == "insgd"
    for key in (
        "POSTGRES_PASSWORD_FILE",
        "INSGD_WRITER_PASSWORD_FILE",
        "INSGD_READER_PASSWORD_FILE",
    ):
        assert env[key].startswith("/run/secrets/insgd-postgres/")


def test_no_recipe_holds_a_credential() -> None:
    """Database URLs in recipes and docs carry placeholders (`...`, `***`, `$(...)`,
    `PASSWORD`), never a password."""
    pattern = re.compile(r"postgres(?:ql)?(?:\+\w+)?://[^\s:/@'\"]+:([^\s@'\"]+)@")
    found = 0
    for path in sorted(DEPLOY.rglob("*")) + [ROOT / "docs" / "readme" / "deploy.md"]:
        if path.is_file() and "secrets" not in path.parts:
            for password in pattern.findall(path.read_text()):
                found += 1
                assert (
                    password in ("...", "***") or password.startswith("$") or (password.isupper())
                ), f"{path}: a password in a URL: {password!r}"
    assert found >= 2, "the pattern no longer matches the docs' example URLs"


# ------------------------------------------------------------------------------ compose
def test_compose_has_the_four_services_wired_least_privilege() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "dashboard"}

    build = services["ray-head"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "docker" / "Dockerfile"
    )
    for name in ("ray-head", "ray-worker", "dashboard"):
        assert services[name]["image"] == services["ray-head"]["image"]

    head, worker, dash = services["ray-head"], services["ray-worker"], services["dashboard"]
    assert head["command"].startswith("ray start --head --block")
    assert worker["command"].startswith("ray start --address ray-head:6379 --block")
    assert (
        head["environment"]["RAY_AUTH_MODE"] == worker["environment"]["RAY_AUTH_MODE"] == ("token")
    )
    assert head["environment"]["INSGD_STORAGE_FILE"] == "/run/secrets/writer_db_url"
    assert dash["environment"]["INSGD_STORAGE_FILE"] == "/run/secrets/reader_db_url"
    assert "writer_db_url" in head["secrets"] and "writer_db_url" not in worker["secrets"]
    assert dash["secrets"] == ["reader_db_url"]
    assert "INSGD_STORAGE_FILE" not in worker["environment"]
    assert "RAY_AUTH_TOKEN_PATH" not in dash["environment"]
    assert dash["command"].startswith("insgd-study dashboard")
    for service in services.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), "nothing is published beyond localhost"

    postgres = services["postgres"]
    mounted = {Path(m.split(":")[0]) for m in postgres["volumes"] if m.startswith("./")}
    assert {Path("./postgres/roles.sql"), Path("./postgres/init-roles.sh")} <= mounted
    for path in mounted:
        assert (DEPLOY / path).is_file()
    secret_files = {s["file"] for s in compose["secrets"].values()}
    assert all(f.startswith("./secrets/") for f in secret_files)
    made = {f"./secrets/{n}" for n in _made_secret_names()}
    assert secret_files == made, "make-secrets.sh must create exactly what compose mounts"

    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())
    devices = gpu["services"]["ray-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]


def _made_secret_names() -> set[str]:
    return set(re.findall(r"^create (\w+) ", (DEPLOY / "make-secrets.sh").read_text(), re.M))


def test_make_secrets_creates_private_stable_files(tmp_path: Path) -> None:
    out = tmp_path / "secrets"
    env = {**os.environ, "INSGD_DB_HOST": "insgd-postgres"}
    subprocess.run(
        [str(DEPLOY / "make-secrets.sh"), str(out)],
        check=True,
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    files = {p.name: p.read_text() for p in out.iterdir()}
    assert set(files) == _made_secret_names()
    assert all(v and not v.endswith("\n") for v in files.values())
    writer = files["writer_password"]
    assert files["writer_db_url"] == f"postgresql://insgd_writer:{writer}@insgd-postgres:5432/insgd"
    assert files["reader_db_url"].startswith("postgresql://insgd_reader:")
    assert (
        len(
            set(
                files[k]
                for k in ("pg_admin_password", "writer_password", "reader_password", "ray_token")
            )
        )
        == 4
    )
    subprocess.run(
        [str(DEPLOY / "make-secrets.sh"), str(out)], check=True, capture_output=True, timeout=60
    )
    assert {p.name: p.read_text() for p in out.iterdir()} == files, "re-running changes nothing"


# ------------------------------------------------------------------------------ image
def _install_commands(text: str) -> list[str]:
    """The pip/venv command lines of a shell script or Makefile recipe, normalized."""
    lines = []
    for raw in text.splitlines():
        line = raw.strip().lstrip("@")
        if re.search(r"-m (venv|pip install)", line):
            line = re.sub(r'"?\$\(?\{?(VENV|PY)\}?\)?(/bin/python)?"?', "PY", line)
            lines.append(" ".join(line.split()))
    return lines


def test_dockerfile_installs_with_the_script_ci_uses() -> None:
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    instructions = re.sub(r"\\\n\s*", " ", dockerfile).splitlines()
    run_lines = " ".join(line for line in instructions if line.startswith("RUN "))
    assert "deploy/install.sh /opt/venv" in run_lines
    assert re.search(r"^FROM \$\{BASE_IMAGE\}", dockerfile, re.M)
    assert re.search(r"^ARG BASE_IMAGE=nvidia/cuda:[\w.-]+", dockerfile, re.M)
    assert "ENV PATH=/opt/venv/bin:$PATH" in dockerfile
    assert re.search(r"^USER ray$", dockerfile, re.M), "the image must not run as root"
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    assert {".venv", ".git", "deploy/secrets", "*.db"} <= set(ignore)

    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    if "deploy/install.sh" in recipe:
        return  # same steps by construction
    # until the Makefile calls the script, its steps must be the script's, word for word
    script = _install_commands((DEPLOY / "install.sh").read_text())
    assert script and _install_commands(recipe) == script


@pytest.mark.parametrize("script", ["install.sh", "make-secrets.sh", "postgres/init-roles.sh"])
def test_shell_scripts_are_valid_and_executable(script: str) -> None:
    path = DEPLOY / script
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "set -euo pipefail" in path.read_text()
