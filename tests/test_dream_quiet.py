"""A world model's doubted events written again as quiet replies (`event_threshold`, issue 7)."""

from __future__ import annotations

import math

import pytest
import torch

from clicker.dream import DreamRequest, WorldModel, WorldModelConfig
from clicker.dream.transcript import QUIET, Transition, format_reply, header_prob


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_header_prob_multiplies_the_headers_tokens(char_tokenizer):
    text = "[r=1 end]R2: ok"
    toks = char_tokenizer.encode(text, add_special_tokens=False)
    lps = [-0.1 * (k + 1) for k in range(len(toks))]
    n = len("[r=1 end]")
    assert header_prob(char_tokenizer.decode, toks, lps, "[r=1 end]") == pytest.approx(
        math.exp(sum(lps[:n])))
    assert header_prob(char_tokenizer.decode, toks, lps, "[r=2]") == 1.0  # not its header


def _header_p(wm: WorldModel, history: list[int], header: str) -> float:
    """The model's probability of `header` after `history`, teacher forced."""
    head = wm.tokenizer.encode(header, add_special_tokens=False)
    ids = torch.tensor([history + head])
    with torch.no_grad():
        lp = wm.model(ids).logits[0].float().log_softmax(-1)
    return math.exp(sum(float(lp[len(history) - 1 + k, t]) for k, t in enumerate(head)))


def test_event_threshold_rewrites_doubted_events_as_quiet_replies(random_policy):
    """Trained on one history answered by the goal 4 times in 5 and by "no exit" once, the
    greedy reply is the goal with a header probability p between 1/2 and 1: a threshold below p
    keeps it, one above p writes the quiet reply in its place (reward 0, no end, the quiet
    text, confidence at most 1 - p), in evaluation and in a dream's session alike."""
    history = random_policy.encode("R1: exits n.\n> n\n")
    quiet = "no exit n.\n> "
    data = [Transition(tuple(history), 1.0, True, "")] * 4 + [
        Transition(tuple(history), 0.0, False, quiet)]
    a = WorldModel.from_policy(random_policy, WorldModelConfig(lr=1e-2, max_reply_tokens=24),
                               max_turns=5)
    for _ in range(150):
        a.train_step(data)
    p = _header_p(a, history, format_reply(1.0, True, ""))
    assert 0.55 < p < 0.97
    assert _header_p(a, history, QUIET) == pytest.approx(1 - p, abs=0.03)

    def copy(threshold: float, temperature: float = 0.0) -> WorldModel:
        wm = WorldModel.from_policy(random_policy, WorldModelConfig(
            max_reply_tokens=24, event_threshold=threshold, temperature=temperature), max_turns=5)
        wm.model.load_state_dict(a.model.state_dict())
        return wm

    greedy = a.predict_histories([history])[0]
    assert (greedy.reward, greedy.done, greedy.observation) == (1.0, True, "")
    low = copy(p / 2)
    assert low.predict_histories([history]) == [greedy] and low.quieted == 0
    high = copy((1 + p) / 2)
    for pred in (high.predict_histories([history])[0],
                 high.predict([DreamRequest(history, "test", 0, ("n\n",), key=7)])[0]):
        assert pred.ok and (pred.reward, pred.done, pred.observation) == (0.0, False, quiet)
        assert 0 < pred.confidence <= 1 - p + 1e-6
    assert high.quieted == 2
    hot = copy((1 + p) / 2, temperature=1.0)  # evaluation stays greedy, rewritten replies too
    state = hot.generator.get_state()
    evals = [hot.predict_histories([history])[0] for _ in range(3)]
    assert all(e == evals[0] and e.reward == 0.0 and e.observation == quiet for e in evals)
    assert torch.equal(hot.generator.get_state(), state)
    with pytest.raises(ValueError, match="event_threshold"):
        WorldModelConfig(event_threshold=1.5)


def test_the_run_config_sets_the_threshold(random_policy):
    from clicker.core.config import DreamConfig, RolloutConfig
    from clicker.dream.dreamer import Dreamer
    from clicker.tasks.keydoor import KeyDoor

    d = Dreamer(DreamConfig(dyna=True, wm_event_threshold=0.9), RolloutConfig(), random_policy,
                KeyDoor(rooms=2), seed=0)
    assert d.model.cfg.event_threshold == 0.9
    with pytest.raises(ValueError, match="wm_event_threshold"):
        DreamConfig(wm_event_threshold=2.0)
