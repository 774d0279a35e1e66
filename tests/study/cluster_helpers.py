"""A real multi-node Ray cluster on one machine, for tests (see ../shared/CLUSTER-TESTS.md).

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

Use from a test (tests/study is on sys.path through its conftest; from another folder,
add it or load this file with importlib)::

    with ray_cluster(cpus_per_node=1) as cluster:
        proc = cluster.run_in_head([sys.executable, "-m", "study", "launch",
                                    "--address", cluster.address, ...])
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
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

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{RAY_PORT}"

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


@contextmanager
def ray_cluster(*, cpus_per_node: int = 1, gpus_per_node: int = 0) -> Iterator[Cluster]:
    """Start a head and one worker node, each in its own namespace; tear both down after."""
    tag = secrets.token_hex(3)
    octets = secrets.randbelow(200) + 20, secrets.randbelow(250) + 1
    cluster = Cluster(
        head_ns=f"insgd-h-{tag}",
        worker_ns=f"insgd-w-{tag}",
        head_ip=f"10.{octets[0]}.{octets[1]}.1",
        worker_ip=f"10.{octets[0]}.{octets[1]}.2",
        env={
            "PATH": os.environ.get("PATH", ""),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "RAY_USAGE_STATS_ENABLED": "0",
            "HOME": os.environ.get("HOME", "/root"),
        },
        temp_dir=Path(f"/tmp/ray-insgd-{tag}"),
    )
    veth_head, veth_worker = f"ivh{tag}", f"ivw{tag}"
    cluster.temp_dir.mkdir(parents=True)
    try:
        _ip("netns", "add", cluster.head_ns)
        _ip("netns", "add", cluster.worker_ns)
        _ip("link", "add", veth_head, "type", "veth", "peer", "name", veth_worker)
        _ip("link", "set", veth_head, "netns", cluster.head_ns)
        _ip("link", "set", veth_worker, "netns", cluster.worker_ns)
        _ip("-n", cluster.head_ns, "addr", "add", f"{cluster.head_ip}/24", "dev", veth_head)
        _ip("-n", cluster.worker_ns, "addr", "add", f"{cluster.worker_ip}/24", "dev", veth_worker)
        for ns, dev in ((cluster.head_ns, veth_head), (cluster.worker_ns, veth_worker)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", dev, "up")
        _ip(
            "-n",
            cluster.head_ns,
            "route",
            "add",
            "default",
            "via",
            cluster.worker_ip,
            "dev",
            veth_head,
        )
        _ip(
            "-n",
            cluster.worker_ns,
            "route",
            "add",
            "default",
            "via",
            cluster.head_ip,
            "dev",
            veth_worker,
        )

        common = [
            "--num-cpus",
            str(cpus_per_node),
            "--num-gpus",
            str(gpus_per_node),
            "--temp-dir",
            str(cluster.temp_dir),
            "--block",
            "--disable-usage-stats",
        ]
        head = [
            _ray_bin(),
            "start",
            "--head",
            "--node-ip-address",
            cluster.head_ip,
            "--port",
            str(RAY_PORT),
            "--include-dashboard",
            "false",
            *common,
        ]
        worker = [
            _ray_bin(),
            "start",
            "--address",
            cluster.address,
            "--node-ip-address",
            cluster.worker_ip,
            *common,
        ]
        deadline = time.monotonic() + START_TIMEOUT_S
        with open(cluster.temp_dir / "head.log", "w") as log:
            cluster.procs.append(
                subprocess.Popen(
                    cluster.command(cluster.head_ns, head),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait_port(cluster, deadline)
        with open(cluster.temp_dir / "worker.log", "w") as log:
            cluster.procs.append(
                subprocess.Popen(
                    cluster.command(cluster.worker_ns, worker),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
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
