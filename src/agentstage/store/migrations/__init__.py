"""Alembic migrations, applied automatically when a store opens.

``HEAD`` names the newest revision so the common case (schema already current) costs one query
instead of loading Alembic; a test checks it matches the newest file in ``versions/``.
"""

from pathlib import Path

HEAD = "t17c"
DIRECTORY = Path(__file__).parent
