"""Separate Ray clusters for tests: a head and worker nodes started with `ray start --block`
on 127.0.0.1 (token authentication on), each node a process group that can be killed at
once like a lost machine. The test session's own Ray instance holds the default ports, so
every node gets free ports of its own."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from resseg_ray.launcher import reachable
from tests.helpers import free_port, poll

BIN = Path(sys.executable).parent
NODE_PORTS = (
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
    "node-manager-port",
    "object-manager-port",
)
# a lost node is noticed in about 3 s instead of Ray's default 30 s or more
FAST_FAILURE_DETECTION = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


@dataclass
class Node:
    """A worker node: its ``ray start`` process (group leader) and its Ray node id."""

    proc: subprocess.Popen
    node_id: str


class LocalCluster:
    """A multi-node Ray cluster of local processes: ``url`` is its dashboard (job submission and
    state API), ``env`` the environment a client needs (token authentication on, with a token
    of its own).

    The test's own queries (job status and logs, actors, nodes) go to the dashboard's REST API
    over HTTP: each ``ray`` CLI call costs about 1.7 s of CPU to import Ray, and polling with it
    every second took most of a core from the training under test on a 2-core machine."""

    def __init__(self) -> None:
        self.temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: socket paths have a length limit
        self.token = secrets.token_hex(32)  # what Ray's own token generator makes
        self.env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": self.token,
            **FAST_FAILURE_DETECTION,
        }
        self.env.pop("RAY_AUTH_TOKEN_PATH", None)
        self.env.pop("RAY_ADDRESS", None)
        self.gcs = ""
        self.url = ""
        self.nodes: list[subprocess.Popen] = []
        self.last_ports: dict[str, int] = {}

    def _start(self, args: list[str]) -> subprocess.Popen:
        ports = {name: free_port() for name in NODE_PORTS}
        self.last_ports = ports
        # no log monitor: it streams workers' output to drivers, which these tests do not read
        # (the jobs API's logs are the job's own file), and it polls the log folder all along
        proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--block",
                "--include-log-monitor=false",
                *args,
                *(f"--{name}={port}" for name, port in ports.items()),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # the node and every process it starts: one process group
        )
        self.nodes.append(proc)
        return proc

    def start_head(
        self, num_cpus: int = 2, attempts: int = 2, jobs: bool = False, dashboard: bool = True
    ) -> None:
        """The head node (GCS, dashboard); returns once its dashboard answers, and with
        ``jobs`` once it also accepts job submissions. Without ``dashboard`` (a cluster only
        drivers join, by its GCS address: no jobs or state API), once its GCS and raylet accept
        connections.

        A head that does not come up is stopped and started again on fresh ports (a port
        found free can still be taken before the head binds it); after ``attempts`` tries
        the error carries the tail of the head's logs."""
        for attempt in range(1, attempts + 1):
            try:
                self._start_head(num_cpus, jobs, dashboard)
                return
            except TimeoutError as exc:
                logs = self._log_tails()
                self.shutdown(remove_temp=False)
                if attempt == attempts:
                    raise TimeoutError(f"{exc}\n--- head logs ---\n{logs}") from None
                warnings.warn(f"test head did not come up, starting it again: {exc}\n{logs}", stacklevel=2)

    def _start_head(self, num_cpus: int, jobs: bool, dashboard: bool) -> None:
        port, dash = free_port(), free_port()
        self._start(
            [
                "--head",
                f"--port={port}",
                f"--num-cpus={num_cpus}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={dash}",
                f"--temp-dir={self.temp}",
                f"--include-dashboard={str(dashboard).lower()}",
                f"--ray-client-server-port={free_port()}",
            ]
        )
        self.gcs, self.url = f"127.0.0.1:{port}", f"http://127.0.0.1:{dash}" if dashboard else ""
        if not dashboard:
            raylet = f"127.0.0.1:{self.last_ports['node-manager-port']}"
            poll(lambda: reachable(self.gcs) and reachable(raylet), timeout=120, interval=0.25,
                 what="GCS and raylet of `ray start --head`")  # fmt: skip
            return

        def dashboard_up() -> bool:
            try:
                return self._request("/api/version") is not None
            except OSError:
                return False

        poll(dashboard_up, timeout=120, interval=0.5, what="Ray dashboard of `ray start --head`")
        if jobs:
            poll(self._accepts_jobs, timeout=120, interval=1.0, what="job agent of `ray start --head`")

    def _request(self, path: str, body: dict | None = None, timeout: float = 30) -> object:
        """The dashboard's JSON answer to a GET (or, with ``body``, a POST) of ``path``."""
        request = urllib.request.Request(
            self.url + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def _accepts_jobs(self) -> bool:  # the job agent starts after the dashboard
        try:
            self._request("/api/jobs/", {"entrypoint": "true"})
        except urllib.error.HTTPError as exc:  # poll() reports the last error when it gives up
            raise RuntimeError(f"job submission: HTTP {exc.code}: {exc.read()[-1500:]!r}") from None
        return True

    def _log_tails(self, lines: int = 15) -> str:
        """The last lines of the head's dashboard, agent and raylet logs."""
        out = []
        for name in ("dashboard.log", "dashboard_agent.log", "raylet.out", "gcs_server.out"):
            for path in sorted(Path(self.temp).glob(f"session_2*/logs/{name}")):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"[{path.parent.parent.name}/{path.name}]\n" + "\n".join(tail))
        return "\n".join(out) or f"(no logs under {self.temp})"

    def add_node(self, num_cpus: int, resources: dict[str, float] | None = None) -> Node:
        """A worker node joining the head; returns once the cluster lists it alive."""
        before = {n["node_id"] for n in self.alive_nodes()}
        # a temporary folder per node: nodes sharing one would unpack the job's working
        # directory into the same path and pull it from under each other's processes
        temp = os.path.join(self.temp, f"n{len(self.nodes)}")
        proc = self._start(
            [
                f"--address={self.gcs}",
                f"--temp-dir={temp}",
                f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources or {})}",
            ]
        )
        new: set[str] = set()

        def joined() -> bool:
            new.update({n["node_id"] for n in self.alive_nodes()} - before)
            return len(new) == 1

        poll(joined, timeout=120, what="new node")
        return Node(proc, new.pop())

    def kill_node(self, node: Node) -> None:
        """SIGKILL a node's whole process group (raylet, agents, workers): a lost machine."""
        os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=30)

    def ray(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """The ``ray`` CLI against this cluster."""
        return subprocess.run(
            [str(BIN / "ray"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def state(self, resource: str, *filters: str) -> list[dict]:
        """The state API's detailed records of ``resource`` (``actors``, ``nodes``), each
        filter ``key=value``; what ``ray list <resource> --detail`` shows."""
        params: list[tuple[str, str]] = [("limit", "1000"), ("detail", "1")]
        for f in filters:
            key, value = f.split("=", 1)
            params += [("filter_keys", key), ("filter_predicates", "="), ("filter_values", value)]
        answer = self._request(f"/api/v0/{resource}?{urllib.parse.urlencode(params)}")
        assert isinstance(answer, dict)
        if answer.get("result") is False:
            raise RuntimeError(f"state API {resource}: {answer.get('msg')}")
        return list(answer["data"]["result"]["result"])

    def job_status(self, job_id: str) -> str:
        """``PENDING``, ``RUNNING``, ``SUCCEEDED``, ``FAILED`` or ``STOPPED`` (``UNKNOWN`` while
        the jobs API does not answer)."""
        try:
            answer = self._request(f"/api/jobs/{urllib.parse.quote(job_id)}")
        except OSError:
            return "UNKNOWN"
        return str(answer.get("status", "UNKNOWN")) if isinstance(answer, dict) else "UNKNOWN"

    def job_logs(self, job_id: str) -> str:
        """The job's driver output."""
        try:
            answer = self._request(f"/api/jobs/{urllib.parse.quote(job_id)}/logs")
        except OSError as exc:
            return f"(no logs: {exc})"
        return str(answer.get("logs", "")) if isinstance(answer, dict) else ""

    def alive_nodes(self) -> list[dict]:
        """Nodes the cluster lists alive; none while the state API does not answer yet."""
        try:
            return self.state("nodes", "state=ALIVE")
        except (RuntimeError, ValueError, OSError, KeyError):
            return []

    def shutdown(self, remove_temp: bool = True) -> None:
        """Stop every node still running and (by default) remove the cluster's temporary folder."""
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:  # on SIGTERM `ray start --block` gives its children a ~30 s grace period;
                    proc.wait(timeout=5)  # a throwaway test cluster needs none
                except subprocess.TimeoutExpired:
                    pass
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=30)
        self.nodes.clear()
        if remove_temp:
            shutil.rmtree(self.temp, ignore_errors=True)
