#!/usr/bin/env python3
"""Write the HTTP API's OpenAPI document to docs/openapi.json (a test fails when it is stale).

python scripts/write_openapi.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

TARGET = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


def render() -> str:
    from agentstage.interfaces.http.app import create_app
    from agentstage.interfaces.http.openapi import openapi_json
    from agentstage.settings import load_settings

    with tempfile.TemporaryDirectory() as home:
        return openapi_json(create_app(load_settings(environ={"AGENT_HOME": home})))


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
