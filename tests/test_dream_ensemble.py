"""World model ensembles (`dream.wm_members`) and their agreement gate on dreams (issue 7)."""

from __future__ import annotations

import pytest
import torch

from clicker.core.config import DreamConfig, RolloutConfig
from clicker.dream.dreamer import Dreamer
from clicker.dream.ensemble import WorldModelEnsemble, header_logprobs
from clicker.dream.transcript import Prediction, Transition
from clicker.dream.world import OracleModel
from clicker.dream.world_model import WorldModel
from clicker.tasks.keydoor import KeyDoor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_header_logprobs_are_plain_scoring(random_policy):
    """The packed, teacher-forced header log-probability is what scoring each history + reply
    on its own gives, summed over the header's tokens (`[r=1 end]`) only."""
    enc = random_policy.encode
    a = enc("Take key.\nR1: exits s.\n> take\n")
    b = a + enc("got key.\n> s\n")
    c = enc("Take key.\nR2: exits n.\n> n\n")
    ts = [Transition(tuple(a), 0.0, False, "got key.\n> "), Transition(tuple(b), 1.0, True, ""),
          Transition(tuple(c), 0.0, False, "no exit n.\n> "), Transition(tuple(a), 0.5, False, "x")]
    wm = WorldModel.from_policy(random_policy, max_turns=5)
    want = []
    with torch.no_grad():
        for t, k in zip(ts, (5, 9, 5, 7)):  # "[r=0]", "[r=1 end]", "[r=0]", "[r=0.5]"
            r = wm.reply_ids(t)
            logits = wm.model(input_ids=torch.tensor([list(t.history) + r])).logits[0]
            lp = torch.log_softmax(logits[len(t.history) - 1:-1].float(), -1)
            want.append(float(lp[torch.arange(k), torch.tensor(r[:k])].sum()))
    for rows in (1, 3, 64):
        assert header_logprobs(wm, ts, rows) == pytest.approx(want, abs=1e-4)


def test_ensemble_members_state_and_config(random_policy):
    """Members differ by seed (replay order, renamings); the checkpoint holds them all and a
    checkpoint of another size is refused; min_agreement needs an ensemble."""
    d = Dreamer(DreamConfig(dyna=True, wm_members=3), RolloutConfig(), random_policy,
                KeyDoor(rooms=2), seed=5)
    assert isinstance(d.model, WorldModelEnsemble) and d.world.predictor is d.model
    assert [m.cfg.seed for m in d.model.members] == [5, 6, 7]
    state = d.state_dict()["world_model"]
    assert len(state["members"]) == 3
    d.model.load_state_dict(state)
    with pytest.raises(ValueError, match="has 2 world models, the run 3"):
        d.model.load_state_dict({"members": state["members"][:2]})
    with pytest.raises(ValueError, match="wm_members >= 2"):
        DreamConfig(dyna=True, min_agreement=0.5)
    with pytest.raises(ValueError, match="at least 2"):
        WorldModelEnsemble(d.model.members[:1])
    assert isinstance(Dreamer(DreamConfig(dyna=True), RolloutConfig(), random_policy,
                              KeyDoor(rooms=2)).model, WorldModel)


class _Farmable:
    """A world model wrong in the policy's favour: every first action reaches the goal."""

    def predict(self, requests):
        return [Prediction("", 1.0, True, 1.0) for _ in requests]


@pytest.mark.slow
def test_the_ensemble_drops_dreams_of_a_goal_no_member_believes(policy):
    """Two members trained on the same real keydoor episodes (40 steps each) give the real
    rewardless headers of held-out steps far more probability than a forged goal at the same
    steps; the Dreamer then drops every dream of a model that dreams the goal at the first
    step, and keeps exact (oracle) dreams whose events its members believe.

    Measured: the members' lowest probability of the real rewardless headers has median 0.62
    (0.36-0.71 but for 4 steps near 0), of the forged goals median 0.009 (max 0.049); farmed
    dreams all dropped (agreement 0.003 at min_agreement 0.05); oracle dreams: the 5 failures
    kept (no event to judge), the 3 that reach the goal dropped: after 40 steps neither member
    has learned the goal step (the gate's cost: a goal is kept only where every member
    believes it)."""
    from test_dream_world_model import keydoor_episodes

    world, train, test, gen = keydoor_episodes(policy, tests=8, group=1)
    d = Dreamer(DreamConfig(dyna=True, warmup_iterations=0, dyna_prompts=2, min_confidence=0.0,
                            wm_members=2, min_agreement=0.05, wm_steps=40, wm_batch=16, wm_lr=5e-4,
                            wm_eval=16),
                RolloutConfig(prompts=2, group_size=4), policy, world)
    m = d.observe(train)
    assert 0 <= m["dream/wm/disagreement"] <= 1 and "dream/wm/loss" in m
    assert all(mem.updates == 40 for mem in d.model.members)
    quiet = [t for g in d.model.transitions(test) for t in g if not (t.reward or t.done)]
    forged = [Transition(t.history, 1.0, True, "") for t in quiet]
    real_p = [min(p) for p in zip(*d.model.header_probs(quiet))]
    forged_p = [min(p) for p in zip(*d.model.header_probs(forged))]
    assert sorted(real_p)[len(real_p) // 2] > 0.4, real_p
    assert sorted(forged_p)[len(forged_p) // 2] < 0.02, forged_p
    assert all(f < r for f, r in zip(forged_p, real_p))

    d.world.predictor = _Farmable()
    dreams, m = d.imagine(0, 2, gen, seen=[0, 1])
    assert dreams == [] and m["dream/dyna/disagreed"] == 8 and m["dream/dyna/agreement"] < 0.05
    d.world.predictor = OracleModel(world)
    dreams, m = d.imagine(0, 2, gen, seen=[0, 1])
    assert len(dreams) >= 2 and all(e.imagined for e in dreams), m
    # only events are judged: a dream without a reward or an end scores 1
    fails = [e for e in dreams if not e.success]
    assert d.model.agreement(fails) == [1.0] * len(fails)
