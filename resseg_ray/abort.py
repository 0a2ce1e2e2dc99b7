"""What a job does when it must stop at once because its Ray cluster went away.

Ray ends a driver whose cluster is gone without running its ``except``/``finally`` blocks, so
what a job would have done on failure is registered here beforehand: the MLflow runs it has
open (marked FAILED instead of staying RUNNING forever), what it is doing (said in the error
line) and the cluster it is attached to. Two things stop a job with that one line: the
watchdog thread of the jobs' plumbing (:func:`resseg_ray.cli.watch_cluster`), which is
usually first, and, for the job Ray ended before the watchdog saw the loss,
:func:`supervise`'s parent process, which outlives the job and says it afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any, NoReturn

_lock = threading.Lock()
_open_runs: dict[str, str] = {}  # MLflow run id -> tracking URI
_doing: list[str] = []
_cluster: dict[str, str | None] = {}  # "gcs", "raylet": the addresses the job is attached to
_returned: list[bool] = []  # the job's main returned or raised (its status is its own)
_state_path: list[str] = []  # set in a supervised job (the child): where its state is kept
_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # to the job, from its parent


def run_opened(tracking_uri: str, run_id: str) -> None:
    """An MLflow run the job has set RUNNING (marked FAILED by :func:`abort` unless it ended)."""
    with _lock:
        _open_runs[run_id] = tracking_uri
        _save()


def doing(what: str) -> None:
    """What the job does now, e.g. ``training run demo-prop18``, for the abort message."""
    with _lock:
        _doing[:] = [what]
        _save()


def attached(gcs_address: str, raylet_address: str | None) -> None:
    """The Ray cluster (its GCS) and node (the driver's raylet) the job now depends on."""
    with _lock:
        _cluster.update(gcs=gcs_address, raylet=raylet_address)
        _save()


def returned() -> None:
    """The job's ``main`` has returned or raised: whatever status follows is the job's own."""
    with _lock:
        _returned[:] = [True]
        _save()


def activity() -> str:
    """What the job was last doing (empty when it never said)."""
    with _lock:
        return _doing[0] if _doing else ""


def _save() -> None:
    """Keep the state where the supervising parent reads it (only in a supervised job)."""
    if not _state_path:
        return
    state = {"open_runs": _open_runs, "doing": _doing, "cluster": _cluster, "returned": bool(_returned)}
    tmp = _state_path[0] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, _state_path[0])


