"""What a user sees while a long job runs: a progress bar on a terminal (tqdm), one concise line
per step otherwise (logs, CI, ``ray job submit``), and Ray's own chatter kept to warnings.

Every long job reports through :class:`Progress`: epochs in training, scenes in predict,
evaluate and prepare; inside one scene :func:`tenths` says how far its windows are (predict,
evaluate, finetune's scoring, suggest_annotation).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

from tqdm import tqdm

VERBOSE_ENV = "RESSEG_VERBOSE"
"""Set to 1 (``--verbose``) to see Ray's and MLflow's own logs and progress bars."""


def verbose() -> bool:
    """Whether the user asked for Ray's and MLflow's own output."""
    return os.environ.get(VERBOSE_ENV, "0") not in ("", "0", "false", "no")


def quiet_libraries() -> None:
    """Keep Ray's, Ray Data's and MLflow's chatter (execution plans, progress bars, INFO logs)
    to warnings, unless :func:`verbose`; their full logs stay in Ray's log folder."""
    if verbose():
        return
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # 'Downloading artifacts'

    for name in ("mlflow", "ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    notices = {  # logger: what it says that is no news to the job's user
        "ray._private.authentication.authentication_token_setup": "Token authentication is enabled",
        "ray.data._internal.progress": "Progress bars disabled",  # we disabled them
    }
    for name, text in notices.items():
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in log.filters):
            log.addFilter(_DropNotice(text))  # the warning that token authentication is *off* stays
    try:
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
    except (ImportError, AttributeError):
        pass


class _DropNotice(logging.Filter):
    """Drops a library's notice that says nothing to the user: Ray's, on every local start, that
    token authentication is on (the safe default); Ray Data's that progress bars are off."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


@contextlib.contextmanager
def without_lines(*prefixes: str) -> Iterator[None]:
    """Drop the stderr lines that start with ``prefixes`` (a library's own announcements of
    what the job reports itself, e.g. MLflow's "Successfully registered model"), unless
    :func:`verbose`; every other line is passed on."""
    if verbose():
        yield
        return
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            yield
    finally:
        for line in buf.getvalue().splitlines(keepends=True):
            if not line.startswith(prefixes):
                sys.stderr.write(line)
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """Progress over ``total`` steps (``None``: unknown) of one thing, e.g. ``epoch`` or
    ``scene``: a tqdm bar when ``stream`` (default stdout) is a terminal, else one line per :meth:`step`
    (``<what> 3/200: <text>, 41 s, ETA 2:13:00``)."""

    def __init__(self, what: str, total: int | None, stream: TextIO | None = None, start: int = 0) -> None:
        self.what, self.total, self.done = what, total, start
        self.stream = stream or sys.stdout
        self.started = time.monotonic()
        self._last = self.started
        self._bar = None
        if self.stream.isatty():
            self._bar = tqdm(total=total, initial=start, desc=what, unit=what, file=self.stream, leave=True)

    def step(self, text: str = "", n: int = 1) -> None:
        """``n`` more steps are done; ``text`` says how they went (loss, F1, Mpx/s ...)."""
        now = time.monotonic()
        took, self._last = now - self._last, now
        self.done += n
        if self._bar is not None:
            self._bar.set_postfix_str(text, refresh=False)
            self._bar.update(n)
            return
        of = f"/{self.total}" if self.total else ""
        parts = [p for p in (text, f"{took:.0f} s") if p]
        if self.total and self.done < self.total:
            rate = (now - self.started) / max(self.done, 1)
            parts.append(f"ETA {_duration(rate * (self.total - self.done))}")
        print(f"{self.what} {self.done}{of}: {', '.join(parts)}", file=self.stream, flush=True)

    def close(self) -> None:
        """End the bar (nothing to do for plain lines)."""
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tenths(label: str, stream: TextIO | None = None) -> Callable[[float], None]:
    """A callback for the share (0-1) of one scene's rows segmented so far: a line per tenth
    (``  D12.tif: 40 %``), so a long scene shows it is moving."""
    shown = [0.0]
    out = stream or sys.stdout

    def report(fraction: float) -> None:
        if fraction - shown[0] >= 0.1 and fraction < 1:
            shown[0] = fraction
            print(f"  {label}: {100 * fraction:.0f} %", file=out, flush=True)

    return report
