"""Why a connection to the control socket was refused for permissions, and how to fix it.

Only loaded on that error path: `pwd` and `grp` are cheap, but nothing here is needed when
the connection works.
"""

from __future__ import annotations

import os
import stat


def _owner(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _blocking_directory(path: str) -> str | None:
    """The first directory above `path` we may not search (x bit), described; else None."""
    parts = os.path.dirname(os.path.abspath(path)).split("/")
    for depth in range(2, len(parts) + 1):
        directory = "/".join(parts[:depth]) or "/"
        if not os.access(directory, os.X_OK):
            try:
                info = os.stat(directory)
            except OSError:
                return f"the directory {directory} is not searchable by you"
            return (
                f"the directory {directory} (mode {stat.S_IMODE(info.st_mode):04o}, owner "
                f"{_owner(info.st_uid)}, group {_group(info.st_gid)}) is not searchable by you"
            )
    return None


def permission_hint(path: str, reason: str) -> str:
    """`reason` plus what the socket looks like, who we are, and the two ways in."""
    me = f"uid {os.getuid()}"
    fixes = (
        "run overlayctl as root or as overlayd's own user, or start overlayd with"
        " OVERLAY_SOCKET_GROUP=GROUP (socket mode 0660) and run overlayctl in that group"
        " (read-only commands)"
    )
    blocked = _blocking_directory(path)
    if blocked is not None:
        return f"{reason}: {blocked} ({me}); {fixes}"
    try:
        info = os.stat(path)
    except OSError:
        return f"{reason} ({me}); {fixes}"
    mode = stat.S_IMODE(info.st_mode)
    group = _group(info.st_gid)
    return (
        f"{reason}: socket mode {mode:04o}, owner {_owner(info.st_uid)}, group {group};"
        f" you are {me}, groups {_my_groups()}; {fixes}"
    )


def _my_groups() -> str:
    gids = sorted({os.getgid(), *os.getgroups()})
    return ",".join(_group(gid) for gid in gids)
