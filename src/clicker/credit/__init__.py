"""Credit sources by name (a plain dict, DESIGN.md: no registries).

Each entry builds a source from the whole `CreditConfig` (its own section is `cfg.<name>`) and
the `CreditContext` (policy, frozen initial policy, world, rollout settings, RNG).
"""

from __future__ import annotations

from clicker.credit.adjudicator import AdjudicatorCredit
from clicker.credit.base import Credit, CreditContext, CreditOutput, CreditSource, WeightedCredit
from clicker.credit.distill import DistillCredit
from clicker.credit.implicit_prm import ImplicitPRMCredit
from clicker.credit.judge import JudgeCredit
from clicker.credit.mc import MCCredit
from clicker.credit.outcome import OutcomeCredit
from clicker.credit.rft import RFTCredit
from clicker.credit.value import ValueCredit

CREDITS = {
    "adjudicator": lambda cfg, ctx: AdjudicatorCredit(cfg.adjudicator, ctx),
    "grpo": lambda cfg, ctx: OutcomeCredit("grpo", cfg.eps),
    "distill": lambda cfg, ctx: DistillCredit(cfg.distill, ctx),
    "drgrpo": lambda cfg, ctx: OutcomeCredit("drgrpo", cfg.eps),
    "rloo": lambda cfg, ctx: OutcomeCredit("rloo", cfg.eps),
    "rft": lambda cfg, ctx: RFTCredit(cfg.rft),
    "implicit_prm": lambda cfg, ctx: ImplicitPRMCredit(cfg.implicit_prm, ctx),
    "judge": lambda cfg, ctx: JudgeCredit(cfg.judge, ctx),
    "mc": lambda cfg, ctx: MCCredit(cfg.mc, ctx),
    "value": lambda cfg, ctx: ValueCredit(cfg.value, ctx),
}


def make_credit(cfg, ctx: CreditContext, built: dict | None = None) -> WeightedCredit:
    """Build the weighted sum of the sources named in a CreditConfig; `built`: sources made
    elsewhere, by name (those on Ray workers, `clicker.credit.remote`)."""
    sources = []
    for name, weight in cfg.sources.items():
        if name not in CREDITS:
            raise ValueError(f"unknown credit source {name!r}; choose from: {', '.join(CREDITS)}")
        source = (built or {}).get(name) or CREDITS[name](cfg, ctx)
        sources.append((float(weight), source))
    return WeightedCredit(sources)


__all__ = ["CREDITS", "Credit", "CreditContext", "CreditOutput", "CreditSource",
           "WeightedCredit", "make_credit"]
