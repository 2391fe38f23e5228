"""`distill`: self-distillation, the policy as its own per-token teacher (SDPO; OPSD).

SDPO (Hübotter et al. 2026, arXiv 2601.20802): the same network, under stop-gradient and shown
privileged context, scores the student's own sampled tokens by teacher forcing; the student is
pulled toward the teacher's next-token distribution at every action token. The context is a
successful sibling from the same group (never the episode itself), and/or the verifier's
feedback on a failed attempt (by default only when no sibling succeeded), and/or the reference
answer (OPSD, on-policy self-distillation), and/or the lessons book (`lessons`: the
book-conditioned policy teaches a lesson-free student, so the book can be emptied without
losing its gain). An episode with no context is masked out.

Two forms (`credit.distill.loss`):
- `jsd` (SDPO's reference): the teacher's top-k log-probs plus a tail bucket go to the update,
  which adds D_alpha(student, teacher) at each action token to the loss (generalised JSD;
  alpha=1 is the reverse KL), weighted by min(pi_theta / pi_old, is_clip) as SDPO does for
  off-policy minibatches. The advantage this source returns is 0.
- `sampled`: the advantage log pi_T(y_t) - log pi_old(y_t) at the sampled token, capped at
  +-clip, through the shared clipped update (a REINFORCE estimate of the reverse KL's gradient).

Blending with the outcome advantage, A = lambda * A_GRPO + (1 - lambda) * A_SDPO, is the
weighted sum of sources: `credit.sources='{grpo: 0.5, distill: 0.5}'` (for `jsd` the weight
scales the distillation loss).

Teacher: an EMA of the student (rate 0.05, updated at the start of each call from the policy
the last update produced) or the frozen initial policy. The context goes before the prompt as
labelled blocks (`clicker.core.context`), which the built-in tiny model learns to read with
`model.tiny_recipe=context`.

Departures: the top-k ids are the teacher's (the reference takes the student's; the teacher's
top-k is what can be stored before the update runs); contexts are built from decoded
transcripts, so a multi-turn sibling appears with its observations.

Run: `clicker train --set model.tiny_recipe=context --set credit.sources='{grpo: 1, distill: 1}'`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Sequence

import torch

from clicker.core.config import DistillConfig
from clicker.core.context import context_block, without_context
from clicker.core.types import Batch, DistillTargets, Episode
from clicker.credit.base import CreditContext, CreditOutput, CreditSource


def teacher_contexts(episodes: Sequence[Episode], kinds: Sequence[str], *, threshold: float,
                     feedback_without_sibling: bool, rng: random.Random,
                     transcript: Callable[[Episode], str],
                     lessons: Callable[[Episode], str] | None = None) -> list[str | None]:
    """The privileged context of each episode's teacher, or None (masked out).

    lessons: the lesson book's block for the episode's problem (rendered by `lessons`);
    sibling: a random other episode of the same group with reward >= threshold (an episode is
    never its own teacher); feedback: this episode's verifier feedback when it failed (only if
    no sibling was used, when `feedback_without_sibling`); reference: the reference answer.
    """
    by_group: dict[int, list[int]] = {}
    for i, e in enumerate(episodes):
        by_group.setdefault(e.group, []).append(i)
    out: list[str | None] = []
    for i, e in enumerate(episodes):
        blocks = []
        if "lessons" in kinds and lessons is not None:
            blocks.append(lessons(e))
        sibling = None
        if "sibling" in kinds:
            winners = [j for j in by_group[e.group] if j != i and episodes[j].reward >= threshold]
            if winners:
                sibling = rng.choice(winners)
                blocks.append(context_block("solution", transcript(episodes[sibling])))
        if ("feedback" in kinds and e.reward < threshold and e.feedback.strip()
                and not (feedback_without_sibling and sibling is not None)):
            blocks.append(context_block("feedback", e.feedback))
        if "reference" in kinds and e.reference:
            blocks.append(context_block("reference", e.reference))
        out.append("".join(blocks) or None)
    return out


class DistillCredit(CreditSource):
    name = "distill"

    def __init__(self, cfg: DistillConfig, ctx: CreditContext):
        self.cfg, self.ctx = cfg, ctx
        self.teacher = None
        if cfg.teacher == "ema":
            self.teacher = copy.deepcopy(ctx.policy.model).eval().requires_grad_(False)
        self.calls = 0

    def _transcript(self, e: Episode) -> str:
        """A sibling's transcript as the env saw it: without our own context block (lessons)."""
        return without_context(self.ctx.policy.decode(e.tokens), e.meta.get("context", ""))

    def _lessons(self, e: Episode) -> str:
        book = self.ctx.lessons
        return book(e.meta.get("split", "train"), e.meta.get("index", -1)) if book else ""

    def _teacher(self) -> torch.nn.Module:
        return self.teacher if self.teacher is not None else self.ctx.reference

    @torch.no_grad()
    def _ema(self) -> None:
        for t, s in zip(self.teacher.parameters(), self.ctx.policy.model.parameters(), strict=True):
            t.lerp_(s.detach().to(t.dtype), self.cfg.ema_rate)

    def __call__(self, batch: Batch) -> CreditOutput:
        cfg, policy = self.cfg, self.ctx.policy
        if self.teacher is not None and self.calls > 0:
            self._ema()  # follow the student as the last update left it
        self.calls += 1
        rng = random.Random(f"distill/{self.ctx.seed}/{self.ctx.iteration}")
        contexts = teacher_contexts(
            batch.episodes, cfg.context, threshold=cfg.success_threshold,
            feedback_without_sibling=cfg.feedback_without_sibling, rng=rng,
            transcript=self._transcript, lessons=self._lessons)
        B, T = batch.shape
        ctx_ids = [policy.encode(c) if c else [] for c in contexts]
        rows = [i for i, c in enumerate(contexts)
                if c and len(ctx_ids[i]) + len(batch.episodes[i].tokens) <= policy.max_length]
        tok_lp = torch.zeros(B, T)
        top_lp: torch.Tensor | None = None  # (B, T, k) once the vocabulary size is known
        top_ix: torch.Tensor | None = None
        temperature = self.ctx.settings.temperature or 1.0
        model, dev = self._teacher(), policy.device
        for start in range(0, len(rows), cfg.micro_batch):
            part = rows[start:start + cfg.micro_batch]
            seqs = [ctx_ids[i] + list(batch.episodes[i].tokens) for i in part]
            L = max(map(len, seqs))
            ids = torch.full((len(part), L), policy.pad_id, dtype=torch.long)
            att = torch.zeros((len(part), L), dtype=torch.long)
            for r, s in enumerate(seqs):
                ids[r, :len(s)] = torch.tensor(s)
                att[r, :len(s)] = 1
            logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits
            # teacher position predicting episode token t: offset + t - 1 (t >= 1); only those
            # positions are normalised, on the model's device, and only (n, T) and the top-k
            # leave it (a real vocabulary makes (n, L, V) the largest tensor here)
            offset = torch.tensor([len(ctx_ids[i]) for i in part], device=logits.device)
            pos = (offset[:, None] + torch.arange(T, device=logits.device)[None] - 1)
            pos = pos.clamp(0, L - 1)
            at = logits.gather(1, pos[..., None].expand(-1, -1, logits.shape[-1]))
            at = torch.log_softmax(at.float() / temperature, -1)  # (n, T, V)
            targets = batch.input_ids[part].to(at.device)[..., None]
            tok_lp[part] = at.gather(-1, targets).squeeze(-1).cpu()
            if cfg.loss == "jsd":
                v, ix = at.topk(min(cfg.top_k, at.shape[-1]), -1)
                if top_lp is None:
                    top_lp = torch.zeros(B, T, v.shape[-1])
                    top_ix = torch.zeros(B, T, v.shape[-1], dtype=torch.long)
                top_lp[part], top_ix[part] = v.cpu(), ix.cpu()
        covered = torch.zeros(B, dtype=torch.bool)
        covered[rows] = True
        mask = batch.action_mask & covered[:, None]
        log_ratio = (tok_lp - batch.old_logprobs) * mask
        n_tok = mask.sum().clamp(min=1)
        metrics = {
            "credit/distill/coverage": float(covered.float().mean()),
            "credit/distill/log_ratio_mean": float(log_ratio.sum() / n_tok),
            "credit/distill/teacher_logp_mean": float((tok_lp * mask).sum() / n_tok),
            "credit/distill/student_logp_mean": float((batch.old_logprobs * mask).sum() / n_tok),
        }
        if cfg.loss == "sampled":
            adv = log_ratio.clamp(-cfg.clip, cfg.clip) * mask
            return CreditOutput(adv, metrics, parts={"distill": log_ratio})
        if top_lp is None:  # no episode had context: nothing to distil
            top_lp, top_ix = torch.zeros(B, T, 1), torch.zeros(B, T, 1, dtype=torch.long)
        targets = DistillTargets(top_lp, top_ix, mask, cfg.alpha, 1.0, cfg.is_clip)
        return CreditOutput(torch.zeros(B, T), metrics, parts={"distill": log_ratio},
                            distill=targets)

    def state_dict(self) -> dict:
        if self.teacher is None:
            return {"calls": self.calls}
        return {"calls": self.calls, "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state.get("calls", 0))
        if self.teacher is not None and "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
