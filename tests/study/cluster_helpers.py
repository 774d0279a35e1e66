"""A real multi-node Ray cluster on one machine, for tests (see docs/cluster-tests.md).

Ray registers every node under a routable address, so two nodes cannot share localhost.
Each node gets its own network namespace instead, joined by a veth pair on a private
subnet that exists only between the two namespaces (nothing is routed to the machine's
own interfaces). Everything that joins uses token authentication with a token made for
this cluster, and a Ray temp dir of its own, so parallel runs and other Ray clusters on
the machine never meet.

Teardown never uses `ray stop`, which signals every Ray process on the machine by name
(network namespaces do not separate process ids): it signals, by id, the processes this
cluster started (the `ray start --block` commands and their descendants, and anything
whose command line names this cluster's temp dir), then deletes the namespaces. It runs
in a `finally`, so a failed test leaves nothing behind.

Use from a test (tests/conftest.py puts tests/study on sys.path for every area)::

    with ray_cluster(cpus_per_node=1) as cluster:
        proc = cluster.run_in_head([sys.executable, "-m", "study", "launch",
                                    "--address", cluster.address, ...])

    with ray_cluster(dashboard_port=8265, head_env={"INSGD_STORAGE_FILE": path}) as cluster:
        proc = cluster.run_in_head(["ray", "job", "submit", "--address",
                                    cluster.dashboard_url, "--", "insgd-study", "launch", ...])
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from study_helpers import alive, cmdline, descendants, kill_all

RAY_PORT = 6379
START_TIMEOUT_S = 120.0


def can_build_namespaces() -> str | None:
    """None if this machine can run the cluster tests, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "needs `ip` from iproute2"
    return None


