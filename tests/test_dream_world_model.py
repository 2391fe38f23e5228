"""The world model (reply format, transitions, packed loss, prediction, learning) and the
DreamWorld the runner rolls out in (issue 7)."""

from __future__ import annotations

import math
import random
from itertools import pairwise

import pytest
import torch

from clicker.core.types import Episode, Turn
from clicker.dream import (
    DreamRequest,
    DreamWorld,
    OracleModel,
    Prediction,
    WorldModel,
    WorldModelConfig,
    format_reply,
    parse_reply,
    transitions,
)
from clicker.dream.transcript import episode_transitions
from clicker.dream.world_model import FAILED, Transition
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.rollout.sampler import Samples
from clicker.tasks.keydoor import KeyDoor


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread here (conftest restores the suite's count after each test): the
    learning threshold then does not depend on the machine's cores, and on busy cores two
    OpenMP threads spin-wait (a train step measured 200x slower with 2 threads on 2 busy
    cores)."""
    torch.set_num_threads(1)


# ---- reply format --------------------------------------------------------------------------


@pytest.mark.parametrize("reward", [0.0, 1.0, -0.5, 0.25, 3.0])
@pytest.mark.parametrize("done", [False, True])
@pytest.mark.parametrize("obs", ["", "no exit n.\n> ", "odd [r=1 end] text"])
def test_reply_round_trip(reward, done, obs):
    assert parse_reply(format_reply(reward, done, obs)) == (reward, done, obs)


def test_reply_format_by_hand():
    assert format_reply(1.0, True, "") == "[r=1 end]"
    assert format_reply(0.0, False, "got key.\n> ") == "[r=0]got key.\n> "


@pytest.mark.parametrize("text", ["", "no exit n.", "[r=]x", "[r=abc]x", "[r=nan]x", "[r=inf]",
                                  "[r=1 ned]x", "x[r=1]", "[r=1", " [r=1]"])
def test_malformed_replies_parse_to_none(text):
    assert parse_reply(text) is None


# ---- transitions ---------------------------------------------------------------------------


def _episode(*, truncated=False, imagined=False, context=0, turns=3, last_reward=1.0) -> Episode:
    """`context` leading context tokens, a 4-token prompt, then per turn a 2-token action and a
    3-token observation (none after the last turn)."""
    tokens = list(range(100, 100 + context)) + [1, 2, 3, 4]
    ts = []
    for k in range(turns):
        start = len(tokens)
        tokens += [10 + k, 20 + k]
        last = k == turns - 1
        ts.append(Turn(f"a{k}", "" if last else f"o{k}", last_reward if last else 0.0,
                       action_span=(start, start + 2)))
        if not last:
            tokens += [30 + k, 40 + k, 50 + k]
    mask = [False] * len(tokens)
    for t in ts:
        mask[t.action_span[0]:t.action_span[1]] = [True, True]
    return Episode(tokens, mask, [0.0] * len(tokens), tuple(ts), "p",
                   world_tokens=0 if imagined else len(tokens) - context, imagined=imagined,
                   truncated=truncated)


def test_transitions_one_per_turn_with_done_on_the_last():
    e = _episode()
    ts = transitions([e], max_turns=5, max_history=100)
    assert [t.history for t in ts] == [(1, 2, 3, 4, 10, 20),
                                       (1, 2, 3, 4, 10, 20, 30, 40, 50, 11, 21),
                                       tuple(e.tokens)]
    assert [(t.reward, t.done, t.observation) for t in ts] == [
        (0.0, False, "o0"), (0.0, False, "o1"), (1.0, True, "")]


def test_transitions_skip_rules():
    # a truncated episode's last turn, and the last turn of one that used every turn
    assert len(transitions([_episode(truncated=True)], max_turns=5, max_history=100)) == 2
    assert len(transitions([_episode(turns=3)], max_turns=3, max_history=100)) == 2
    assert transitions([_episode(imagined=True)], max_turns=5, max_history=100) == []
    assert [len(t.history) for t in transitions([_episode()], 5, max_history=11)] == [6, 11]
    # leading context (a lessons block) is not the env's: histories start at the prompt
    ctx = transitions([_episode(context=3)], max_turns=5, max_history=100)
    assert [t.history for t in ctx] == [t.history for t in transitions([_episode()], 5, 100)]
    both = transitions([_episode(), _episode(imagined=True), _episode(truncated=True)], 5, 100)
    assert len(both) == 5


# ---- the packed loss, prediction, checkpoints (a small random model) ------------------------


@pytest.mark.parametrize("reward_weight", [1.0, 4.0])
def test_packed_reply_loss_and_gradient_equal_plain_scoring(random_policy, reward_weight):
    """The packed loss is the plain per-history loss; with `reward_weight`, the replies that
    carry a reward or an end weigh that much more in a weighted mean over reply tokens."""
    enc = random_policy.encode
    a = enc("Take key.\nR1: exits s.\n> take\n")
    b = a + enc("got key.\n> s\n")
    c = enc("Take key.\nR2: exits n.\n> n\n")
    batch = [Transition(tuple(a), 0.0, False, "got key.\n> "),
             Transition(tuple(b), 1.0, True, ""),
             Transition(tuple(c), 0.0, False, "no exit n.\n> "),
             Transition(tuple(a), 0.5, False, "x")]
    ref = WorldModel.from_policy(random_policy, max_turns=5)
    total = torch.zeros(())
    n_reply = 0
    for t in batch:  # each history + reply scored on its own
        r = ref.reply_ids(t)
        w = reward_weight if (t.reward or t.done) else 1.0
        ids = torch.tensor([list(t.history) + r])
        logits = ref.model(input_ids=ids).logits[0, len(t.history) - 1:-1]
        total = total + w * torch.nn.functional.cross_entropy(logits, torch.tensor(r),
                                                              reduction="sum")
        n_reply += w * len(r)
    (total / n_reply).backward()
    for rows in (1, 3, 64):  # one forward per history, a split group, all packed in one
        wm = WorldModel.from_policy(random_policy, WorldModelConfig(
            micro_batch=rows, grad_clip=1e9, reward_weight=reward_weight), max_turns=5)
        assert [wm.weight(t) for t in batch] == [1.0, reward_weight, 1.0, reward_weight]
        assert wm.train_step(batch) == pytest.approx(float(total.detach()) / n_reply,
                                                     rel=1e-5)
        for p, q in zip(wm.model.parameters(), ref.model.parameters()):  # grads before the step
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-7)


class _FixedSampler:
    """Stands in for the world model's sampler: returns the given replies."""

    def __init__(self, rows: list[tuple[list[int], bool]]):
        self.rows, self.prompts = rows, None

    def sample(self, prompts, **kw) -> Samples:
        self.prompts = prompts
        return Samples([t for t, _ in self.rows], [[-0.1] * len(t) for t, _ in self.rows],
                       [f for _, f in self.rows])


def test_predict_parses_scores_and_rejects_malformed_replies(random_policy):
    wm = WorldModel.from_policy(random_policy, WorldModelConfig(max_reply_tokens=16),
                                max_turns=5)
    enc, eos = random_policy.encode, wm.eos_id
    good = enc("[r=1 end]") + [eos]
    fake = _FixedSampler([(good, True), (enc("no header") + [eos], True),
                          (enc("[r=0]no exit n"), False)])  # the last never reached EOS
    wm.sampler = fake  # type: ignore[assignment]
    too_long = [5] * (wm.max_history + 1)
    preds = wm.predict_histories([[5, 6], [5, 7], too_long, [5, 8]])
    assert len(fake.prompts) == 3  # the history with no room for a reply is not generated
    assert preds[0] == Prediction("", 1.0, True, pytest.approx(math.exp(-0.1)), True)
    assert preds[1] == preds[2] == preds[3] == FAILED
    assert not preds[1].ok and preds[1].done and preds[1].confidence == 0.0


def test_dream_replies_are_sampled_at_the_temperature_and_resume_exactly(random_policy):
    """temperature 0: predict is greedy (the same reply to the same history every time, as
    evaluation's); > 0: sampled from the model's seeded stream, so replies vary, a second model
    with the same seed draws the same ones, and a state_dict carries the stream on."""
    enc = random_policy.encode
    history = tuple(enc("R1: exits n.\n> n\n"))
    two = [Transition(history, 0.0, False, f"R{k}: exits s.\n> ") for k in (2, 3)]
    reqs = [DreamRequest(list(history), "test", i, ("n\n",)) for i in range(8)]

    hot = WorldModelConfig(lr=1e-2, max_reply_tokens=24, temperature=1.0, seed=4)
    a = WorldModel.from_policy(random_policy, hot, max_turns=5)
    for _ in range(100):  # learns the reply's format and that R2 and R3 are equally likely
        a.train_step(two)

    def copy(cfg):
        wm = WorldModel.from_policy(random_policy, cfg, max_turns=5)
        wm.model.load_state_dict(a.model.state_dict())
        return wm

    def replies(wm):
        wm._session = None  # a fresh prefill each call: only the sampling differs
        return [(p.observation, round(p.confidence, 6)) for r in reqs for p in wm.predict([r])]

    greedy = copy(WorldModelConfig(max_reply_tokens=24))
    assert len(set(replies(greedy) + replies(greedy))) == 1
    assert greedy.predict_histories([list(history)])[0].observation in {t.observation for t in two}
    b = copy(hot)
    first = replies(a)
    assert {o for o, _ in first} >= {t.observation for t in two} and first == replies(b)
    state = a.state_dict()
    second = replies(a)
    assert second != first
    b.load_state_dict(state)
    assert replies(b) == second
    with pytest.raises(ValueError, match="temperature"):
        WorldModelConfig(temperature=-1)


def test_an_untrained_model_writes_malformed_replies(random_policy):
    wm = WorldModel.from_policy(random_policy, WorldModelConfig(max_reply_tokens=8),
                                max_turns=5)
    reqs = [DreamRequest(random_policy.encode(f"R{i}: exits n.\n> n\n"), "test", i, ("n\n",))
            for i in range(4)]
    assert all(p == FAILED for p in wm.predict(reqs))
    # as a DreamWorld's predictor: every dream ends at its first (malformed) step
    dreams = run_episodes(random_policy, DreamWorld(KeyDoor(rooms=2), wm, random_policy),
                          "test", [0, 1], RolloutSettings(group_size=2),
                          torch.Generator().manual_seed(0))
    for e in dreams:
        assert len(e.turns) == 1 and e.reward == 0.0 and e.imagined and e.world_tokens == 0
        assert e.meta["dream_confidence"] == 0.0 and e.meta["imagined_tokens"] == len(e.tokens)


def test_observe_metrics_buffer_and_state_dict(random_policy):
    world = KeyDoor(rooms=2, max_turns=3)
    gen = torch.Generator().manual_seed(0)
    eps = run_episodes(random_policy, world, "train", [0, 1], RolloutSettings(group_size=2), gen)
    cfg = WorldModelConfig(steps=2, batch_size=4, buffer=7, max_reply_tokens=8)
    wm = WorldModel.from_policy(random_policy, cfg, max_turns=world.max_turns)
    before = [p.detach().clone() for p in wm.model.parameters()]
    m = wm.observe(eps)
    expected = transitions(eps, world.max_turns, wm.max_history)
    assert {"dream/wm/obs_exact", "dream/wm/reward_mae", "dream/wm/done_acc",
            "dream/wm/parse_fail", "dream/wm/reward_calibration", "dream/wm/confidence",
            "dream/wm/loss", "dream/wm/buffer"} <= set(m)
    assert m["dream/wm/parse_fail"] == 1.0 and math.isfinite(m["dream/wm/loss"])
    assert wm.updates == 2 and any(not torch.equal(a, p) for a, p in
                                   zip(before, wm.model.parameters()))
    # FIFO by episode: at most cfg.buffer transitions, the newest kept
    kept = [t for g in wm.buffer for t in g]
    assert wm.size == len(kept) <= 7 and kept == expected[len(expected) - len(kept):]
    again = wm.observe([e for e in eps if e.imagined])  # nothing new: trains on the buffer
    assert set(again) == {"dream/wm/loss", "dream/wm/buffer"} and wm.updates == 4

    other = WorldModel.from_policy(random_policy, cfg, max_turns=world.max_turns)
    other.load_state_dict(wm.state_dict())
    assert other.updates == wm.updates and list(other.buffer) == list(wm.buffer)
    for a, b in zip(other.model.parameters(), wm.model.parameters()):
        assert torch.equal(a, b)
    h = [list(expected[0].history)]
    assert other.predict_histories(h) == wm.predict_histories(h)


def test_event_replay_and_held_out_event_recall(random_policy):
    """event_share 1: every minibatch draw is an episode holding a reward or an end; 0: the
    quiet episodes are drawn too. evaluate scores every event given besides its sample and
    logs the event recall and the false-reward rate in a window that state_dict keeps."""
    enc, eos = random_policy.encode, random_policy.tokenizer.eos_token_id
    quiet = [Transition(tuple(enc(f"R{i}: exits n.\n> n\n")), 0.0, False, "no exit n.\n> ")
             for i in range(6)]
    goal = Transition(tuple(enc("R1: door e open.\n> e\n")), 1.0, True, "")

    def drawn(share: float) -> set[Transition]:
        wm = WorldModel.from_policy(random_policy, WorldModelConfig(
            steps=4, batch_size=2, event_share=share, seed=1), max_turns=5)
        for t in quiet:
            wm.add([t])
        wm.add([quiet[0], goal])
        batches = []
        wm.train_step = lambda b: batches.append(list(b)) or 0.0  # type: ignore[method-assign]
        wm.fit()
        return {t for b in batches for t in b}

    assert drawn(1.0) == {quiet[0], goal}
    assert len(drawn(0.0) - {quiet[0], goal}) > 0
    with pytest.raises(ValueError, match="event_share"):
        WorldModelConfig(event_share=1.5)

    wm = WorldModel.from_policy(random_policy, WorldModelConfig(recall_window=2), max_turns=5)
    assert wm.event_recall is None
    right, wrong = enc("[r=1 end]") + [eos], enc("[r=0]no exit n.") + [eos]
    wm.sampler = _FixedSampler([(wrong, True), (right, True), (right, True)])  # type: ignore
    m = wm.evaluate([quiet[0], quiet[1]], [goal])  # quiet[1] is called a goal: a false reward
    assert m["dream/wm/event_recall"] == 1.0 and m["dream/wm/false_rewards"] == 0.5
    assert len(wm.sampler.prompts) == 3 and wm.event_recall == 1.0
    wm.sampler = _FixedSampler([(wrong, True), (wrong, True)])  # type: ignore
    m = wm.evaluate([goal], [goal])  # an event in the sample is scored once
    assert m["dream/wm/event_recall"] == 0.0 and len(wm.sampler.prompts) == 1
    assert wm.event_recall == 0.5 and list(wm.event_log) == [(1, 1, 1, 2), (0, 1, 0, 0)]
    assert wm.false_reward_rate == 0.5
    wm.evaluate([goal], [])
    assert list(wm.event_log) == [(0, 1, 0, 0), (0, 1, 0, 0)]  # a window of 2
    assert wm.event_recall == 0.0 and wm.false_reward_rate is None
    other = WorldModel.from_policy(random_policy, WorldModelConfig(recall_window=2), max_turns=5)
    other.load_state_dict(wm.state_dict())
    assert list(other.event_log) == list(wm.event_log)


def test_augment_renames_whole_episodes_by_the_worlds_symmetry(random_policy):
    """augment 1: every minibatch episode reaches train_step renamed by one symmetry (histories
    and observations are its text map of the originals, histories still prefixes of one
    another); augment 0: the buffer's transitions as they are, drawn as without a symmetry.
    A world without symmetries cannot be augmented (the world model and the Dreamer say so)."""
    from clicker.core.config import DreamConfig, RolloutConfig
    from clicker.dream.dreamer import Dreamer
    from clicker.tasks import Addition, as_world

    world = KeyDoor(rooms=3, max_turns=6)
    eps = run_episodes(random_policy, world, "train", [0, 1, 2], RolloutSettings(group_size=2),
                       torch.Generator().manual_seed(0))
    tok = random_policy.tokenizer

    def batches(augment: float, symmetry, calls=None) -> list[list[Transition]]:
        wm = WorldModel.from_policy(random_policy, WorldModelConfig(
            steps=3, batch_size=8, augment=augment), max_turns=6, symmetry=symmetry)
        for g in [episode_transitions(e, 6, wm.max_history) for e in eps]:
            wm.add(g)
        out: list[list[Transition]] = []
        wm.train_step = lambda b: out.append(list(b)) or 0.0  # type: ignore[method-assign]
        renamed = wm.renamed
        wm.renamed = lambda g: calls.append((g, renamed(g))) or calls[-1][1]  # type: ignore
        wm.fit()
        return out

    calls: list = []
    augmented = batches(1.0, world.symmetry, calls)
    assert [t for b in augmented for t in b] == [t for _, new in calls for t in new]
    real = [tuple(episode_transitions(e, 6, 10**6)) for e in eps]
    assert all(g in real for g, _ in calls)
    for _, new in calls:  # one episode, one renaming: its histories stay prefixes
        assert all(b.history[:len(a.history)] == a.history for a, b in pairwise(new))
    assert any(new != list(g) for g, new in calls)
    plain = batches(0.0, world.symmetry, calls := [])
    assert calls == [] and plain == batches(0.0, None, [])
    assert {t for b in plain for t in b} <= {t for g in real for t in g}

    sym = world.symmetry(random.Random(3))
    t = episode_transitions(eps[0], 6, 10**6)[-1]
    wm = WorldModel.from_policy(random_policy, WorldModelConfig(), max_turns=6,
                                symmetry=lambda rng: sym)
    [r] = wm.renamed([t])
    assert tok.decode(list(r.history)) == sym(tok.decode(list(t.history)))
    assert (r.reward, r.done, r.observation) == (t.reward, t.done, sym(t.observation))
    with pytest.raises(ValueError, match="augment"):
        WorldModelConfig(augment=1.5)
    with pytest.raises(ValueError, match="symmetry"):
        WorldModel.from_policy(random_policy, WorldModelConfig(augment=0.5), max_turns=6)
    with pytest.raises(ValueError, match="declares no symmetries"):
        Dreamer(DreamConfig(dyna=True, wm_augment=0.5), RolloutConfig(), random_policy,
                as_world(Addition(digits=1)))


# ---- DreamWorld ------------------------------------------------------------------------------


class _Counting:
    """A predictor wrapper that records the size of every batch it is asked."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def predict(self, requests):
        self.calls.append(len(requests))
        return self.inner.predict(requests)


def test_oracle_dream_reproduces_real_episodes(policy):
    world = KeyDoor(rooms=2)
    settings = RolloutSettings(group_size=3)
    real = run_episodes(policy, world, "test", [0, 1, 2], settings,
                        torch.Generator().manual_seed(5))
    oracle = _Counting(OracleModel(world))
    dream_world = DreamWorld(world, oracle, policy)
    assert (dream_world.name, dream_world.stop, dream_world.max_turns) == (
        world.name, world.stop, world.max_turns)
    assert dream_world.reference("test", 1) == world.reference("test", 1)
    dream = run_episodes(policy, dream_world, "test", [0, 1, 2], settings,
                         torch.Generator().manual_seed(5))
    def turns(e):  # feedback is the env's privilege: a predictor does not give it
        return [(t.action, t.observation, t.reward, t.action_span) for t in e.turns]

    for r, d in zip(real, dream):  # same sampled actions, same (exact) answers
        assert (d.tokens, d.action_mask, d.logprobs, turns(d), d.truncated) == (
            r.tokens, r.action_mask, r.logprobs, turns(r), r.truncated)
        assert not r.imagined and r.world_tokens == len(r.tokens) > 0
        assert "imagined_tokens" not in r.meta and "dream_confidence" not in r.meta
        assert d.imagined and d.world_tokens == 0
        assert d.meta["imagined_tokens"] == len(d.tokens) > 0
        assert d.meta["dream_confidence"] == 1.0
    # one batched predictor call per turn: all episodes in the first, the longest sets the count
    assert oracle.calls[0] == len(dream)
    assert len(oracle.calls) == max(len(e.turns) for e in dream)
    assert sum(oracle.calls) == sum(len(e.turns) for e in dream)
    assert any(len(e.turns) > 1 for e in dream) and any(e.success for e in dream)


def test_dream_env_step_matches_the_real_env(policy):
    world = KeyDoor(rooms=2)
    env = DreamWorld(world, OracleModel(world), policy).make("train", 3)
    real = world.make("train", 3)
    assert env.reset() == real.reset()
    for a in ["n\n", "take\n", *[x + "\n" for x in world.optimal_actions("train", 3)[1:]]]:
        d, r = env.step(a), real.step(a)
        assert (d.observation, d.reward, d.done) == (r.observation, r.reward, r.done)
    assert env.done and real.done and env.turns == 4


class _Constant:
    def __init__(self, p: Prediction):
        self.p = p

    def predict(self, requests):
        return [self.p] * len(requests)


def test_dream_ends_at_the_turn_limit_and_on_malformed_replies(random_policy):
    world = KeyDoor(rooms=2, max_turns=4)
    gen = torch.Generator().manual_seed(0)
    settings = RolloutSettings(group_size=2)
    calm = DreamWorld(world, _Constant(Prediction("nothing.\n> ", 0.5, False, 0.25)),
                      random_policy)
    eps = run_episodes(random_policy, calm, "train", [0, 1], settings, gen)
    for e in eps:  # the DreamEnv ended them itself at the limit: done, not truncated
        assert len(e.turns) == 4 and not e.truncated and e.imagined
        assert [t.observation for t in e.turns] == ["nothing.\n> "] * 3 + [""]
        assert e.reward == 2.0 and e.meta["dream_confidence"] == 0.25
    broken = DreamWorld(world, _Constant(FAILED), random_policy)
    for e in run_episodes(random_policy, broken, "train", [0, 1], settings, gen):
        assert len(e.turns) == 1 and e.reward == 0.0 and e.meta["dream_confidence"] == 0.0


# ---- learning ------------------------------------------------------------------------------


@pytest.mark.slow
def test_world_model_learns_keydoor_transitions(policy):
    """On a deterministic env the world model learns transitions well enough to predict
    held-out transitions exactly: test-split layouts whose first observation (room label,
    exits, door) no training episode showed, so replies must be read off the history, not
    recalled.

    Measured (one thread, busy core): 0% exact before (the tiny model has never seen the reply
    format, and even plain continuation of transcripts gets ~10% of observations right); after
    250 steps of 16 transitions (~50 s) 60% of these 96 transitions exactly, 4% malformed,
    done accuracy 91% (test transitions with a seen prompt: ~65%). Goal-reaching steps (5 of
    the 96) are not predicted yet, so reward and done accuracy sit at their base rates."""
    world, train, test, _ = keydoor_episodes(policy)
    seen = {e.prompt for e in train}
    cfg = WorldModelConfig(lr=5e-4, steps=250, batch_size=16, micro_batch=64, eval_max=0)
    wm = WorldModel.from_policy(policy, cfg, max_turns=world.max_turns)
    held_out = transitions([e for e in test if e.prompt not in seen], world.max_turns,
                           wm.max_history)[::2][:96]
    assert len(held_out) >= 48
    before = wm.evaluate(held_out)
    wm.observe(train)  # eval_max=0: it scores nothing itself
    after = wm.evaluate(held_out)
    assert after["dream/wm/obs_exact"] >= 0.4 > before["dream/wm/obs_exact"] + 0.3
    assert after["dream/wm/parse_fail"] <= 0.12 < before["dream/wm/parse_fail"]
    # reward: 0.18 mean absolute error on a tiny model rebuilt 2026-11-28 (the goal steps are
    # not predicted and a few false goals are), under 0.15 on the previous build
    assert after["dream/wm/done_acc"] >= 0.8 and after["dream/wm/reward_mae"] <= 0.25
    _session_predictions_match_fresh_ones(policy, wm, world, test)


def keydoor_episodes(policy, tests: int = 32, group: int = 2
                     ) -> tuple[KeyDoor, list[Episode], list[Episode], torch.Generator]:
    """keydoor (rooms=2), the policy's episodes of 16 train prompts x 4 and `tests` test
    prompts x `group`, and the generator they were drawn from (seed 0)."""
    world = KeyDoor(rooms=2)
    gen = torch.Generator().manual_seed(0)
    train = run_episodes(policy, world, "train", list(range(16)), RolloutSettings(group_size=4),
                         gen)
    test = run_episodes(policy, world, "test", list(range(tests)),
                        RolloutSettings(group_size=group), gen)
    return world, train, test, gen


def _same(a: list[Prediction], b: list[Prediction]) -> None:
    assert [(p.observation, p.reward, p.done, p.ok) for p in a] == [
        (p.observation, p.reward, p.done, p.ok) for p in b]
    assert [p.confidence for p in a] == pytest.approx([p.confidence for p in b], abs=1e-4)


def _session_predictions_match_fresh_ones(policy, wm, world, test):
    """The KV-session predictions (candidates of one state sharing its prefill; imagined
    episodes continuing turn after turn) are what a fresh greedy generation of each whole
    history gives."""
    calls = []

    class Recording:
        def predict(self, requests):
            before = dict(wm._row_of)  # the session's rows before this call
            calls.append((requests, wm.predict(requests), before))
            return calls[-1][1]

    dw = DreamWorld(world, Recording(), policy)
    run_episodes(policy, dw, "test", [0, 1], RolloutSettings(group_size=3),
                 torch.Generator().manual_seed(1))
    # later turns continue the session (their envs are rows of it already)
    assert len(calls) >= 3 and all(r.key in c[2] for c in calls[1:] for r in c[0])
    # candidates of one mid-episode state, dreamed together
    e = next(e for e in test if len(e.turns) >= 3)
    actions = sorted({t.action for x in test for t in x.turns})[:4]
    state = e.tokens[:e.turns[1].action_span[0]]
    envs = [dw.resume("test", 0, state, [e.turns[0].action]) for _ in actions]
    calls.append(([env.request(a) for env, a in zip(envs, actions)], None, None))
    calls[-1] = (calls[-1][0], wm.predict(calls[-1][0]), None)
    assert len({r.shared for r in calls[-1][0]}) == 1
    # the same candidates forked from a tracked real state (the planner's trunk): no new
    # session is prefilled for them
    wm.track([7, 99], [list(e.tokens[:e.turns[0].action_span[0]]), list(state)])
    made = []
    session = wm.sampler.session
    wm.sampler.session = lambda: made.append(1) or session()  # type: ignore[method-assign]
    envs = [dw.resume("test", 0, state, [e.turns[0].action], base=99) for _ in actions]
    requests = [env.request(a) for env, a in zip(envs, actions)]
    calls.append((requests, wm.predict(requests), None))
    wm.sampler.session = session  # type: ignore[method-assign]
    assert not made and all(r.base == 99 for r in requests)
    for requests, preds, _ in calls:
        _same(preds, wm.predict_histories([r.history for r in requests]))
