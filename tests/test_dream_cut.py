"""Cut dreams (`dream.doubt: cut`): a Dyna dream stops before its first doubted step and the
value model bootstraps its return (issue 7)."""

from __future__ import annotations

import pytest
import torch

from clicker.core.config import DreamConfig, RolloutConfig, build_config
from clicker.core.types import Batch, Episode, Turn
from clicker.dream.cut import cut_dreams, cut_episode, cut_state, dream_reward, first_doubted
from clicker.dream.dreamer import Dreamer
from clicker.dream.ensemble import WorldModelEnsemble
from clicker.dream.transcript import FAILED, Prediction
from clicker.dream.world_model import WorldModel
from clicker.tasks.keydoor import KeyDoor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _dream(turns: int = 3, confidences=(0.9, 0.9, 0.9), malformed=False) -> Episode:
    """A dream of 2 prompt tokens, then per turn 2 action tokens and 1 observation token
    (the last turn's observation is empty)."""
    tokens, mask, lps, ts = [1, 2], [False, False], [0.0, 0.0], []
    for t in range(turns):
        a = len(tokens)
        tokens += [10 + t, 20 + t]
        mask += [True, True]
        lps += [-0.5, -0.25]
        last = t == turns - 1
        if not last:
            tokens.append(30 + t)
            mask.append(False)
            lps.append(0.0)
        ts.append(Turn(f"a{t}", "" if last else f"o{t}", 1.0 if t == 0 else 0.0,
                       action_span=(a, a + 2)))
    return Episode(tokens, mask, lps, tuple(ts), "p", imagined=True,
                   meta={"imagined_tokens": len(tokens), "dream_confidences": list(confidences),
                         "dream_malformed": malformed})


def test_first_doubted_step():
    assert first_doubted(_dream(), 0.5) is None
    assert first_doubted(_dream(confidences=(0.9, 0.4, 0.1)), 0.5) == 1
    assert first_doubted(_dream(confidences=(0.9, 0.4, 0.1)), 0.3) == 2
    assert first_doubted(_dream(confidences=(0.9, 0.9, 0.0), malformed=True), 0.0) == 2
    assert first_doubted(_dream(), 0.5, [(2, 0.01)], 0.05) == 2
    assert first_doubted(_dream(), 0.5, [(2, 0.01), (1, 0.5)], 0.05) == 2
    assert first_doubted(_dream(), 0.5, [(1, 0.04)], 0.05) == 1
    assert first_doubted(_dream(), 0.5, [(0, 0.2)], 0.05) is None


def test_cut_episode_ends_after_the_last_trusted_action_with_the_bootstrap():
    e = _dream()
    c = cut_episode(e, 2, 0.75)
    assert c.tokens == e.tokens[:7] and c.tokens[-1] == 21  # turn 1's last action token
    assert c.action_mask == e.action_mask[:7] and c.logprobs == e.logprobs[:7]
    assert [t.reward for t in c.turns] == [1.0, 0.75] and c.truncated and c.imagined
    assert c.meta["cut"] == 2 and c.meta["bootstrap"] == 0.75
    assert c.meta["imagined_tokens"] == 7 and c.meta["dream_confidences"] == [0.9, 0.9]
    assert dream_reward(c) == 1.0 and dream_reward(e) == 1.0
    assert cut_state(e, 2) == e.tokens[:8]  # through turn 1's observation
    # the bootstrap sits on the cut turn's last action token, after which V is terminal (0)
    b = Batch.from_episodes([c, e], pad_id=0)
    assert b.token_rewards[0, 6] == 0.75 and b.token_rewards[0, 3] == 1.0
    assert b.token_rewards[0].sum() == 1.75 and b.rewards[0] == 1.75
    for bad in (0, 3):
        with pytest.raises(ValueError, match="cut before turn"):
            cut_episode(e, bad, 0.0)


def test_cut_dreams_batch_one_value_call_and_drop_first_step_doubts():
    calls = []

    def value(states):
        calls.append(states)
        return [0.5 + 0.1 * i for i in range(len(states))]

    a, b, c = _dream(), _dream(), _dream()
    out = cut_dreams([a, b, c], [None, 1, 0], value, gamma=0.9)
    assert len(calls) == 1 and calls[0] == [cut_state(b, 1)]
    assert out[0] is a and len(out) == 2
    assert len(out[1].turns) == 1 and out[1].turns[0].reward == pytest.approx(1.0 + 0.9 * 0.5)
    assert cut_dreams([a], [None], lambda s: pytest.fail("no cut, no V")) == [a]


