"""Writing files that hold secrets: whole (never half-written) and readable by their owner only.

Three files need this, the generated development JWT secret (`serving.tokens`), the generated
subject key (`subjects`) and the OAuth2 clients file (`serving.clients`), so the writer has its
own module below all of them. It must not import anything from this project, nor FastAPI or
Starlette.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from pathlib import Path


def write_private_file(path: Path, text: str, *, replace: bool) -> None:
    """Write `text` to `path` whole and readable by its owner only.

    With `replace=False` an existing file is kept: the hard link fails if another process
    linked its own file first, so concurrent writers all end up reading the same content.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            with contextlib.suppress(FileExistsError):
                os.link(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def generated_secret(path: Path) -> str:
    """The secret kept in `path`, generated and written privately if it is not there yet.

    Processes and threads racing to create it all end up with the first one written (see
    `write_private_file`). An OSError says the file could neither be made nor read; callers
    say which setting to give instead.
    """
    if not path.exists():
        write_private_file(path, secrets.token_urlsafe(48) + "\n", replace=False)
    return path.read_text(encoding="utf-8").strip()
