"""What a job does when it must stop at once because its Ray cluster went away.

Ray ends a driver whose cluster is gone without running its ``except``/``finally`` blocks, so
what a job would have done on failure is registered here beforehand: the MLflow runs it has
open (marked FAILED instead of staying RUNNING forever) and what it is doing (said in the
error line). The watchdog that calls :func:`abort` lives with the jobs' plumbing
(:func:`resseg_ray.cli.init_ray`).
"""

from __future__ import annotations

import os
import sys
import threading

_lock = threading.Lock()
_open_runs: dict[str, str] = {}  # MLflow run id -> tracking URI
_doing: list[str] = []


def run_opened(tracking_uri: str, run_id: str) -> None:
    """An MLflow run the job has set RUNNING (marked FAILED by :func:`abort` unless it ended)."""
    with _lock:
        _open_runs[run_id] = tracking_uri


def doing(what: str) -> None:
    """What the job does now, e.g. ``training run demo-prop18``, for the abort message."""
    with _lock:
        _doing[:] = [what]


def activity() -> str:
    """What the job was last doing (empty when it never said)."""
    with _lock:
        return _doing[0] if _doing else ""


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


def abort(event: str, consequence: str, code: int = 2) -> None:
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
