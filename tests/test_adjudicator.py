"""Two adjudicators: the privileged one sees the reference and the prefix, the blind one only the
prefix; both train on the same labels; their step rewards telescope; disagreements are reported."""

from __future__ import annotations

import pytest
import torch

from clicker.core.config import AdjudicatorConfig
from clicker.core.types import Batch, Episode, Turn
from clicker.credit import CreditContext
from clicker.credit.adjudicator import AdjudicatorCredit, align, hold_within_steps, prepend


def guess(policy, answer: str, reference: str, group: int = 0) -> Episode:
    """Prompt 'Q:', one action token; success iff the action equals the hidden reference."""
    p = policy.encode("Q:")
    a = policy.encode(answer + "\n")
    n = len(p) + len(a)
    return Episode(tokens=p + a, action_mask=[False] * len(p) + [True] * len(a),
                   logprobs=[0.0] * n, prompt="Q:", reference=reference, group=group,
                   turns=(Turn(answer, "", float(answer == reference), action_span=(len(p), n)),))


def batch_of(policy) -> Batch:
    eps = [guess(policy, a, r) for a in "ab" for r in "ab"] * 2
    return Batch.from_episodes(eps, policy.pad_id)


def make(policy, **kw) -> AdjudicatorCredit:
    torch.manual_seed(0)
    cfg = AdjudicatorConfig(**({"lr": 3e-3, "epochs": 1, "whiten": False, "step_tokens": 1} | kw))
    return AdjudicatorCredit(cfg, CreditContext(policy))


def test_prepend_align_and_hold_by_hand():
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    att = torch.tensor([[True, True, True], [True, True, False]])
    out, m, off = prepend(ids, att, [[1], [2, 3]], pad_id=0)
    assert out.tolist() == [[1, 5, 6, 7, 0], [2, 3, 8, 9, 0]]
    assert m.sum(1).tolist() == [4, 4] and off.tolist() == [1, 2]
    assert align(out.float(), off, 3).tolist() == [[5, 6, 7], [8, 9, 0]]
    x = torch.tensor([[0.0, 1, 2, 3, 4, 5]])
    mask = torch.tensor([[False, True, True, True, False, True]])
    assert hold_within_steps(x, [[1, 3]], mask).tolist() == [[0, 1, 1, 3, 0, 3]]


def test_privileged_and_blind_see_different_inputs(random_policy):
    credit = make(random_policy)
    b = batch_of(random_policy)
    blind_ids, _, off_b = credit.inputs(b, "blind")
    priv_ids, priv_att, off_p = credit.inputs(b, "privileged")
    assert torch.equal(blind_ids, b.input_ids) and off_b.tolist() == [0] * 8
    for row, e in enumerate(b.episodes):
        ref = random_policy.encode(f"Reference: {e.reference}\n")
        n = len(e.tokens)
        assert priv_ids[row, :len(ref)].tolist() == ref  # the reference comes first ...
        assert priv_ids[row, len(ref):len(ref) + n].tolist() == e.tokens  # ... then the prefix
        assert int(off_p[row]) == len(ref) and int(priv_att[row].sum()) == len(ref) + n


def test_only_the_privileged_judge_can_tell_a_right_guess(random_policy):
    """Success = the action matches a hidden reference: after the action, the privileged judge
    learns who succeeded; the blind one cannot do better than the base rate 0.5."""
    credit = make(random_policy)
    b = batch_of(random_policy)
    for _ in range(40):
        out = credit(b)
    after = b.action_mask.float().argmax(1) + 1  # state after the action token
    rows = torch.arange(8)
    priv = credit.estimate(b, "privileged")[rows, after]
    blind = credit.estimate(b, "blind")[rows, after]
    y = b.rewards
    assert (priv - y).abs().max() < 0.3, priv
    assert (blind - 0.5).abs().max() < 0.2, blind
    assert out.metrics["credit/adjudicator/differential_abs"] >= 0
    assert torch.isfinite(out.advantages).all() and (out.advantages[~b.action_mask] == 0).all()


def test_step_rewards_telescope_and_report_lists_top_disagreements(random_policy):
    credit = make(random_policy, lam_actor=0.0, report_top=3)
    b = batch_of(random_policy)
    for _ in range(5):
        credit(b)
    p = credit.estimate(b, "privileged")
    out = credit(b)
    first = b.action_mask.float().argmax(1)
    rows = torch.arange(8)
    assert out.advantages.sum(1).tolist() == pytest.approx(
        (b.rewards - p[rows, first]).tolist(), abs=1e-4)
    rep = credit.report()["adjudicator_disagreements.md"]
    assert rep.count("## iteration") == 3 and "Reference" not in rep.split("\n")[0]
    ds = [abs(r["differential"]) for r in credit.disagreements]
    assert ds == sorted(ds, reverse=True)
    again = make(random_policy)
    again.load_state_dict(credit.state_dict())
    assert torch.equal(again.estimate(b, "blind"), credit.estimate(b, "blind"))


class _CountA:
    """Single-turn toy: reward 1 if the completion has an 'a' (so continuations can differ)."""

    name, stop, max_new_tokens = "count_a", ("\n",), 6

    def problem(self, split, index):
        from clicker.tasks.base import Problem

        return Problem(prompt=f"Q{index}:", reference="a", id=str(index))

    def verify(self, problem, completion):
        from clicker.core.types import Verdict

        return Verdict(float("a" in completion))

    def warmup_text(self, index, rng):
        return "Q0:a\n"


def test_math_shepherd_labels_come_from_continuations_and_cost_world_tokens(random_policy):
    from clicker.rollout.runner import RolloutSettings, run_episodes
    from clicker.tasks.base import SingleTurnWorld

    world = SingleTurnWorld(_CountA())
    gen = torch.Generator().manual_seed(0)
    settings = RolloutSettings(group_size=2)
    eps = run_episodes(random_policy, world, "train", [0, 1, 2], settings, gen)
    b = Batch.from_episodes(eps, random_policy.pad_id)
    torch.manual_seed(0)
    ctx = CreditContext(random_policy, world, settings, gen)
    credit = AdjudicatorCredit(AdjudicatorConfig(labels="mc", k=3, step_tokens=2, max_steps=2), ctx)
    starts = credit.starts(b)
    y, w, spent = credit.labels(b, starts)
    assert spent > 0
    for row, ss in enumerate(starts):
        assert 1 <= len(ss) <= 2 and w[row].nonzero().flatten().tolist() == ss
    assert ((y >= 0) & (y <= 1)).all() and (y[w == 0] == 0).all()
    # each label is a fraction of k = 3 continuations
    fractions = (y[w > 0] * 3).round()
    assert torch.allclose(y[w > 0] * 3, fractions, atol=1e-5)
    out = credit(b)
    assert out.world_tokens > 0 and torch.isfinite(out.advantages).all()
