"""What every config section shares: unknown keys are errors, assignments are validated, and a
problem is a `ConfigError`, which the CLI prints as one line with exit code 2."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
