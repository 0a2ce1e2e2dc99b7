"""A job attached to a Ray cluster runs as the child of a launcher (resseg_ray.launcher) that
watches it from outside: when Ray's core worker ends the job with ``_exit(1)``, or the job's
raylet or cluster goes away while it runs, the launcher says what was lost, marks the job's
MLflow runs FAILED and exits 2; any other end of the job is passed through as it was, and the
launcher passes SIGTERM on to the job."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from resseg_ray.launcher import GRACE_ENV
from resseg_ray.train import tracking
from tests.helpers import ROOT

JOB = """
import os, signal, sys
from resseg_ray import jobstate, launcher
launcher.supervise()  # as resseg_ray.commands does: the job starts again under it, here
from resseg_ray.cli import run_job

how, gcs, raylet, db = sys.argv[1:5]

def main():
    if db != "-":
        from resseg_ray.train import tracking
        run = tracking.client(db).create_run(tracking.client(db).create_experiment("e"))
        jobstate.run_opened(db, run.info.run_id)
    jobstate.doing("training run lost (checkpoints under /x)")
    jobstate.attached(gcs, None if raylet == "-" else raylet)
    if how == "wait-term":  # the handler is in place before the test, told the job runs, signals
        signal.signal(signal.SIGTERM, lambda *a: (print("job got SIGTERM", flush=True), os._exit(3)))
    print(f"job {os.getpid()} under {os.getppid()}", flush=True)
    if how == "ray-exit":  # what Ray's core worker does when the driver's raylet died
        os._exit(1)
    if how == "bug":
        raise KeyError("a bug")
    if how == "user-error":  # e.g. what Ray Data raises from a worker reading a tile as it goes
        from resseg_ray.errors import InputDataError
        raise InputDataError("s3://b/tile.tif does not exist")
    if how == "exit-3":
        sys.exit(3)
    if how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "hang":  # what a driver does while Ray waits for a cluster that is gone
        signal.alarm(60)  # a deadline: SIGALRM ends the job if the launcher never stops it
        signal.pause()
    if how == "wait-term":
        signal.alarm(60)  # a deadline: SIGALRM ends the job if SIGTERM never comes
        signal.pause()
    print("done", flush=True)

run_job(main, supervise=True)
"""


def _closed_port_address() -> str:
    s = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{s.getsockname()[1]}"
    s.close()
    return address


@pytest.fixture
def live_address():
    server = socket.create_server(("127.0.0.1", 0))
    server.listen(64)
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _job(how: str, gcs: str, raylet: str = "-", db: str = "-", **kw) -> subprocess.Popen:
    # a GCS that does not answer for 1 s is lost (6 s by default): the same decisions, sooner
    return subprocess.Popen(
        [sys.executable, "-c", JOB, how, gcs, raylet, db],
        env={**os.environ, GRACE_ENV: "1"},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_a_job_ended_by_ray_on_a_lost_cluster_is_said_and_its_runs_failed(tmp_path) -> None:
    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    gcs, raylet = _closed_port_address(), _closed_port_address()
    proc = _job("ray-exit", gcs, raylet, db)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: the Ray cluster at {gcs} went away while training run lost")
    assert "(1 MLflow run(s) marked FAILED)" in lines[0] and "re-run the same command" in lines[0]
    (run,) = tracking.client(db).search_runs([tracking.client(db).get_experiment_by_name("e").experiment_id])
    assert run.info.status == "FAILED"


def test_a_lost_node_is_told_from_a_lost_cluster(live_address) -> None:
    raylet = _closed_port_address()
    proc = _job("ray-exit", live_address, raylet)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: the Ray node of this job (raylet {raylet}) went away while training")


@pytest.mark.parametrize(
    ("how", "cluster", "code", "says"),
    [
        ("done", "gone", 0, ""),
        ("exit-3", "gone", 3, ""),  # the job's own status, even with the cluster gone
        ("bug", "live", 1, "KeyError: 'a bug'"),
        ("user-error", "live", 2, "error: s3://b/tile.tif does not exist\n"),
    ],
)
def test_the_jobs_own_ends_pass_through(how: str, cluster: str, code: int, says: str, live_address) -> None:
    address = live_address if cluster == "live" else _closed_port_address()
    proc = _job(how, address, address)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert says in err and "went away" not in err
    assert out.strip().endswith("done") == (how == "done"), out
    if how == "user-error":  # the job's one line, said once, by the launcher
        assert err == says


@pytest.mark.parametrize("how", ["bug", "user-error"])
def test_an_error_raised_when_the_cluster_is_gone_is_said_as_its_loss(how: str) -> None:
    """Ray raises all sorts of errors at a job whose cluster went away, some of which a job
    takes for its input's: the launcher says the loss, and only it."""
    proc = _job(how, _closed_port_address(), "-")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: the Ray cluster at ") and "went away while training" in line, line