class _Scripted:
    """Turn 0: a confident room; turn 1: an unsure one (confidence 0.3); turn 2: a reward 1
    and an end; turn 3 and later: malformed."""

    def predict(self, requests):
        out = []
        for r in requests:
            n = len(r.actions)
            out.append(Prediction("room.\n> ", 0.0, False, 0.9) if n == 1 else
                       Prediction("hall.\n> ", 0.0, False, 0.3) if n == 2 else
                       Prediction("", 1.0, True, 0.8) if n == 3 else FAILED)
        return out


def _dreamer(policy, value=None, **kw) -> Dreamer:
    cfg = DreamConfig(dyna=True, warmup_iterations=0, dyna_prompts=2, **kw)
    d = Dreamer(cfg, RolloutConfig(prompts=2, group_size=2, max_action_tokens=4), policy,
                KeyDoor(rooms=2), value=value, gamma=0.5)
    d.world.predictor = _Scripted()
    return d


def test_the_dreamer_cuts_where_it_would_drop(random_policy):
    """min_confidence 0.5: `drop` loses every dream (turn 1 is unsure), `cut` keeps turn 0 of
    each with gamma * V of the state after it; at min_confidence 0 the scripted goal is
    kept whole by both."""
    gen = torch.Generator().manual_seed(0)
    seen = []

    def value(states):
        seen.extend(states)
        return [0.4] * len(states)

    dreams, m = _dreamer(random_policy, min_confidence=0.5).imagine(0, 2, gen, seen=[0, 1])
    assert dreams == [] and m["dream/dyna/dropped"] == 4
    d = _dreamer(random_policy, value, min_confidence=0.5, doubt="cut")
    dreams, m = d.imagine(0, 2, gen, seen=[0, 1])
    assert len(dreams) == 4 and m["dream/dyna/cut"] == 4 and m["dream/dyna/dropped"] == 0
    assert m["dream/dyna/bootstrap"] == pytest.approx(0.2) and m["dream/dyna/success"] == 0
    assert m["dream/dyna/cut_turn"] == 1 and m["dream/dyna/imagined_tokens"] > 0
    for e in dreams:
        assert len(e.turns) == 1 and e.turns[0].reward == pytest.approx(0.2) and e.truncated
        assert len(e.tokens) == e.turns[0].action_span[1] and e.action_mask[-1]
        assert e.meta["imagined_tokens"] == len(e.tokens)
    assert len(seen) == 4
    assert all(random_policy.tokenizer.decode(s).endswith("room.\n> ") for s in seen)
    for doubt in ("drop", "cut"):
        dreams, m = _dreamer(random_policy, value, min_confidence=0.0,
                             doubt=doubt).imagine(0, 2, gen, seen=[0, 1])
        assert len(dreams) == 4 and all(dream_reward(e) == 1.0 and not e.truncated
                                        for e in dreams)
        assert m["dream/dyna/success"] == 1.0


class _Malformed(_Scripted):
    def predict(self, requests):
        return [FAILED if len(r.actions) == 2 else p
                for r, p in zip(requests, super().predict(requests))]


def test_a_malformed_reply_is_cut_not_a_failure(random_policy):
    """`drop` ends a dream on a malformed reply with reward 0 (a terminal failure); `cut`
    stops before that step and bootstraps it."""
    gen = torch.Generator().manual_seed(1)
    d = _dreamer(random_policy, min_confidence=0.0)
    d.world.predictor = _Malformed()
    dreams, _ = d.imagine(0, 2, gen, seen=[0, 1])
    assert all(len(e.turns) == 2 and e.reward == 0 and e.meta["dream_malformed"]
               for e in dreams)
    d = _dreamer(random_policy, lambda s: [0.6] * len(s), min_confidence=0.0, doubt="cut")
    d.world.predictor = _Malformed()
    dreams, m = d.imagine(0, 2, gen, seen=[0, 1])
    assert m["dream/dyna/cut"] == 4
    assert all(len(e.turns) == 1 and e.reward == pytest.approx(0.3) for e in dreams)


def test_the_ensemble_cuts_at_its_first_disagreed_event(random_policy):
    """Events are judged per turn: the scripted goal at turn 2 is the dream's only event."""
    members = [WorldModel.from_policy(random_policy, max_turns=20) for _ in range(2)]
    ens = WorldModelEnsemble(members)
    gen = torch.Generator().manual_seed(2)
    dreams, _ = _dreamer(random_policy, min_confidence=0.0).imagine(0, 2, gen, seen=[0, 1])
    events = ens.event_agreements(dreams)
    for e, ev in zip(dreams, events):
        assert [t for t, _ in ev] == [2]
        goal = ens.transitions([e])[0][2]
        assert ev[0][1] == pytest.approx(min(p[0] for p in ens.header_probs([goal])))
    assert ens.agreement(dreams) == [ev[0][1] for ev in events]
    d = _dreamer(random_policy, lambda s: [0.1] * len(s), min_confidence=0.0, doubt="cut")
    d.model = ens
    d.cfg = d.cfg.model_copy(update={"wm_members": 2, "min_agreement": 0.5})
    dreams, m = d.imagine(0, 2, gen, seen=[0, 1])  # an untrained model doubts the goal
    assert m["dream/dyna/disagreed"] == 4 and m["dream/dyna/cut"] == 4
    assert all(len(e.turns) == 2 and e.reward == pytest.approx(0.05) for e in dreams)


