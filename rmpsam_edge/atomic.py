"""Artefacts that are complete or absent: write into a temporary sibling, rename when done (Python 3.8, no torch).

    with atomic_file("engine.plan", force=False) as tmp:      # tmp: '.engine.plan.tmp-<pid>-<rand>'
        write(tmp)                                           # renamed to engine.plan on success
    with atomic_dir("bundles/r18", force=args.force) as tmp:  # a staging folder beside the target
        ...                                                  # replaces the target only on success

A process killed at any point (even SIGKILL) leaves at most a hidden ``.NAME.tmp-*`` sibling, which never
loads as a bundle/engine/checkpoint (loaders look at NAME only) and is swept by the next run. ``file_lock``
serialises two processes that write the same artefact (the engine cache): the second waits, then finds the
first one's result. Disk errors (ENOSPC, EROFS, EACCES) become one ``UserError`` naming the path.
"""
import contextlib
import errno
import glob
import os
import shutil
import tempfile
import time

from .errors import UserError

_DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EROFS: "the file system is read-only",
                errno.EACCES: "permission denied", errno.EDQUOT: "disk quota exceeded"}


def disk_error(path: str, exc: OSError) -> UserError:
    """One line for an OSError while writing ``path`` (what happened, what to do)."""
    why = _DISK_ERRORS.get(getattr(exc, "errno", None))
    if why:
        return UserError("cannot write %s: %s; free space or choose another output folder" % (path, why))
    return UserError("cannot write %s: %s" % (path, exc.strerror or exc))


def _tmp_prefix(path: str) -> str:
    return ".%s.tmp-" % os.path.basename(os.path.abspath(path))


def sweep_stale(path: str, max_age_s: float = 0.0) -> None:
    """Remove temporary siblings of ``path`` left by killed processes (only those whose owner PID is gone)."""
    parent = os.path.dirname(os.path.abspath(path))
    for p in glob.glob(os.path.join(glob.escape(parent), glob.escape(_tmp_prefix(path)) + "*")):
        pid = os.path.basename(p)[len(_tmp_prefix(path)):].split("-")[0]
        if pid.isdigit() and _alive(int(pid)):
            continue
        try:
            if max_age_s and time.time() - os.path.getmtime(p) < max_age_s:
                continue
            shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def check_target(path: str, force: bool, what: str = "output") -> None:
    """Refuse an existing ``path`` unless ``force`` (one line with the fix)."""
    if os.path.lexists(path) and not force:
        raise UserError("%s %s already exists; pass --force to overwrite it or choose another path" % (what, path))


def _mkparent(path: str) -> str:
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise disk_error(parent, exc)
    return parent


def _fsync_dir(parent: str) -> None:
    try:
        fd = os.open(parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str, force: bool = True):
    """Yield a temporary sibling path; on success fsync it and rename it over ``path`` (replacing an existing
    file only when ``force``); on any exception (KeyboardInterrupt included) remove it."""
    if not force:
        check_target(path, force)
    parent = _mkparent(path)
    sweep_stale(path)
    tmp = os.path.join(parent, "%s%d-%s" % (_tmp_prefix(path), os.getpid(), os.urandom(3).hex()))
    with _removed_on_error(tmp, path):
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if not force and os.path.lexists(path):
            raise UserError("%s appeared while it was being written; pass --force to overwrite it" % path)
        os.replace(tmp, path)
        _fsync_dir(parent)


@contextlib.contextmanager
def _removed_on_error(tmp: str, path: str):
    """Remove ``tmp`` on any exception; an OSError becomes the one-line disk error for ``path``."""
    try:
        yield
    except OSError as exc:
        _remove(tmp)
        raise disk_error(path, exc)
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str, force: bool = False):
    """Yield an empty staging folder beside ``path``; on success it becomes ``path`` (an existing ``path`` is
    replaced only with ``force``, and only after the new one is complete); on any exception it is removed."""
    check_target(path, force)
    parent = _mkparent(path)
    sweep_stale(path)
    try:
        tmp = tempfile.mkdtemp(prefix="%s%d-" % (_tmp_prefix(path), os.getpid()), dir=parent)
    except OSError as exc:
        raise disk_error(path, exc)
    with _removed_on_error(tmp, path):
        yield tmp
        mask = os.umask(0o022)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp made it private; an artefact is an ordinary folder
        _fsync_dir(tmp)
        if os.path.lexists(path):
            if not force:
                raise UserError("%s appeared while it was being written; pass --force to overwrite it" % path)
            old = tmp + ".old"
            os.rename(path, old)
            os.rename(tmp, path)
            _remove(old)
        else:
            os.rename(tmp, path)
        _fsync_dir(parent)


def _remove(p: str) -> None:
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            os.remove(p)
    except OSError:
        pass


@contextlib.contextmanager
def file_lock(path: str, timeout_s: float = 1800.0, log=None):
    """Exclusive advisory lock on ``path + '.lock'`` (fcntl; released when the process dies). A second process
    waits (one line through ``log`` when it starts waiting) up to ``timeout_s``, then gets a UserError."""
    import fcntl
    lock_path = path + ".lock"
    _mkparent(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise disk_error(lock_path, exc)
    t0, said = time.time(), False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if not said and log is not None:
                log("waiting for another process that is writing %s" % path)
                said = True
            if time.time() - t0 > timeout_s:
                raise UserError("%s is locked by another process for over %.0f s (%s); stop it or remove the lock"
                                % (path, timeout_s, lock_path))
            time.sleep(0.2)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        os.close(fd)
