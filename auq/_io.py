"""Atomic file writes (one home): a reader sees the old file or the new one, never half of one.

Temporary files and folders are created beside their target with ordinary permissions: files get
``0o666 & ~umask`` and folders ``0o777 & ~umask``, as with any other tool (``tempfile.mkstemp`` and
``mkdtemp`` would give 0600/0700, and ``os.replace`` keeps those modes). Their names,
``.<target>.tmp-<pid>-<random><suffix>``, carry the writer's process id, so that a later write to
the same target can remove what a killed run left behind (:func:`remove_stale_temps`) without
touching the temporary file of a writer that is still running.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

logger = logging.getLogger(__name__)

#: temporaries older than this are removed even when their writer's pid looks alive (pid reuse)
STALE_AFTER_S = 24 * 3600.0


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where it can be, so no thread sees it changed)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(root: str | os.PathLike) -> None:
    """Give ``root`` and everything under it the modes a plain create would: ``0o666 & ~umask`` for
    files (execute bits kept), ``0o777 & ~umask`` for folders.

    For what other libraries wrote (``safetensors`` and ``transformers`` create files 0600).
    """
    mask = current_umask()

    def fix(p: str) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        base = 0o777 if stat.S_ISDIR(st.st_mode) else 0o666 | (st.st_mode & 0o111)
        if stat.S_IMODE(st.st_mode) != base & ~mask:
            os.chmod(p, base & ~mask)

    root = os.fspath(root)
    fix(root)
    if os.path.isdir(root):
        for folder, dirs, files in os.walk(root):
            for name in dirs + files:
                fix(os.path.join(folder, name))


@contextlib.contextmanager
def _replace_when_written(tmp: str, path: str) -> Iterator[None]:
    """Move ``tmp`` onto ``path`` once the body has written it; on any failure remove ``tmp``."""
    try:
        yield
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_safetensors(
    tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None
) -> None:
    """``safetensors.torch.save_file`` atomically, with the file mode the umask gives (not 0600)."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    remove_stale_temps(path)
    tmp = temp_path(path)
    with _replace_when_written(tmp, path):
        save_file(dict(tensors), tmp, metadata=None if metadata is None else dict(metadata))
        follow_umask(tmp)


def temp_path(path: str | os.PathLike, suffix: str = "") -> str:
    """Return a fresh temporary name beside ``path``: ``.<name>.tmp-<pid>-<random><suffix>``.

    Examples
    --------
    >>> import os
    >>> t = temp_path("/data/out.csv", ".csv")
    >>> os.path.dirname(t), os.path.basename(t).startswith(f".out.csv.tmp-{os.getpid()}-")
    ('/data', True)
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def make_temp_dir(target: str | os.PathLike) -> str:
    """Create an empty temporary folder beside ``target`` with mode ``0o777 & ~umask``; return it."""
    while True:
        tmp = temp_path(target)
        try:
            os.mkdir(tmp, 0o777)  # the umask applies, as for any mkdir
            return tmp
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def _open_temp_file(path: str) -> tuple[int, str]:
    while True:
        tmp = temp_path(path)
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # another user's live process (or no way to tell)
        return True
    return True


def remove_stale_temps(path: str | os.PathLike, *, max_age_s: float = STALE_AFTER_S) -> list[str]:
    """Remove temporaries of ``path`` that a killed writer left behind; return the removed paths.

    A temporary ``.<name>.tmp-<pid>-...`` beside ``path`` (also the older ``<name>.tmp-<pid>`` form)
    is stale when no process ``<pid>`` runs on this machine, or when it is older than
    ``max_age_s`` seconds (a reused pid). Temporaries of live writers are left alone, so concurrent
    writers to the same target do not remove each other's work.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.txt.tmp-999999999-0a1b2c3d").write_text("half")  # no such pid
    >>> [pathlib.Path(p).name for p in remove_stale_temps(d / "a.txt")]
    ['.a.txt.tmp-999999999-0a1b2c3d']
    """
    path = os.path.abspath(os.fspath(path))
    folder, name = os.path.split(path)
    if not os.path.isdir(folder):
        return []
    # exactly the names auq writes: .<name>.tmp-<pid>-<8 hex>[suffix], and the older
    # <name>.tmp-<pid> / .<name>.tmp-<pid><suffix>; a user's file named otherwise is never touched
    pattern = re.compile(
        rf"^(?:\.{re.escape(name)}\.tmp-(\d+)-[0-9a-f]{{8}}|\.?{re.escape(name)}\.tmp-(\d+))"
        r"(?:\.csv|\.parquet)?$"
    )
    removed = []
    now = time.time()
    for entry in os.listdir(folder):
        m = pattern.match(entry)
        if m is None:
            continue
        full = os.path.join(folder, entry)
        try:
            age = now - os.lstat(full).st_mtime
        except FileNotFoundError:
            continue
        if _pid_alive(int(m.group(1) or m.group(2))) and age < max_age_s:
            continue
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            try:
                os.unlink(full)
            except FileNotFoundError:
                continue
        logger.info("removed %s, left behind by an interrupted write", full)
        removed.append(full)
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    The file gets the mode ``0o666 & ~umask``, like any file a program creates.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write_text(p, "hi"); p.read_text()
    'hi'
    """
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write_text`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.bin"
    >>> atomic_write_bytes(p, b"\\x00\\x01"); p.read_bytes()
    b'\\x00\\x01'
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write file {path!r}: it is an existing folder")
    remove_stale_temps(path)
    fd, tmp = _open_temp_file(os.path.abspath(path))
    with _replace_when_written(tmp, path), os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """Serialise ``obj`` as JSON and write it atomically (see :func:`atomic_write_text`)."""
    atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n")
