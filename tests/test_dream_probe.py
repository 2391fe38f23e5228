"""The outcome probe (`dream.max_outcome_gap`): each iteration's first Dyna batch is compared
with real play on the same problems, and Dyna sits the iteration out when they disagree
(issue 7)."""

from __future__ import annotations

import json

import pytest
import torch

from clicker.core.config import DreamConfig, build_config
from clicker.core.types import Episode, Turn
from clicker.dream.dreamer import Dreamer
from clicker.dream.probe import OutcomeGap
from clicker.tasks.keydoor import KeyDoor


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _ep(index: int, reward: float, imagined: bool = False, bootstrap: float = 0.0) -> Episode:
    meta = {"index": index} | ({"bootstrap": bootstrap} if bootstrap else {})
    return Episode([1, 2], [False, True], [0.0, -0.5], (Turn("a", "", reward, (1, 2)),), "p",
                   imagined=imagined, meta=meta)


def test_the_gap_is_dreamed_minus_real_reward_on_the_dreams_problems():
    probe = OutcomeGap(0.2)
    real = [_ep(0, 1.0), _ep(0, 1.0), _ep(0, 0.0), _ep(0, 0.0)] + [_ep(1, 0.0)] * 4
    probe.observe(real + [_ep(0, 1.0, imagined=True)] * 8)  # imagined ones are not real play
    m = probe.measure([_ep(0, 1.0, True), _ep(0, 0.0, True)])  # problem 0: 0.5 against 0.5
    assert m["dream/dyna/outcome_gap"] == 0.0 and m["dream/dyna/outcome_real"] == 0.5
    assert not probe.shut and m["dream/dyna/outcome_gated"] == 0.0
    # problem 1 plays 0 for real; dreams that reach the goal there are 1.0 off
    m = probe.measure([_ep(1, 1.0, True), _ep(1, 1.0, True)])
    assert m["dream/dyna/outcome_gap"] == 1.0 and probe.shut
    # a cut dream's V bootstrap is not an outcome it dreamed: 0 against 0
    m = probe.measure([_ep(1, 0.7, True, bootstrap=0.7)] * 2)
    assert m["dream/dyna/outcome_dreamed"] == pytest.approx(0.0) and not probe.shut
    # problems no real rollout played (dyna_problems: fresh): all of real play is the reference
    m = probe.measure([_ep(7, 0.0, True)])
    assert m["dream/dyna/outcome_real"] == 0.25 and m["dream/dyna/outcome_gap"] == -0.25
    assert probe.shut
    # no dreams: nothing is measured, the window decides
    assert probe.measure([]) == {"dream/dyna/outcome_gated": 1.0}


def test_the_window_pools_iterations_and_no_tolerance_never_shuts():
    probe = OutcomeGap(0.2, window=2)
    probe.observe([_ep(0, 0.0)] * 4)
    probe.measure([_ep(0, 0.3, True)])
    assert probe.shut is True  # 0.3 alone
    probe.observe([_ep(0, 1.0)] * 4)
    m = probe.measure([_ep(0, 0.7, True)])  # -0.3: pooled with +0.3, 0
    assert m["dream/dyna/outcome_gap_pooled"] == pytest.approx(0.0) and not probe.shut
    probe.observe([_ep(0, 1.0)] * 4)
    probe.measure([_ep(0, 0.5, True)])  # -0.3 and -0.5: the first +0.3 has left the window
    assert probe.pooled == pytest.approx(-0.4) and probe.shut
    again = OutcomeGap(0.2, window=2)
    again.load_state_dict(probe.state_dict())
    assert list(again.gaps) == list(probe.gaps) and again.shut
    free = OutcomeGap(None)
    free.observe([_ep(0, 0.0)])
    assert free.measure([_ep(0, 1.0, True)])["dream/dyna/outcome_gap"] == 1.0 and not free.shut
    with pytest.raises(ValueError, match="window"):
        OutcomeGap(0.1, window=0)


