"""Cost of a model call from the configured price table (US dollars per million tokens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentstage.settings import Price


def price_for(table: Mapping[str, Price], provider: str, model: str) -> Price | None:
    """The most specific price: ``provider/model``, then ``provider/*``."""
    return table.get(f"{provider}/{model}") or table.get(f"{provider}/*")


def call_cost(table: Mapping[str, Price], provider: str, model: str, usage: Mapping[str, Any]) -> float:
    price = price_for(table, provider, model)
    if price is None:
        return 0.0
    cached = int(usage.get("cached_input_tokens", 0))
    fresh = max(int(usage.get("input_tokens", 0)) - cached, 0)
    cached_price = price.input if price.cached_input is None else price.cached_input
    dollars = fresh * price.input + cached * cached_price + int(usage.get("output_tokens", 0)) * price.output
    return dollars / 1_000_000
