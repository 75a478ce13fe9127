"""Files only the service account may read: keys and credentials."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str, replace: bool = False) -> None:
    """Writes `text` and a newline to `path`, mode 0600 from its creation (never a moment in a
    file others can read). `replace`: through a new file renamed into place (never half
    written); otherwise an existing file is refused with FileExistsError (a key shown once, or
    a key that data depends on, must never be overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = path.with_name(f".{path.name}.{os.getpid()}.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        if replace:
            os.replace(target, path)
    except BaseException:
        if replace:
            target.unlink(missing_ok=True)
        raise