def reachable(address: str, timeout_s: float = 2.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        return False


def fail_open_runs(timeout_s: float = 10.0) -> int:
    """Mark the job's MLflow runs that are still RUNNING as FAILED (a store that cannot be
    reached within ``timeout_s`` is given up on); returns how many were marked."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(timeout_s / 2)))
    with _lock:
        runs = dict(_open_runs)
    marked = 0
    done = threading.Event()

    def mark() -> None:
        nonlocal marked
        from mlflow.tracking import MlflowClient

        for run_id, uri in runs.items():
            try:
                c = MlflowClient(tracking_uri=uri)
                if c.get_run(run_id).info.status == "RUNNING":
                    c.set_terminated(run_id, status="FAILED")
                    marked += 1
            except Exception:  # the store went away with the cluster
                continue
        done.set()

    threading.Thread(target=mark, daemon=True, name="resseg-abort-runs").start()
    done.wait(timeout_s)
    return marked


def abort(event: str, consequence: str, code: int = 2) -> NoReturn:
    """Stop the process now: open MLflow runs FAILED, then one line ``error: <event> while
    <what the job was doing>: <consequence>`` and exit status ``code`` (no cleanup of Ray's:
    it is gone)."""
    marked = fail_open_runs()
    what = activity()
    runs = f" ({marked} MLflow run(s) marked FAILED)" if marked else ""
    line = f"error: {event}" + (f" while {what}" if what else "") + f"{runs}: {consequence}"
    print(" ".join(line.split()), file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(code)


def cluster_lost(gcs_address: str, raylet_address: str | None = None) -> NoReturn:
    """Stop the job: the cluster (or, with ``raylet_address``, the job's own Ray node) is gone."""
    if raylet_address:
        event = f"the Ray node of this job (raylet {raylet_address}) went away"
    else:
        event = f"the Ray cluster at {gcs_address} went away"
    abort(
        event,
        "the work in progress on it is lost; finished training runs, checkpoints and outputs are "
        "kept. Start the cluster again (or run without RAY_ADDRESS for a local one) and re-run the "
        "same command: it goes on where it stopped",
    )


def supervise(gcs_grace_s: float = 6.0) -> None:
    """Run the rest of this job in a forked child and make this process its supervisor.

    Returns in the child, which goes on with the job. This process waits for it and exits with
    its status, except when the child was ended without returning from the job (Ray's core
    worker ends a driver whose raylet died with ``_exit(1)``, before the watchdog can speak)
    while the cluster it was attached to is unreachable: then it says what was lost with the
    watchdog's line and marks the child's open MLflow runs FAILED (exit 2). SIGTERM, SIGHUP and
    SIGQUIT are passed on to the child (``ray job stop``'s SIGTERM reaches both); SIGINT reaches
    the child from the terminal and is ignored here. The child ends with this process.

    Does nothing (the job runs unsupervised) where it cannot fork safely: other threads already
    running, no ``os.fork``, or already supervised.
    """
    if _state_path or not hasattr(os, "fork") or threading.active_count() > 1:
        return
    fd, path = tempfile.mkstemp(prefix="resseg-job-", suffix=".json")
    os.close(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        _state_path[:] = [path]
        _end_with(parent)
        return
    code = _wait_for(pid, path, gcs_grace_s)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _end_with(parent: int) -> None:
    """The child gets SIGTERM when its supervising parent dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # it died before that was set
        os.kill(os.getpid(), signal.SIGTERM)


def _wait_for(pid: int, path: str, gcs_grace_s: float) -> int:
    """The supervisor's part: wait for the job ``pid``, say a lost cluster, return the status."""
    for sig in _FORWARDED:
        signal.signal(sig, lambda s, _f: _forward(pid, s))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)  # -N when ended by signal N
    state = _read_state(path)
    if code not in (0, 2) and not state.get("returned"):  # ended from outside: by Ray, a signal
        with _lock:  # the job's state, for the line and the runs to mark FAILED
            _open_runs.update(state.get("open_runs", {}))
            _doing[:] = state.get("doing", [])
            _cluster.update(state.get("cluster", {}))
        # a stopping cluster's raylet and GCS may answer a moment after they ended the job:
        # look again for the grace period before the status goes out as the job's own
        deadline = time.monotonic() + gcs_grace_s
        stop_if_cluster_lost(gcs_grace_s)
        while time.monotonic() < deadline:
            time.sleep(0.25)
            stop_if_cluster_lost(gcs_grace_s)
    if code < 0:  # end the same way, so whoever started the job sees the signal
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: always their default
            pass
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _read_state(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            state = json.load(f)
        return state if isinstance(state, dict) else {}
    except (OSError, ValueError):
        return {}
    finally:
        for p in (path, path + ".tmp"):
            try:
                os.unlink(p)
            except OSError:
                pass


def stop_if_cluster_lost(gcs_grace_s: float = 6.0) -> None:
    """Stop the job with :func:`cluster_lost` when the cluster it is :func:`attached` to is
    gone: its raylet does not answer (its node is lost; the cluster too when the GCS does not
    answer either) or its GCS does not answer for ``gcs_grace_s``. Returns when both answer, or
    when the job never attached to a cluster."""
    with _lock:
        gcs, raylet = _cluster.get("gcs"), _cluster.get("raylet")
    if not gcs:
        return
    gcs_up = reachable(gcs, 1.0)
    if raylet is not None and not reachable(raylet, 1.0):
        cluster_lost(gcs, None if not gcs_up else raylet)
    deadline = time.monotonic() + gcs_grace_s
    while not gcs_up and time.monotonic() < deadline:
        time.sleep(0.2)
        gcs_up = reachable(gcs, 1.0)
    if not gcs_up:
        cluster_lost(gcs)
