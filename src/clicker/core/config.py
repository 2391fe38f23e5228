"""Typed configuration: one pydantic model per component, every field with a default and a doc.

`load_config(path, overrides)` reads YAML, applies `key.sub=value` overrides (values parsed as
YAML, so `--set update.lr=1e-4` gives a float) and validates. Every problem becomes a `ConfigError`
with one line naming the field, which the CLI prints with exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A configuration problem, reported to the user as one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    path: str | None = Field(None, description="local HF model directory; None = built-in tiny")
    tiny_seed: int = Field(0, description="seed of the built-in tiny model (when path is None)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto = bf16 on CUDA, fp32 on CPU"
    )


class TaskConfig(_Section):
    name: str = Field("addition", description="built-in task or adapter name")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword args of the task")


class RolloutConfig(_Section):
    prompts: int = Field(16, ge=1, description="prompts (groups) per iteration")
    group_size: int = Field(8, ge=1, description="G: episodes sampled per prompt")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_action_tokens: int | None = Field(None, ge=1, description="override the task's cap")
    max_turns: int | None = Field(None, ge=1, description="override the env's turn limit")


class CreditConfig(_Section):
    sources: dict[str, float] = Field(
        default_factory=lambda: {"grpo": 1.0},
        description="credit source name -> weight; advantages are the weighted sum",
    )
    eps: float = Field(1e-4, gt=0, description="std epsilon of GRPO standardisation")


class UpdateConfig(_Section):
    lr: float = Field(2e-5, gt=0, description="AdamW lr (small: Adam moves each weight ~lr a step)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    clip_low: float = Field(0.2, ge=0, description="PPO clip epsilon below 1")
    clip_high: float = Field(0.28, ge=0, description="PPO clip epsilon above 1 (DAPO clip-higher)")
    kl_coef: float = Field(0.0, ge=0, description="k3 KL weight to the initial policy (0 = none)")
    aggregation: Literal["token", "sequence", "constant"] = Field(
        "token", description="loss aggregation over tokens (constant = Dr.GRPO)"
    )
    max_grad_norm: float = Field(1.0, gt=0, description="gradient clipping norm")
    epochs: int = Field(1, ge=1, description="passes over each batch")
    minibatches: int = Field(1, ge=1, description="optimizer steps per epoch")
    micro_batch: int = Field(0, ge=0, description="episodes per forward pass (0 = whole minibatch)")


class TrainConfig(_Section):
    iterations: int = Field(50, ge=0, description="rollout-credit-update iterations")
    world_token_budget: int | None = Field(None, ge=1, description="stop once this many used")
    seed: int = Field(0, description="seed of sampling, prompt order and initialisation")
    eval_every: int = Field(10, ge=0, description="held-out eval every N iterations (0 = never)")
    eval_problems: int = Field(64, ge=1, description="held-out problems per evaluation")
    eval_temperature: float = Field(0.0, ge=0, description="eval sampling temperature (0 = greedy)")
    checkpoint_every: int = Field(10, ge=0, description="checkpoint every N iterations (0 = end)")
    keep_checkpoints: int = Field(2, ge=1, description="how many checkpoints to keep")
    run_dir: str | None = Field(None, description="run directory (default runs/<time>-<task>)")
    progress: bool = Field(True, description="show a live progress bar")


class Config(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    credit: CreditConfig = Field(default_factory=CreditConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _check(self) -> Config:
        batch = self.rollout.prompts * self.rollout.group_size
        if self.update.minibatches > batch:
            raise ValueError(
                f"update.minibatches={self.update.minibatches} exceeds the batch of {batch} "
                "episodes (rollout.prompts * rollout.group_size); lower it"
            )
        if not self.credit.sources:
            raise ValueError("credit.sources is empty; name at least one source, e.g. {grpo: 1.0}")
        return self


def _one_line(err: ValidationError) -> str:
    e = err.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or "config"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    got = f"; got {e['input']!r}" if "input" in e and not isinstance(e["input"], dict) else ""
    return f"config field '{where}': {e['msg']}{got}{more}"


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Set data['a']['b'] = value for dotted 'a.b', creating sections as needed."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: '{k}' is not a section")
    node[keys[-1]] = value


def parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def build_config(data: dict | None = None, overrides: list[str] = ()) -> Config:
    data = dict(data or {})
    for item in overrides:
        set_path(data, *parse_override(item))
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_one_line(err)) from None


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"cannot read YAML {p}: {first}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping, not {type(data).__name__}")
    return build_config(data, overrides)


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
