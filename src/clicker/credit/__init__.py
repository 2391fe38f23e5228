"""Credit sources by name (a plain dict, DESIGN.md: no registries)."""

from __future__ import annotations

from clicker.credit.base import Credit, CreditOutput, WeightedCredit
from clicker.credit.outcome import OutcomeCredit

CREDITS = {
    "grpo": lambda cfg: OutcomeCredit("grpo", cfg.eps),
    "drgrpo": lambda cfg: OutcomeCredit("drgrpo", cfg.eps),
    "rloo": lambda cfg: OutcomeCredit("rloo", cfg.eps),
}


def make_credit(cfg) -> WeightedCredit:
    """Build the weighted sum of the sources named in a CreditConfig."""
    sources = []
    for name, weight in cfg.sources.items():
        if name not in CREDITS:
            raise ValueError(f"unknown credit source {name!r}; choose from: {', '.join(CREDITS)}")
        sources.append((float(weight), CREDITS[name](cfg)))
    return WeightedCredit(sources)


__all__ = ["CREDITS", "Credit", "CreditOutput", "WeightedCredit", "make_credit"]