def test_a_probe_far_from_real_play_shuts_dyna_for_the_iteration(random_policy):
    """The exact world model, a policy that never reaches the goal, and real play that (as
    told) always did: the probe's dreams are dropped and the planning steps dream nothing;
    told the truth (real play fails too), the dreams join the batch."""
    from clicker.dream.dyna import imagined_updates

    cfg = build_config({}, ["dream.dyna=true", "dream.oracle=true", "dream.warmup_iterations=0",
                            "dream.dyna_prompts=1", "rollout.prompts=1", "rollout.group_size=2",
                            "dream.dyna_updates=2", "dream.max_outcome_gap=0.5"])
    d = Dreamer(cfg.dream, cfg.rollout, random_policy, KeyDoor(rooms=2))
    gen = torch.Generator().manual_seed(0)
    d.observe([_ep(0, 1.0), _ep(0, 1.0)])
    dreams, m = d.imagine(0, 1, gen, seen=[0])
    assert dreams == [] and m["dream/dyna/outcome_gated"] == 1.0 and m["dream/dyna/gated"] == 1.0
    assert m["dream/dyna/outcome_gap"] == -1.0 and m["dream/dyna/episodes"] == 0
    tokens = d.imagined_tokens
    assert tokens > 0  # the probe itself was dreamed

    def credit(batch):  # never reached while the probe shuts Dyna
        raise AssertionError("no planning step may run")

    opt = torch.optim.AdamW(random_policy.model.parameters(), lr=1e-3)
    mu, _ = imagined_updates(d, credit, random_policy, opt, cfg, 0, [0], gen)
    assert mu["dream/dyna_updates/skipped"] == 2 and mu["dream/dyna_updates/updates"] == 0
    assert d.imagined_tokens == tokens  # and nothing was dreamed for them
    assert d.state_dict()["probe"] == {"gaps": [-1.0], "shut": True}
    d.observe([_ep(0, 0.0), _ep(0, 0.0)])
    dreams, m = d.imagine(1, 1, gen, seen=[0])
    assert len(dreams) == 2 and m["dream/dyna/outcome_gap"] == 0.0 and not d.probe.shut
    assert m["dream/dyna/gated"] == 0.0


def test_the_gap_needs_dyna():
    with pytest.raises(ValueError, match="max_outcome_gap"):
        DreamConfig(plan=True, max_outcome_gap=0.2)
    assert DreamConfig(dyna=True, max_outcome_gap=0.2).gap_window == 1


def test_the_probe_in_the_loop(tmp_path, tiny_dir):
    """In training, every iteration logs its probe's gap, and an iteration the probe shuts has
    no Dyna episode in its batch and no planning step (tolerance 1e-6: shut unless the dreams
    matched real play exactly)."""
    from clicker.train.loop import train

    sets = ["task.name=keydoor", "task.args={rooms: 2}", "rollout.prompts=2",
            "rollout.group_size=4", "train.iterations=3", "train.eval_every=0",
            "train.progress=false", "train.checkpoint_every=0", "update.lr=1e-4",
            "dream.dyna=true", "dream.oracle=true", "dream.warmup_iterations=0",
            "dream.dyna_prompts=2", "dream.dyna_updates=1", "dream.max_outcome_gap=1e-6"]
    train(build_config({}, sets), tmp_path / "probe")
    rows = [json.loads(line) for line in (tmp_path / "probe" / "metrics.jsonl").open()]
    assert len(rows) == 3
    for r in rows:
        shut = abs(r["dream/dyna/outcome_gap_pooled"]) > 1e-6
        assert r["dream/dyna/outcome_gated"] == float(shut)
        assert r["dream/dyna/episodes"] == (0 if shut else 8)
        assert r["dream/dyna_updates/updates"] == (0 if shut else 1)
    assert any(r["dream/dyna/outcome_gated"] for r in rows)
