"""File modes: files this package writes follow the process's umask, as ``open()`` does.

``safetensors`` writes through a temporary file created with mode 0600 and renames it, so a weight
file would be unreadable to everyone else where every other file of a checkpoint is 0644 (under the
usual umask 022).
"""

from __future__ import annotations

import os


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back: there is no other way to read it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def follow_umask(*paths: str) -> None:
    """Give each of ``paths`` the mode a new file (0666) or directory (0777) gets: less the umask."""
    mask = current_umask()
    for path in paths:
        os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~mask)
