"""A world model with its own tokenizer (`dream.wm_init: words`, `clicker.dream.words`; a
checkpoint with another tokenizer reads the policy's ids the same way; issue 7)."""

from __future__ import annotations

import pytest
import torch

from clicker.core.config import DreamConfig, RolloutConfig
from clicker.dream.dreamer import Dreamer
from clicker.dream.transcript import transitions
from clicker.dream.words import fresh_lm, word_tokenizer, world_tokenizer
from clicker.dream.world import DreamWorld
from clicker.dream.world_model import WorldModel, WorldModelConfig
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.keydoor import KeyDoor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # as in test_dream_world_model: thresholds independent of cores


def test_word_tokenizer_is_lossless_and_gives_words_one_token():
    tok = word_tokenizer(["R5: exits n,e. door e locked.\n> e\ndoor locked."] * 5)
    text = "R5: exits n,e. door e locked.\n> eopenen\nbad action. [r=1 end]€"
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.decode(ids) == text.replace("€", "<unk>")  # outside printable ASCII: unknown
    pieces = tok.convert_ids_to_tokens(tok.encode("R5: exits n,e. door e locked.",
                                                  add_special_tokens=False))
    assert pieces == ["R", "5", ":", " ", "exits", " ", "n", ",", "e", ".", " ", "door", " ",
                      "e", " ", "locked", "."]
    # a word the texts do not hold is spelled in characters
    assert tok.convert_ids_to_tokens(tok.encode("bad", add_special_tokens=False)) == [
        "b", "a", "d"]
    assert tok.eos_token_id is not None and tok.pad_token_id is not None


def test_world_tokenizer_and_fresh_lm():
    tok = world_tokenizer(KeyDoor(rooms=3))
    words = set(tok.get_vocab())
    assert {"exits", "door", "locked", "key", "here", "no", "exit", "goal", "end"} <= words
    state = torch.random.get_rng_state()
    a, b = fresh_lm(tok, seed=3), fresh_lm(tok, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the run's stream is untouched
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert a.config.vocab_size == len(tok) and a.config.num_hidden_layers == 4
    big = fresh_lm(tok, layers=6, hidden=256)
    assert big.config.hidden_size == 256 and big.config.num_attention_heads == 8


@pytest.mark.slow
def test_a_words_world_model_learns_from_the_policys_episodes(policy):
    """A `words` world model reads the policy's (character) ids through text: its buffer holds
    its own, shorter ids of the same text; trained from random weights on 64 keydoor episodes
    it goes from no parseable reply to a third of held-out replies exactly right;
    its KV-session dreams are what a fresh generation of each history gives; and a Dreamer
    ensemble of a policy copy and a `words` member judges dreams across the two tokenizers.

    Measured: 250 steps of 16 at lr 1e-3: held-out exact 0.36 (0 before), malformed 0.01
    (1.0 before), done accuracy 0.94; a copy of the warm-started policy gets 0.6 with the same
    training (test_dream_world_model): from random weights it learns the format first."""
    from test_dream_world_model import _session_predictions_match_fresh_ones, keydoor_episodes

    world, train, test, _ = keydoor_episodes(policy)
    gen = torch.Generator().manual_seed(1)
    seen = {e.prompt for e in train}
    cfg = WorldModelConfig(lr=1e-3, steps=250, batch_size=16, micro_batch=64, eval_max=0)
    wm = WorldModel.from_policy(policy, cfg, max_turns=world.max_turns, init="words",
                                world=world)
    assert wm.source is policy.tokenizer
    held_out = transitions([e for e in test if e.prompt not in seen], world.max_turns,
                           10**9)[::2][:96]
    before = wm.evaluate(held_out)
    wm.observe(train)
    after = wm.evaluate(held_out)
    assert before["dream/wm/parse_fail"] == 1.0 and after["dream/wm/parse_fail"] <= 0.1
    assert after["dream/wm/obs_exact"] >= 0.2 and after["dream/wm/done_acc"] >= 0.85
    first = train[0]
    mine = wm.buffer[0][-1].history
    assert (wm.tokenizer.decode(list(mine))
            == policy.tokenizer.decode(first.tokens[:first.turns[len(wm.buffer[0]) - 1]
                                                     .action_span[1]]))
    assert len(mine) < 0.8 * first.turns[len(wm.buffer[0]) - 1].action_span[1]
    _session_predictions_match_fresh_ones(policy, wm, world, test)

    d = Dreamer(DreamConfig(dyna=True, wm_members=2, wm_init=["policy", "words"], wm_steps=2,
                            wm_batch=8, wm_eval=8),
                RolloutConfig(prompts=2, group_size=4), policy, world)
    lead, words = d.model.members
    assert lead.source is None and words.source is policy.tokenizer
    d.observe(train[:8])
    assert words.updates == 2 and words.size == lead.size
    dreams = run_episodes(policy, DreamWorld(world, lead, policy), "train", [0],
                          RolloutSettings(group_size=2), gen)
    judged = d.model.event_agreements(test[:4] + dreams, steps=True)
    assert [len(j) for j in judged] == [len(g) for g in d.model.transitions(test[:4] + dreams)]
    assert all(0 <= p <= 1 for j in judged for _, p in j)
