"""The launcher: a job attached to a Ray cluster runs as its child, watched from outside.

Ray ends a driver whose cluster went away without a word: at its first call after its raylet
died (exit status 1), or about 60 s after its GCS stopped answering. A job cannot say that
loss reliably from inside, so the jobs that use Ray (``train``, ``predict``, ``finetune``,
``compare-depths``, ``prepare``) are started again by :func:`supervise` as a child of the
process the user started, which becomes their launcher. The job only records its state
(:mod:`resseg_ray.jobstate`); the launcher reads it, looks at the job's raylet and GCS while
the job runs, and when either is lost, or the job ended without returning from its work or with
an error while they are, stops the job and says it in one line (:func:`say_lost`), its open
MLflow runs marked FAILED, exit status 2. Every other end of the job, a signal included, is
passed through as it was; the job's own error line or traceback, which it leaves in its state,
is printed by the launcher then. SIGTERM, SIGHUP and SIGQUIT sent to the launcher reach the
job (``ray job stop`` and a terminal's Ctrl-C reach both).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import NoReturn

from resseg_ray import jobstate
from resseg_ray.errors import ConfigError
from resseg_ray.jobstate import JobState
from resseg_ray.scratch import make_scratch_dir

_FORWARDED = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GRACE_ENV = "RESSEG_CLUSTER_GRACE_S"
"""Seconds a cluster's GCS may not answer before the job is stopped as lost (default 6): give a
head that restarts slowly longer."""


def grace_s() -> float:
    """The grace of :data:`GRACE_ENV` (6 s when unset; an unusable value is an error line)."""
    text = os.environ.get(GRACE_ENV, "6")
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value >= 0 and value < 3600):
        raise ConfigError(f"{GRACE_ENV}={text!r}: give the seconds a GCS may not answer, 0 to 3600")
    return value


def reachable(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
        return True
    except (OSError, ValueError):
        return False


class ClusterLook:
    """Looks at a job's raylet and GCS; says which was lost.

    A raylet that refuses a connection is lost at once (a live raylet's kernel accepts however
    busy it is; Ray ends the driver at its next call): the job's node, or the cluster when the
    GCS does not answer either. A GCS that does not answer for ``gcs_grace_s`` is the cluster
    lost (a head restarting, or a network blip, is given that long). A lost raylet is the node
    alone when the GCS still answers a second later."""

    def __init__(self, gcs_grace_s: float = 6.0, timeout_s: float = 1.0) -> None:
        self.gcs_grace_s = gcs_grace_s
        self.timeout_s = timeout_s
        self._gcs_down_since: float | None = None

    def __call__(self, state: JobState) -> str | None:
        """The loss to say (None while both answer, or for a job not attached to a cluster)."""
        if not state.gcs:
            return None
        gcs_up = reachable(state.gcs, self.timeout_s)
        now = time.monotonic()
        if gcs_up:
            self._gcs_down_since = None
        elif self._gcs_down_since is None:
            self._gcs_down_since = now
        if state.raylet and not reachable(state.raylet, self.timeout_s):
            # a stopping cluster's raylet may go a moment before its GCS: a node is lost alone
            # only if the GCS still answers a second later
            deadline = now + 1.0
            while gcs_up and time.monotonic() < deadline:
                time.sleep(0.2)
                gcs_up = reachable(state.gcs, self.timeout_s)
            if gcs_up:
                return f"the Ray node of this job (raylet {state.raylet}) went away"
            return f"the Ray cluster at {state.gcs} went away"
        if self._gcs_down_since is not None and now - self._gcs_down_since >= self.gcs_grace_s:
            return f"the Ray cluster at {state.gcs} went away"
        return None


def fail_open_runs(runs: dict[str, str], timeout_s: float = 10.0) -> int:
    """Mark the MLflow runs (run id -> tracking URI) still RUNNING as FAILED (a store that
    cannot be reached within ``timeout_s`` is given up on); returns how many were marked."""
    if not runs:
        return 0
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(timeout_s / 2)))
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

    threading.Thread(target=mark, daemon=True, name="resseg-fail-runs").start()
    done.wait(timeout_s)
    return marked


def say_lost(event: str, state: JobState) -> NoReturn:
    """Mark the job's open MLflow runs FAILED, print one line ``error: <event> while <what the
    job was doing>: <what is kept and how to go on>`` and exit with status 2."""
    marked = fail_open_runs(state.open_runs)
    what = f" while {state.doing}" if state.doing else ""
    runs = f" ({marked} MLflow run(s) marked FAILED)" if marked else ""
    line = (
        f"error: {event}{what}{runs}: the work in progress on it is lost; finished training runs, "
        "checkpoints and outputs are kept. Start the cluster again (or run without RAY_ADDRESS "
        "for a local one) and re-run the same command: it goes on where it stopped"
    )
    sys.stdout.flush()
    print(" ".join(line.split()), file=sys.stderr, flush=True)
    os._exit(2)


def _is_own_command_line() -> bool:
    """Whether the process's command line is the one this job reads (``sys.argv``): not a job
    run inside another program (a test, a notebook), which must not be started again."""
    argv, orig = sys.argv, getattr(sys, "orig_argv", [])
    if not argv or len(orig) < len(argv) or orig[len(orig) - len(argv) + 1 :] != argv[1:]:
        return False
    head = orig[: len(orig) - len(argv) + 1]  # the interpreter and what it ran: a script, -c CODE
    if argv[0] == "-c":
        return len(head) >= 3 and head[-2] == "-c"
    return os.path.abspath(head[-1]) == os.path.abspath(argv[0])


def supervise(poll_s: float = 0.25) -> None:
    """Start this process's command line again as a job watched by this process, which then
    exits as the job did (:func:`launch`, with the grace of :data:`GRACE_ENV`). Returns at once
    in the job itself, and in a process whose command line is not the job's (a job called from
    Python)."""
    if jobstate.launched() or not _is_own_command_line():
        return
    try:
        grace = grace_s()
    except ConfigError as exc:  # the one line the jobs say for a user's mistake
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    launch([sys.executable, *sys.orig_argv[1:]], poll_s, grace)


def launch(argv: list[str], poll_s: float = 0.25, gcs_grace_s: float = 6.0) -> NoReturn:
    """Run ``argv`` as a job (its state in a scratch folder's file it is told of by
    ``RESSEG_JOB_STATE``), watch it and its cluster, and exit as it did, or with the one line
    of :func:`say_lost` and status 2 when its cluster went away under it."""
    folder = make_scratch_dir("job")  # a killed launcher's is swept by the next one on the host
    path = os.path.join(folder, "state.json")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        launcher = os.getpid()
        job = subprocess.Popen(
            argv, env={**os.environ, jobstate.STATE_ENV: path}, preexec_fn=lambda: _end_with(launcher)
        )
        forwarded: list[int] = []
        for sig in _FORWARDED:
            signal.signal(sig, lambda s, _f: _forward(job, s, forwarded))
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches the job itself
        lost, code = _watch(job, path, poll_s, gcs_grace_s)
        state = jobstate.read(path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    ended_from_outside = code not in (0, 2) and not state.returned and not forwarded
    if lost is None and (state.error is not None or ended_from_outside):
        # ended by Ray, or by an error Ray raised at a cluster going away? A job's own error
        # line (status 2) is said after one look; anything else after the grace period
        lost = _look_for(state, 0.0 if code == 2 else gcs_grace_s)
    if lost is not None:
        say_lost(lost, state)
    if state.error is not None:
        print(state.error, file=sys.stderr, end="", flush=True)
    _exit_as(code)


def _watch(
    job: subprocess.Popen[bytes], path: str, poll_s: float, gcs_grace_s: float
) -> tuple[str | None, int]:
    """Wait for the job, looking at its cluster every ``poll_s``: (the loss, when the job was
    stopped for it, else None; the job's exit status). A loss seen by two looks in a row, the
    job not having returned in between, stops the job."""
    look = ClusterLook(gcs_grace_s)
    seen: str | None = None  # a loss is acted on when two looks in a row see it
    while True:
        try:
            return None, job.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
        state = jobstate.read(path)
        if state.returned:
            continue  # the job shuts down (and a local Ray instance with it): its end is its own
        lost = look(state)
        if lost is not None and lost == seen:
            job.kill()  # Ray would end it without a word, or leave it waiting for a minute
            return lost, job.wait()
        seen = lost


def _look_for(state: JobState, gcs_grace_s: float) -> str | None:
    """The loss of the cluster ``state`` names, looked for during ``gcs_grace_s`` (a stopping
    cluster's raylet and GCS may answer a moment after they ended the job)."""
    look = ClusterLook(gcs_grace_s)
    deadline = time.monotonic() + gcs_grace_s
    while True:
        lost = look(state)
        if lost is not None or time.monotonic() >= deadline or not state.gcs:
            return lost
        time.sleep(0.25)


def _end_with(launcher: int) -> None:
    """In the job's process, before it runs: the kernel kills it when its launcher dies, even
    by SIGKILL, which the launcher cannot pass on (Linux's parent-death signal), so a job never
    runs on, orphaned, after whoever started it killed it. (Elsewhere a job outlives a killed
    launcher.)"""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != launcher:  # the launcher died before the line above
        os._exit(1)


def _forward(job: subprocess.Popen[bytes], sig: int, forwarded: list[int]) -> None:
    forwarded.append(sig)  # the job's end is then the signal's
    try:
        job.send_signal(sig)
    except ProcessLookupError:
        pass


def _exit_as(code: int) -> NoReturn:
    """Exit with the job's status; a job ended by signal N ends this process by N too, so
    whoever started it sees the signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    if code < 0:
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL, SIGSTOP: always their default
            pass
        os.kill(os.getpid(), -code)
    os._exit(128 - code if code < 0 else code)
