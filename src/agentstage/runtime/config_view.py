"""What doors may show of the configuration: everything, with secrets masked."""

from __future__ import annotations

from typing import Any

from agentstage.observability.masking import mask
from agentstage.settings import Settings


def masked_config(settings: Settings) -> dict[str, Any]:
    masked: dict[str, Any] = mask(settings.model_dump(mode="json"))
    return masked
