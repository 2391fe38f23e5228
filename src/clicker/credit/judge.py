"""`judge`: RL against a frozen learned judge, kept honest by occasional real treats.

Papers: Gao, Schulman and Hilton 2023, "Scaling laws for reward model overoptimization": with
d = sqrt(KL(pi || pi_init)) the gold reward under RL against a learned proxy follows
d * (alpha - beta * log d): the proxy keeps rising while the gold reward peaks and falls.
Coste et al. 2024, "Reward model ensembles help mitigate overoptimization".

How it works:
- The judge is a `ScalarModel` (own trunk copied from the frozen initial policy `ctx.reference`,
  plus a linear head). Its output at an episode's last real token is a logit;
  score = sigmoid(logit) = P(success | prompt + transcript).
- Warm-up (`ctx.iteration < warmup_iterations`): the batch's real rewards are the labels. The
  episodes join a FIFO labelled buffer (`buffer` episodes), the judge trains for `epochs` passes
  of BCE over the buffer, and the policy's advantage is GRPO on the real rewards.
- After warm-up the judge is frozen and the advantage is GRPO (group-standardised) on the judge's
  scores, on every action token. Every `treat_every`-th batch after warm-up is a treat: its real
  rewards join the buffer, and if mean score - mean real reward > `retrain_gap` the judge is
  retrained on the buffer. Non-treat batches never touch the buffer or the judge.
- Logged every batch, for the over-optimisation curve: `credit/judge/proxy` (mean score),
  `credit/judge/real` (mean real reward; monitoring only), `credit/judge/kl_init`, `treat`,
  `retrains`; on warm-up and treat batches also the judge's accuracy, calibration error and
  explained variance against the real labels, measured before it trains on that batch.
  `report()` plots proxy and real reward against sqrt(KL) (treats marked) and dumps the history.

Deliberate departures:
- Gao et al. fit reward models to preference comparisons labelled by a gold reward model; here
  the gold reward is the task's verifier and the proxy is a pointwise classifier trained on the
  verifier's labels of the policy's own early rollouts.
- One judge, no ensemble (Coste et al.): the treat-and-retrain rule is the mitigation tried here.
- On treat batches the policy's advantage is GRPO on the real rewards (the treat is delivered),
  so real reward reaches the policy on 1/treat_every of the post-warm-up batches.
- Labels are rewards clamped to [0, 1] as soft BCE targets: for 0/1 rewards the score is
  P(success); for graded rewards it estimates the expected reward, on the scale of the gap test.
- kl_init is the k1 estimate sum_t [log pi(y_t) - log pi_init(y_t)] over action tokens, with
  log pi = the sampling log-probs (`batch.old_logprobs`) and pi_init scored at the same
  temperature. Caveat: both are *tempered* distributions (and top-p truncation is ignored), so at
  temperature != 1 this is KL between tempered policies, not the untempered KL of Gao et al.; it
  is unbiased per episode but can be negative on a batch (the plot uses sqrt(max(kl, 0))).
- No truncated-output negatives ("One token to fool LLM-as-a-judge", arXiv 2507.08794).

Run: `clicker train --set credit.sources='{judge: 1.0}' --set credit.judge.warmup_iterations=5`.
"""

from __future__ import annotations

import copy
import io
import json
import math
from collections import deque

import torch
import torch.nn.functional as F

from clicker.core.advantages import broadcast_to_tokens, group_advantages
from clicker.core.config import JudgeConfig
from clicker.core.losses import token_logprobs
from clicker.core.returns import calibration_error, explained_variance
from clicker.core.types import Batch
from clicker.credit.base import CreditContext, CreditOutput, CreditSource
from clicker.models.heads import ScalarModel, batched_forward


def judge_phase(iteration: int, warmup: int, treat_every: int) -> str:
    """"warmup" for the first `warmup` iterations, then "treat" on every `treat_every`-th batch
    after warm-up (the treat_every-th, 2*treat_every-th, ...), "frozen" otherwise."""
    if iteration < warmup:
        return "warmup"
    return "treat" if (iteration - warmup + 1) % treat_every == 0 else "frozen"


def last_token_logits(model: torch.nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor, micro: int) -> torch.Tensor:
    """(B,) model output at each row's last real token; input_ids, attention_mask (B, T),
    right-padded."""
    out = batched_forward(model, input_ids, attention_mask, micro)  # (B, T)
    last = (attention_mask.long().sum(1) - 1).clamp(min=0)  # (B,)
    return out.gather(1, last[:, None]).squeeze(1)


