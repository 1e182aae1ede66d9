"""Small value checks shared by the configs."""

import errno
import stat
from pathlib import Path
from typing import Any


def is_int(value: Any) -> bool:
    """An int that is not a bool (JSON's true must not pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def why_not_a_file(path: Path) -> str:
    """Why `path` is no image file: a folder, a symlink loop, something else, or nothing."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link that loops back on itself"
        if path.is_symlink():
            return "is a symbolic link to a file that does not exist"
        return "does not exist; check the path"
    if stat.S_ISDIR(mode):
        return "is a folder; give an image file"
    return "is not a regular file"