def test_a_killed_job_on_a_live_cluster_ends_its_launcher_the_same_way(live_address) -> None:
    proc = _job("killed", live_address, live_address)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert "error:" not in err


def test_sigterm_to_the_launcher_reaches_the_job(live_address) -> None:
    proc = _job("wait-term", live_address, live_address)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # "job <pid> under <launcher pid>": the job is running
    job_pid, launcher_pid = (int(w) for w in first.split()[1::2])
    assert launcher_pid == proc.pid and job_pid != proc.pid
    proc.send_signal(signal.SIGTERM)  # to the launcher only
    out, err = proc.communicate(timeout=60)
    assert "job got SIGTERM" in out, err
    assert proc.returncode == 3, err
    # the launcher reaped the job before it exited: nothing is left running
    with pytest.raises(ProcessLookupError):
        os.kill(job_pid, 0)


OWN_INSTANCE = """
import sys
from resseg_ray import launcher
launcher.supervise()
from resseg_ray.cli import init_ray, run_job
from resseg_ray.errors import ConfigError

def main():
    init_ray()  # RAY_ADDRESS=local: an instance of its own, which ends with the job
    raise ConfigError("data.tile_size=192 but the data set was prepared with 364")

run_job(main, supervise=True)
"""


def test_a_job_that_fails_on_its_own_ray_instance_says_its_own_error() -> None:
    """The instance a job started goes when the job ends: its error line is said, not a loss."""
    proc = subprocess.run(
        [sys.executable, "-c", OWN_INSTANCE], env={**os.environ, "RAY_ADDRESS": "local"}, cwd=ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: data.tile_size=192 but the data set was prepared with 364"
    ), proc.stderr
    assert "went away" not in proc.stderr and proc.stdout.startswith(
        "Ray: started a Ray instance for this job"
    )


def test_a_job_run_inside_another_program_is_never_started_again(monkeypatch) -> None:
    """A job script run in this process with no arguments of its own (as ``runpy`` runs it in
    tests, or a notebook does): its command line is not this process's, which must not be
    started again (here: the whole pytest session)."""
    from resseg_ray import launcher

    def launch(*_a, **_k):
        raise AssertionError("the test process would be started again")

    monkeypatch.setattr(launcher, "launch", launch)
    for argv in ([str(ROOT / "jobs" / "train.py")], ["-c"]):
        monkeypatch.setattr(sys, "argv", argv)
        launcher.supervise()  # returns: nothing started


def test_a_job_whose_launcher_is_killed_ends_with_it(live_address) -> None:
    """kill -9 of the launcher (the process the user or a scheduler started), which it cannot
    pass on: the job does not run on, orphaned."""
    from tests.helpers import poll

    proc = _job("wait-term", live_address, live_address)
    assert proc.stdout is not None
    job_pid = int(proc.stdout.readline().split()[1])
    proc.kill()
    proc.wait(timeout=30)

    def gone() -> bool:
        try:
            os.kill(job_pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{job_pid}/stat") as f:  # a zombie waiting for its new parent is gone too
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    poll(gone, timeout=30, interval=0.1, what="the orphaned job to end")


@pytest.mark.parametrize(
    ("lost", "says"),
    [
        ("node", "error: the Ray node of this job (raylet 127.0.0.1:"),
        ("cluster", "error: the Ray cluster at 127.0.0.1:"),
    ],
)
def test_a_running_job_whose_raylet_or_cluster_is_gone_is_stopped(lost: str, says: str, live_address) -> None:
    """Ray ends a driver at its first call after its raylet died, without a word, or leaves it
    waiting a minute for a GCS: the launcher stops the job and says it (a lost raylet alone is
    the job's node; with the GCS, the cluster)."""
    gcs = live_address if lost == "node" else _closed_port_address()
    proc = _job("hang", gcs, _closed_port_address())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(says) and "went away while training run lost" in line, line
    assert "re-run the same command" in line


def test_a_grace_that_is_not_a_number_of_seconds_is_one_error_line(live_address) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", JOB, "done", live_address, "-", "-"],
        env={**os.environ, GRACE_ENV: "soon"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {GRACE_ENV}='soon': give the seconds a GCS may not answer, 0 to 3600\n"
