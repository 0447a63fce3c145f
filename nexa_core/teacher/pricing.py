"""Money: what a model's tokens cost, from the shipped price table or the resource's `prices`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from nexa_core.teacher.types import TeacherBackend

PRICES_FILE = Path(__file__).parent.parent / "configs" / "teacher_prices.yaml"


@dataclass(frozen=True)
class Pricing:
    usd_per_1m_input: float = 0.0
    usd_per_1m_output: float = 0.0
    batch_discount: float = 0.5  # the Batch API bills this share of the list price
    known: bool = True  # False: the model is in no price table, so cost is unknown (recorded as 0)

    def cost(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        usd = (prompt_tokens * self.usd_per_1m_input + completion_tokens * self.usd_per_1m_output) / 1e6
        return usd * self.batch_discount if batch else usd


def price_for(model: str, table: dict | None = None, path: Path = PRICES_FILE) -> Pricing:
    """The model's prices from `table` (model -> {input, output[, batch_discount]}, USD per 1M
    tokens), else from the shipped price file. A dated snapshot (`2024-08-06`) falls back to its
    base name."""
    prices = {**(yaml.safe_load(path.read_text())["models"] if path.is_file() else {}), **(table or {})}
    entry = prices.get(model) or prices.get(re.sub(r"-\d{4}-\d{2}-\d{2}$", "", model))
    if entry is None:
        return Pricing(known=False)
    return Pricing(float(entry["input"]), float(entry["output"]), float(entry.get("batch_discount", 0.5)))


class UnpricedBudget(ValueError):
    """A spend limit is set for a model with no price: the limit could not be kept."""


def unpriced_warning(backend: TeacherBackend, pricing: Pricing, budget_usd: float | None, where: str) -> str | None:
    """None when the backend costs nothing or its model has a price; else the warning that its cost
    is recorded as 0. With a budget set that is an UnpricedBudget instead: nothing could enforce it."""
    if not backend.paid or pricing.known:
        return None
    if budget_usd is not None:
        raise UnpricedBudget(
            f"{where}: teacher budget_usd is set but model '{backend.model}' has no price; "
            "add it to the teacher resource's prices (USD per 1M input/output tokens)"
        )
    return f"{where}: no price for model '{backend.model}'; cost is recorded as 0"
