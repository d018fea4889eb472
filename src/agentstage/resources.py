"""Find files that ship beside the code: instance configs and sample data.

In a wheel they live in ``agentstage/_resources``; in a source checkout (editable install) they
are the repository's own ``configs/`` and ``samples/`` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    packaged = _PACKAGE_DIR / "_resources" / name
    if packaged.is_dir():
        return packaged
    return _PACKAGE_DIR.parent.parent / name


def instance_config(env: str) -> Path:
    return resource_dir("configs") / "instances" / f"{env}.json"


def sample_database() -> Path:
    return resource_dir("samples") / "data" / "sales.db"