@dataclass
class Cluster:
    """A running two-namespace Ray cluster; `address` is the head's GCS address."""

    head_ns: str
    worker_ns: str
    head_ip: str
    worker_ip: str
    env: dict[str, str]
    temp_dir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    dashboard_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{RAY_PORT}"

    @property
    def dashboard_url(self) -> str:
        """The job server's address for `ray job submit --address` (needs dashboard_port)."""
        if self.dashboard_port is None:
            raise RuntimeError("this cluster was started without a dashboard")
        return f"http://{self.head_ip}:{self.dashboard_port}"

    def command(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside `namespace` with this cluster's environment."""
        env = [f"{k}={v}" for k, v in self.env.items()]
        return ["ip", "netns", "exec", namespace, "env", *env, *argv]

    def run_in_head(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 300,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a driver (e.g. `insgd-study launch --address ...`) in the head's namespace."""
        return subprocess.run(
            self.command(self.head_ns, argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
        )

    def alive_nodes(self) -> int:
        code = (
            "import ray; ray.init(address='auto', logging_level='ERROR'); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))"
        )
        env = {**self.env, "RAY_ADDRESS": self.address}
        argv = [
            "ip",
            "netns",
            "exec",
            self.head_ns,
            "env",
            *[f"{k}={v}" for k, v in env.items()],
            sys.executable,
            "-c",
            code,
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        lines = proc.stdout.strip().splitlines()
        return int(lines[-1]) if proc.returncode == 0 and lines else 0


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _wait_port(cluster: Cluster, deadline: float) -> None:
    probe = f"import socket; socket.create_connection(('{cluster.head_ip}', {RAY_PORT}), 1)"
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in cluster.procs):
            raise RuntimeError("a `ray start` exited early: " + _tail(cluster))
        ok = (
            subprocess.run(
                ["ip", "netns", "exec", cluster.head_ns, sys.executable, "-c", probe],
                capture_output=True,
            ).returncode
            == 0
        )
        if ok:
            return
        time.sleep(0.5)
    raise RuntimeError("the Ray head did not open its port in time: " + _tail(cluster))


def _tail(cluster: Cluster) -> str:
    logs = sorted(cluster.temp_dir.glob("*.log"))
    return " | ".join(p.read_text(errors="replace")[-600:] for p in logs)


def _connect_namespaces(cluster: Cluster, veth_head: str, veth_worker: str) -> None:
    """Two namespaces joined by one veth pair, each routing everything to the other."""
    for ns in (cluster.head_ns, cluster.worker_ns):
        _ip("netns", "add", ns)
    _ip("link", "add", veth_head, "type", "veth", "peer", "name", veth_worker)
    for ns, dev, ip, peer in (
        (cluster.head_ns, veth_head, cluster.head_ip, cluster.worker_ip),
        (cluster.worker_ns, veth_worker, cluster.worker_ip, cluster.head_ip),
    ):
        _ip("link", "set", dev, "netns", ns)
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "link", "set", dev, "up")
        _ip("-n", ns, "route", "add", "default", "via", peer, "dev", dev)


def _start(cluster: Cluster, name: str, argv: list[str], env: Mapping[str, str]) -> None:
    namespace = cluster.head_ns if name == "head" else cluster.worker_ns
    command = ["ip", "netns", "exec", namespace, "env", *[f"{k}={v}" for k, v in env.items()]]
    with open(cluster.temp_dir / f"{name}.log", "w") as log:
        cluster.procs.append(
            subprocess.Popen(
                [*command, *argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )


@contextmanager
def ray_cluster(
    *,
    cpus_per_node: int = 1,
    gpus_per_node: int = 0,
    dashboard_port: int | None = None,
    head_env: Mapping[str, str] | None = None,
) -> Iterator[Cluster]:
    """Start a head and one worker node, each in its own namespace; tear both down after.

    `dashboard_port` runs the head's dashboard (and with it Ray's job server, for
    `ray job submit --address cluster.dashboard_url`) on the head's address; `head_env`
    is extra environment for the head node only. Each node has its own Ray temp dir, as
    each machine of a real cluster has its own disk (with one shared dir, the worker's
    cleanup of a job's unpacked working_dir would delete the driver's, same path).
    """
    tag = secrets.token_hex(3)
    octets = secrets.randbelow(200) + 20, secrets.randbelow(250) + 1
    cluster = Cluster(
        head_ns=f"insgd-h-{tag}",
        worker_ns=f"insgd-w-{tag}",
        head_ip=f"10.{octets[0]}.{octets[1]}.1",
        worker_ip=f"10.{octets[0]}.{octets[1]}.2",
        env={
            # this venv first, so `ray`, `insgd-study` and a job's entrypoint are ours
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            # a `ray start --block` given SIGTERM first drains its node for up to 30 s
            # (for Ray Serve's proxies), which outlasts _teardown's 10 s of grace: every
            # teardown would wait it out, then SIGKILL. Nothing here serves traffic.
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
            "HOME": os.environ.get("HOME", "/root"),
        },
        temp_dir=Path(f"/tmp/ray-insgd-{tag}"),
        dashboard_port=dashboard_port,
    )
    veth_head, veth_worker = f"ivh{tag}", f"ivw{tag}"
    cluster.temp_dir.mkdir(parents=True)
    try:
        _connect_namespaces(cluster, veth_head, veth_worker)
        common = ["--num-cpus", str(cpus_per_node), "--num-gpus", str(gpus_per_node)]
        common += ["--block", "--disable-usage-stats"]
        if dashboard_port is None:
            dashboard = ["--include-dashboard", "false"]
        else:
            dashboard = ["--include-dashboard", "true", "--dashboard-host", cluster.head_ip]
            dashboard += ["--dashboard-port", str(dashboard_port)]
        head = [_ray_bin(), "start", "--head", "--node-ip-address", cluster.head_ip]
        head += ["--port", str(RAY_PORT), "--temp-dir", str(cluster.temp_dir / "h")]
        worker = [_ray_bin(), "start", "--address", cluster.address]
        worker += [
            "--node-ip-address",
            cluster.worker_ip,
            "--temp-dir",
            str(cluster.temp_dir / "w"),
        ]
        deadline = time.monotonic() + START_TIMEOUT_S
        _start(cluster, "head", [*head, *dashboard, *common], {**cluster.env, **(head_env or {})})
        _wait_port(cluster, deadline)
        _start(cluster, "worker", [*worker, *common], cluster.env)
        while cluster.alive_nodes() < 2:
            if time.monotonic() > deadline or any(p.poll() is not None for p in cluster.procs):
                raise RuntimeError("the worker node did not join: " + _tail(cluster))
            time.sleep(1)
        yield cluster
    finally:
        _teardown(cluster, veth_head)


def _teardown(cluster: Cluster, veth_head: str) -> None:
    """Stop only this cluster's processes (by id), then remove its namespaces and files."""

    def ours() -> list[int]:
        pids = set()
        for proc in cluster.procs:
            pids.add(proc.pid)
            pids.update(descendants(proc.pid))
        marker = str(cluster.temp_dir)
        for entry in os.listdir("/proc"):
            if entry.isdigit() and marker in cmdline(int(entry)):
                pids.add(int(entry))
        pids.discard(os.getpid())
        return sorted(pids)

    pids = ours()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for proc in cluster.procs:
            proc.poll()  # reap our direct children so they do not linger as zombies
        if not any(alive(p) for p in pids):
            break
        time.sleep(0.2)
    kill_all(sorted(set(pids) | set(ours())))
    for proc in cluster.procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    for ns in (cluster.head_ns, cluster.worker_ns):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    subprocess.run(["ip", "link", "del", veth_head], capture_output=True)  # if never moved
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