def test_judging_steps_cuts_where_a_member_believes_the_dream_missed_a_goal(random_policy,
                                                                             monkeypatch):
    """`dream.judge: steps`: every turn's header is judged, not only the events'. A member that
    gives the rewardless turn 1 ("hall.") its header with probability 0.05 cuts every dream
    there (V bootstraps), where judging events only keeps the dreams whole; and the config
    refuses judging steps without cutting."""
    members = [WorldModel.from_policy(random_policy, max_turns=20) for _ in range(2)]
    ens = WorldModelEnsemble(members)
    monkeypatch.setattr(ens, "header_probs", lambda ts: [
        [0.9] * len(ts), [0.05 if t.observation.startswith("hall") else 0.9 for t in ts]])
    dreams, _ = _dreamer(random_policy, min_confidence=0.0).imagine(
        0, 2, torch.Generator().manual_seed(3), seen=[0, 1])
    assert [[t for t, _ in ev] for ev in ens.event_agreements(dreams)] == [[2]] * 4
    assert ens.event_agreements(dreams, steps=True) == [[(0, 0.9), (1, 0.05), (2, 0.9)]] * 4
    for judge, turns, reward in (("events", 3, 1.0), ("steps", 1, 0.05)):
        d = _dreamer(random_policy, lambda s: [0.1] * len(s), min_confidence=0.0, doubt="cut")
        d.model = ens
        d.cfg = d.cfg.model_copy(update={"wm_members": 2, "min_agreement": 0.1, "judge": judge})
        kept, m = d.imagine(0, 2, torch.Generator().manual_seed(3), seen=[0, 1])
        assert len(kept) == 4 and all(len(e.turns) == turns for e in kept), judge
        assert all(e.reward == pytest.approx(reward) for e in kept), judge
        assert m["dream/dyna/cut"] == (4 if judge == "steps" else 0)
    with pytest.raises(ValueError, match="judge=steps"):
        DreamConfig(dyna=True, wm_members=2, min_agreement=0.1, judge="steps")


def test_cut_needs_a_value_model(random_policy):
    with pytest.raises(ValueError, match="add value to credit.sources"):
        build_config({"dream": {"dyna": True, "doubt": "cut"},
                      "credit": {"sources": {"grpo": 1.0}}})
    cfg = build_config({"dream": {"dyna": True, "doubt": "cut"},
                        "credit": {"sources": {"value": 1.0}}})
    assert cfg.dream.in_process  # V lives in the trainer: not on Ray's world-model worker
    with pytest.raises(ValueError, match="no value model|add value"):
        _dreamer(random_policy, doubt="cut")


def test_cut_dreams_in_the_loop(tmp_path, tiny_dir, monkeypatch):
    """Dyna dreams cut where a step is doubted reach the value credit and the update, with the
    value model's bootstraps logged: the exact model here, made unsure from each dream's second
    step on (confidence 0.5 against min_confidence 0.9)."""
    import dataclasses
    import json

    import clicker.dream.dreamer as dreamer_module
    from clicker.dream.world import OracleModel
    from clicker.train.loop import train

    class Doubtful(OracleModel):
        def predict(self, requests):
            return [dataclasses.replace(p, confidence=0.5) if len(r.actions) > 1 else p
                    for r, p in zip(requests, super().predict(requests))]

    monkeypatch.setattr(dreamer_module, "OracleModel", Doubtful)
    sets = ["task.name=keydoor", "task.args={rooms: 2}", "rollout.prompts=2",
            "rollout.group_size=4", "train.iterations=2", "train.eval_every=0",
            "train.progress=false", "train.checkpoint_every=0", "update.lr=1e-4",
            "credit.sources={value: 1.0}", "credit.value.steps=turn", "dream.dyna=true",
            "dream.oracle=true", "dream.warmup_iterations=0", "dream.dyna_prompts=2",
            "dream.min_confidence=0.9", "dream.doubt=cut"]
    train(build_config({}, sets), tmp_path / "cut")
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").open()]
    for r in rows:
        assert r["dream/dyna/episodes"] == 8 and r["dream/dyna/dropped"] == 0
        assert r["dream/dyna/cut"] > 0 and r["dream/dyna/cut_turn"] == 1
        assert r["dream/dyna/imagined_tokens"] > 0
    assert rows[1]["dream/imagined_tokens"] > rows[0]["dream/imagined_tokens"]
    assert rows[1]["dream/dyna/bootstrap"] != 0  # V has learned something by then
