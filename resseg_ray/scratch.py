"""Local scratch folders that do not outlive a killed process.

Ray kills worker processes (a lost node, a failed worker group, a cancelled job) without
running their ``finally`` blocks, so a plain temporary folder of a killed worker stays in
``/tmp`` for good: a training worker's best bundles are hundreds of MB. Every scratch
folder is named after the host and process that made it, and making one first removes the
folders of this host's processes that no longer exist (the host name keeps containers that
share a ``/tmp`` but not a process table away from each other's folders).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

_NAME = re.compile(r"^resseg-[a-z]+-h([A-Za-z0-9]*)-pid(\d+)-")


def host_tag() -> str:
    """This host's name as it appears in scratch folder names (letters and digits, at most 40)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_orphans() -> None:
    """Remove the scratch folders in the temporary folder of this host's dead processes."""
    root, host = tempfile.gettempdir(), host_tag()
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        m = _NAME.match(name)
        if m is not None and m.group(1) == host and not _alive(int(m.group(2))):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def make_scratch_dir(kind: str) -> str:
    """A new scratch folder ``resseg-<kind>-h<host>-pid<pid>-*`` in the temporary folder, after
    removing those of dead processes. The caller removes it when done."""
    if not kind.isalpha() or not kind.islower():
        raise ValueError(f"scratch kind must be lowercase letters, got {kind!r}")
    sweep_orphans()
    return tempfile.mkdtemp(prefix=f"resseg-{kind}-h{host_tag()}-pid{os.getpid()}-")


@contextmanager
def scratch_dir(kind: str) -> Iterator[str]:
    """:func:`make_scratch_dir` as a context: yields the path, removes the folder on exit."""
    path = make_scratch_dir(kind)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
