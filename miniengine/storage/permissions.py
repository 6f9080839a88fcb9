"""Who may change the database: refuse files others can write, create files only we can read.

A worker imports the module named in a process row, so whoever can write the database can make
it run any code on its path.  Like ssh with a key file, the engine therefore refuses a database,
or a folder holding one, that belongs to another user or that group or others may write.  The
engine's own files beside it (log, lock, pid) are opened with ``O_NOFOLLOW`` and mode 0600, so
a symbolic link planted in their place is refused rather than followed to someone else's file.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from pathlib import Path

from miniengine.exceptions import (
    DatabaseFullError,
    ReadOnlyDatabaseError,
    StoreError,
    UnsafeDatabaseError,
)

__all__ = ["check_not_shared", "open_private", "os_error", "writable"]

#: errno values that mean "this user may not write here" (including a read-only file system).
_NOT_WRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

#: errno values that mean "no space left" (disk full, or the user's quota reached).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def os_error(exc: OSError, what: str) -> StoreError:
    """The :class:`StoreError` for an OS error met while doing ``what`` (which names the file)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _NOT_WRITABLE:
        return ReadOnlyDatabaseError(f"{what}: {reason}")
    if exc.errno in _FULL:
        return DatabaseFullError(f"{what}: {reason}")
    return StoreError(f"{what}: {reason}")


def _user(uid: int) -> str:
    try:
        return f"'{pwd.getpwuid(uid).pw_name}' (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def check_not_shared(path: Path) -> None:
    """Refuse the database at ``path`` if another user can change it or its folder.

    The file and its folder must belong to this user (or to root) and must not be writable by
    group or others.  Symbolic links are followed to the real file, and both the folder named
    and the real file's folder are checked.  Missing files pass (they are created 0600 later).
    """
    real = Path(os.path.realpath(path))
    targets = dict.fromkeys([Path(os.path.realpath(path.parent)), real.parent])
    for folder in targets:
        _check(folder, "folder", path)
    _check(real, "file", path)


def _check(target: Path, kind: str, database: Path) -> None:
    try:
        info = os.stat(target)
    except OSError:
        return  # missing or unreadable: whatever opens it next reports that
    me = os.geteuid()
    mode = stat.S_IMODE(info.st_mode)
    where = "the database" if kind == "file" else f"the folder of the database {database}"
    if info.st_uid not in (me, 0):
        if kind == "file":
            fix = (
                f"if you trust its content, take it over (chown {_user_name(me)} {target}), or "
                f"copy it (miniengine db backup --db {target} COPY) and use the copy"
            )
        else:
            fix = "move the database to a folder of your own (mkdir -m 700 FOLDER)"
        raise UnsafeDatabaseError(
            f"{target}: refusing to use {where}: it belongs to {_user(info.st_uid)}, not to "
            f"you ({_user(me)}), and its owner could change what the engine runs; {fix}"
        )
    others_write = mode & 0o022
    if others_write & 0o020 and _private_group(info.st_gid, me):
        others_write &= ~0o020  # the group is the user alone: group write is the user's own
    if others_write:
        who = {0o022: "group and others", 0o020: "its group"}.get(others_write, "others")
        if kind == "folder" and mode & stat.S_ISVTX:
            fix = "move the database to a folder of your own (mkdir -m 700 FOLDER)"
        else:
            fix = f"remove their write permission (chmod go-w {target})"
        raise UnsafeDatabaseError(
            f"{target}: refusing to use {where}: its mode {mode:04o} lets {who} write it, and "
            f"whoever can write it can change what the engine runs; {fix}"
        )


def _private_group(gid: int, uid: int) -> bool:
    """True for a user private group (the umask-002 convention): named after the user, the
    user's primary group, and without other members.  Debian's ssh accepts group write there."""
    try:
        group = grp.getgrgid(gid)
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    return (
        group.gr_name == user.pw_name and user.pw_gid == gid and set(group.gr_mem) <= {user.pw_name}
    )


def writable(path: Path) -> bool:
    """True if this user can write the database file and create its logs in its folder."""
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK, effective_ids=effective) and os.access(
        path.parent, os.W_OK | os.X_OK, effective_ids=effective
    )


def open_private(path: Path, flags: int, what: str) -> int:
    """``os.open`` a file of the engine's own (log, lock, pid) safely; its descriptor.

    Never follows a symbolic link (``O_NOFOLLOW``), creates the file 0600, refuses a file of
    another user, and takes back group and other permissions from an older file of ours.
    """
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeDatabaseError(
                f"{path}: refusing to open the {what}: it is a symbolic link, which another "
                f"user may have planted to make this program write elsewhere; remove it "
                f"(rm {path})"
            ) from exc
        raise os_error(exc, f"{path}: cannot open the {what}") from exc
    try:
        info = os.fstat(fd)
        if info.st_uid not in (os.geteuid(), 0):
            raise UnsafeDatabaseError(
                f"{path}: refusing to use the {what}: it belongs to {_user(info.st_uid)}; "
                f"remove it (rm {path})"
            )
        if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return fd
