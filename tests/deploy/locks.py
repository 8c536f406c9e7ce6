"""Reading the images' lock files (deploy/docker/*.lock): `name==version` lines and comments."""

from __future__ import annotations

from pathlib import Path

from packaging.utils import canonicalize_name


def pins(lock: Path) -> dict[str, str]:
    """Canonical distribution name -> pinned version."""
    pinned = {}
    for line in lock.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version.strip(), f"{lock.name}: not a pin: {line!r}"
            pinned[canonicalize_name(name)] = version.strip()
    return pinned