def _pad(rows: list[list[int]], pad_id: int, device: torch.device):
    """Right-pad token lists to (B, T) ids and a (B, T) bool attention mask."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        att[i, :len(r)] = True
    return ids.to(device), att.to(device)


class JudgeCredit(CreditSource):
    name = "judge"

    def __init__(self, cfg: JudgeConfig, ctx: CreditContext, micro_batch: int = 16,
                 eps: float = 1e-4, max_grad_norm: float = 1.0):
        self.cfg, self.ctx = cfg, ctx
        self.micro, self.eps, self.max_grad_norm = micro_batch, eps, max_grad_norm
        self.judge = ScalarModel(ctx.reference).eval()
        self.optimizer = torch.optim.AdamW(self.judge.parameters(), lr=cfg.lr)
        self.buffer: deque[tuple[list[int], float]] = deque(maxlen=cfg.buffer)  # (tokens, label)
        self.trainings = 0  # (re)trainings so far; seeds each shuffle, so a resume is identical
        self.retrains = 0  # retrainings triggered by a treat
        self.history: list[dict] = []  # one entry per batch: iteration, sqrt_kl, proxy, real, ...

    @property
    def device(self) -> torch.device:
        return next(self.judge.parameters()).device

    def scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) judge scores sigmoid(logit) in [0, 1] for (B, T) right-padded episodes."""
        with torch.no_grad():
            return torch.sigmoid(last_token_logits(self.judge, input_ids, attention_mask,
                                                   self.micro))

    def kl_init(self, batch: Batch) -> float:
        """Mean over episodes of sum_t [old_logprob_t - log pi_init(y_t)] on action tokens."""
        ref, m = self.ctx.reference, self.micro
        rows = []
        with torch.no_grad():
            for i in range(0, batch.shape[0], m):
                ids, att = batch.input_ids[i:i + m], batch.attention_mask[i:i + m]
                logits = ref(input_ids=ids, attention_mask=att.long()).logits[:, :-1]
                lp, _ = token_logprobs(logits, ids[:, 1:], self.ctx.settings.temperature)
                rows.append(torch.cat([torch.zeros_like(lp[:, :1]), lp], 1))  # (b, T)
        ref_lp = torch.cat(rows)  # (B, T); token t scored from its prefix, 0 at t = 0
        act = batch.action_mask.float()
        return float(((batch.old_logprobs.float() - ref_lp) * act).sum(1).mean())

    def train_judge(self) -> float:
        """`epochs` passes of BCE over the buffer in shuffled minibatches; last pass's mean loss."""
        gen = torch.Generator().manual_seed(self.ctx.seed * 1_000_003 + self.trainings)
        self.trainings += 1
        tokens = [t for t, _ in self.buffer]
        labels = torch.tensor([y for _, y in self.buffer], dtype=torch.float32)
        pad, dev = self.ctx.policy.pad_id, self.device
        self.judge.train()
        losses: list[float] = []
        for _ in range(self.cfg.epochs):
            order = torch.randperm(len(tokens), generator=gen).tolist()
            losses = []
            for i in range(0, len(order), self.micro):
                idx = order[i:i + self.micro]
                ids, att = _pad([tokens[j] for j in idx], pad, dev)
                logit = last_token_logits(self.judge, ids, att, self.micro)
                loss = F.binary_cross_entropy_with_logits(logit, labels[idx].to(dev))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.judge.parameters(), self.max_grad_norm)
                self.optimizer.step()
                losses.append(float(loss.detach()))
        self.judge.eval()
        return sum(losses) / max(len(losses), 1)

    def __call__(self, batch: Batch) -> CreditOutput:
        it, cfg = self.ctx.iteration, self.cfg
        phase = judge_phase(it, cfg.warmup_iterations, cfg.treat_every)
        b = batch.to(self.device)
        score = self.scores(b.input_ids, b.attention_mask)  # (B,) before any training on b
        real = b.rewards.float()  # (B,)
        kl = self.kl_init(b)
        proxy, real_mean = float(score.mean()), float(real.mean())
        metrics = {"credit/judge/proxy": proxy, "credit/judge/real": real_mean,
                   "credit/judge/kl_init": kl, "credit/judge/treat": float(phase == "treat"),
                   "credit/judge/warmup": float(phase == "warmup")}
        if phase != "frozen":  # the real reward is seen: a label for the judge
            labels = real.clamp(0.0, 1.0)
            agree = {"accuracy": float(((score > 0.5) == (labels > 0.5)).float().mean()),
                     "calibration_error": calibration_error(score, labels),
                     "explained_variance": explained_variance(score, labels)}
            metrics |= {f"credit/judge/{k}": v for k, v in agree.items() if math.isfinite(v)}
            self.buffer.extend(zip([list(e.tokens) for e in batch.episodes], labels.tolist()))
            metrics["credit/judge/buffer"] = float(len(self.buffer))
            if phase == "warmup":
                metrics["credit/judge/train_loss"] = self.train_judge()
            else:
                gap = proxy - float(labels.mean())
                metrics["credit/judge/gap"] = gap
                if gap > cfg.retrain_gap:  # the proxy ran ahead of the real reward
                    self.retrains += 1
                    metrics["credit/judge/train_loss"] = self.train_judge()
        metrics["credit/judge/retrains"] = float(self.retrains)
        target = score if phase == "frozen" else real
        adv = group_advantages("grpo", target, b.groups, self.eps)  # (B,)
        advantages = broadcast_to_tokens(adv, b.action_mask).to(batch.input_ids.device)  # (B, T)
        self.history.append({"iteration": it, "phase": phase, "sqrt_kl": math.sqrt(max(kl, 0.0)),
                             "kl": kl, "proxy": proxy, "real": real_mean})
        return CreditOutput(advantages, metrics)

    def state_dict(self) -> dict:
        return {
            "judge": {k: v.detach().cpu().clone() for k, v in self.judge.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "buffer": {"tokens": [list(t) for t, _ in self.buffer],
                       "labels": [y for _, y in self.buffer]},
            "trainings": self.trainings, "retrains": self.retrains,
            "history": copy.deepcopy(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        if not state:  # a checkpoint from a run without this source
            return
        self.judge.load_state_dict(state["judge"])
        self.optimizer.load_state_dict(state["optimizer"])
        buf = state["buffer"]
        self.buffer.clear()
        self.buffer.extend(zip([list(t) for t in buf["tokens"]], buf["labels"]))
        self.trainings, self.retrains = int(state["trainings"]), int(state["retrains"])
        self.history = copy.deepcopy(state["history"])

    def report(self) -> dict[str, str | bytes]:
        summary = {"warmup_iterations": self.cfg.warmup_iterations,
                   "treat_every": self.cfg.treat_every, "retrain_gap": self.cfg.retrain_gap,
                   "retrains": self.retrains, "history": self.history}
        return {"judge_overoptimisation.png": self._plot(),
                "judge_history.json": json.dumps(summary, indent=1)}

    def _plot(self) -> bytes:
        """Gao et al.'s curve: proxy and real reward against sqrt(KL from pi_init); PNG bytes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=(10, 4))
        FigureCanvasAgg(fig)  # Agg without pyplot: no global backend state is touched
        left, right = fig.subplots(1, 2)
        h = self.history
        for ax, xkey, xlabel in ((left, "sqrt_kl", "sqrt(KL(pi || pi_init)) [nats^0.5]"),
                                 (right, "iteration", "iteration")):
            x = [e[xkey] for e in h]
            ax.plot(x, [e["proxy"] for e in h], "-o", ms=3, color="tab:blue",
                    label="proxy (judge score)")
            ax.plot(x, [e["real"] for e in h], "-o", ms=3, color="tab:orange",
                    label="real reward")
            for phase, marker, name in (("treat", "*", "treat"), ("warmup", "s", "warm-up")):
                sel = [e for e in h if e["phase"] == phase]
                if sel:
                    ax.scatter([e[xkey] for e in sel], [e["real"] for e in sel], marker=marker,
                               s=60, color="black", zorder=3, label=f"{name} (real)")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("score / reward")
            ax.grid(alpha=0.3)
        left.set_title("over-optimisation (Gao et al. 2023)")
        right.set_title(f"judge retrains: {self.retrains}")
        if not h:
            left.text(0.5, 0.5, "no batches yet", ha="center", transform=left.transAxes)
        else:
            left.legend(fontsize=8)
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=100)
        return out.getvalue()
