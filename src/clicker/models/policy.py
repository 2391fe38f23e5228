"""`Policy`: any Hugging Face causal LM + tokenizer from a local directory.

CUDA + bf16 when a GPU is available, CPU + fp32 otherwise (overridable). `token_logprobs`
scores a padded batch by teacher forcing, exactly as the sampler scored its draws
(log_softmax(logits / temperature) in float32), so the importance ratio is 1 on-policy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from clicker.core.losses import token_logprobs

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto or one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


class Policy:
    """A causal LM and its tokenizer on one device."""

    def __init__(self, model, tokenizer, path: str | Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.path = str(path) if path is not None else None
        if tokenizer.pad_token_id is None:  # many HF tokenizers ship without a pad token
            tokenizer.pad_token = tokenizer.eos_token
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id

    @classmethod
    def load(
        cls, path: str | Path | None = None, *, device: str = "auto", dtype: str = "auto",
        tiny_seed: int = 0, tiny_recipe: str = "default",
    ) -> Policy:
        """Load from a local directory; path None means the built-in tiny model."""
        if path is None:
            from clicker.models.tiny import tiny_model_dir

            path = tiny_model_dir(tiny_seed, recipe=tiny_recipe)
        p = Path(path)
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"model directory not found or has no config.json: {p}")
        dev = resolve_device(device)
        model = AutoModelForCausalLM.from_pretrained(p, dtype=resolve_dtype(dtype, dev))
        tokenizer = AutoTokenizer.from_pretrained(p)
        return cls(model.to(dev), tokenizer, p)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def max_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log-prob of each token given its prefix, and (B, T) entropy; 0 at t = 0.

        input_ids, attention_mask (B, T), right-padded.
        """
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask.long()).logits
        logp, ent = token_logprobs(logits[:, :-1], input_ids[:, 1:], temperature)
        zero = torch.zeros_like(logp[:, :1])
        return torch.cat([zero, logp], 1), torch.cat([zero, ent], 1)

    def save(self, out_dir: str | Path, state_dict: dict | None = None) -> None:
        """Hugging Face format; `state_dict`: these weights instead of the module's own (a
        sharded model's, gathered whole)."""
        self.model.save_pretrained(out_dir, state_dict=state_dict)
        self.tokenizer.save_pretrained(out_dir)
