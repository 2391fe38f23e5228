"""Dream-testing (the planner) and dreams in the training loop (issue 7)."""

from __future__ import annotations

import json

import pytest
import torch

from clicker.core.config import build_config
from clicker.dream import DreamWorld, OracleModel
from clicker.dream.planner import Planner
from clicker.models.policy import Policy
from clicker.rollout.runner import RolloutSettings, run_episodes
from clicker.tasks.keydoor import CUE, KeyDoor
from clicker.train.loop import train


def oracle_value(policy: Policy, world: KeyDoor, split: str, indices: list[int]):
    """V*(s) = 0.9 ** (optimal actions left) from a transcript, found by replaying its actions
    in the real env: a perfect value model for the planner to read."""
    by_prompt = {world.make(split, i).reset(): i for i in indices}

    def value(seqs: list[list[int]]) -> list[float]:
        out = []
        for ids in seqs:
            text = policy.decode(ids)
            prompt = next(p for p in by_prompt if text.startswith(p))
            env = world.make(split, by_prompt[prompt])
            env.reset()
            for part in text[len(prompt):].split(CUE):
                if part:
                    env.step(part.split("\n", 1)[0] + "\n")
            left = 0
            while not env.done:
                env.step(env.expert_action() + "\n")
                left += 1
            out.append(0.9 ** left)
        return out

    return value


def test_with_an_exact_world_model_the_planner_picks_the_best_action(policy):
    """The oracle world model and V* make dream-testing pick, among K sampled candidates, the
    one closest to the goal: every planned episode succeeds in (near) the optimal number of
    actions, where the same policy acting alone wanders. The dreams cost imagined tokens, never
    world tokens. K is 16: on the tiny-model build aba190f53b5c (greedy keydoor success 0.43)
    8 candidates failed 1 of 24 episodes at sampling seed 0 (0.58 extra actions an episode);
    12 and 16 failed none at seeds 0-2 (at most 0.17 extra)."""
    world = KeyDoor(rooms=2)
    indices = list(range(12))
    settings = RolloutSettings(group_size=2, temperature=1.0)
    torch.manual_seed(0)
    plain = run_episodes(policy, world, "test", indices, settings,
                         generator=torch.Generator().manual_seed(0))
    planner = Planner(policy, DreamWorld(world, OracleModel(world), policy), candidates=16,
                      horizon=1, value=oracle_value(policy, world, "test", indices))
    planned = run_episodes(policy, world, "test", indices, settings,
                           generator=torch.Generator().manual_seed(0), planner=planner)
    optimal = {i: len(world.optimal_actions("test", i)) for i in indices}
    extra = [len(e.turns) - optimal[e.meta["index"]] for e in planned]
    assert all(e.success for e in planned)
    assert sum(extra) / len(extra) <= 0.5, extra  # the expert action is almost always a candidate
    assert sum(len(e.turns) for e in planned) < sum(len(e.turns) for e in plain)
    stats = planner.stats
    assert stats.dreamed == stats.decisions == sum(len(e.turns) for e in planned)
    assert stats.imagined_tokens > 0
    for e in planned:  # real episodes: every token was exchanged with the real env, no more
        assert not e.imagined and e.world_tokens == len(e.tokens)


def test_uncertain_mode_dreams_only_when_the_draw_is_unlikely(policy):
    world = KeyDoor(rooms=2)
    dream = DreamWorld(world, OracleModel(world), policy)
    always = Planner(policy, dream, candidates=3, horizon=1, value=lambda s: [0.0] * len(s))
    never = Planner(policy, dream, candidates=3, horizon=1, when="uncertain", uncertainty=1e-9,
                    value=lambda s: [0.0] * len(s))
    settings = RolloutSettings(group_size=2, temperature=1.0)
    for p in (always, never):
        eps = run_episodes(policy, world, "test", [0, 1], settings,
                           generator=torch.Generator().manual_seed(0), planner=p)
        assert p.stats.decisions == sum(len(e.turns) for e in eps)
    assert always.stats.dreamed == always.stats.decisions
    assert never.stats.dreamed == 0 and never.stats.imagined_tokens == 0
    # V is 0 everywhere: a candidate wins only by reaching the goal in its dreamed step (reward
    # 1); on ties the policy's own draw is kept
    assert always.stats.changed == sum(g == 1.0 for g in always.stats.score_gap)
    assert set(always.stats.score_gap) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="at least 2 candidates"):
        Planner(policy, dream, candidates=1)


def _run(tmp_path, name, **dream):
    sets = ["task.name=keydoor", "task.args={rooms: 2}", "rollout.prompts=2",
            "rollout.group_size=4", "train.iterations=2", "train.eval_every=0",
            "train.progress=false", "train.checkpoint_every=0", "update.lr=1e-4",
            "credit.sources={grpo: 1.0}"]
    sets += [f"dream.{k}={v}" for k, v in dream.items()]
    summary = train(build_config({}, sets), tmp_path / name)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
    return summary, rows


def test_dreams_in_the_loop_are_counted_apart_and_weighted(tmp_path, tiny_dir):
    """Dyna with the exact model: imagined episodes join the batch from the first iteration
    after the warm-up, flagged, with their tokens in dream/imagined_tokens; the world-token
    count is the real rollouts' alone (the same as a run without dreams before the dreams can
    change the policy)."""
    _, base = _run(tmp_path, "plain")
    summary, rows = _run(tmp_path, "dyna", dyna="true", oracle="true", warmup_iterations=0,
                         dyna_prompts=2, min_confidence=0.5)
    assert rows[0]["world/tokens"] == base[0]["world/tokens"]
    assert rows[0]["dream/dyna/episodes"] == 8 and rows[0]["dream/dyna/dropped"] == 0
    assert rows[-1]["dream/imagined_tokens"] > 0
    assert rows[-1]["dream/imagined_tokens"] == sum(r["dream/dyna/imagined_tokens"] for r in rows)
    assert summary["world_tokens"] == rows[-1]["world/tokens"]
    # the learned world model (an ensemble of 2: the first dreams) trains on the real episodes
    # and reports its held-out accuracy and the members' disagreement
    _, learned = _run(tmp_path, "plan", plan="true", warmup_iterations=1, candidates=2,
                      horizon=1, wm_steps=2, when="always", wm_members=2)
    assert "dream/wm/obs_exact" in learned[0] and "dream/wm/loss" in learned[0]
    assert 0 <= learned[0]["dream/wm/disagreement"] <= 1
    assert "dream/plan/dreamed_fraction" not in learned[0] or \
        learned[0]["dream/plan/decisions"] == 0
    assert learned[1]["dream/plan/dreamed_fraction"] == 1.0
    assert learned[1]["dream/imagined_tokens"] > 0
    # compare's curves: imagined tokens at the eval points, the world model's accuracy
    from clicker.experiment.results import dream_series

    series = dream_series(tmp_path / "plan", [0, 1])
    assert series["imagined_tokens"] == [learned[0]["dream/imagined_tokens"],
                                         learned[1]["dream/imagined_tokens"]]
    assert series["wm_obs_exact"] == [r["dream/wm/obs_exact"] for r in learned]
    with_events = [r for r in learned if "dream/wm/event_recall" in r]
    assert series["wm_event_recall"] == [r["dream/wm/event_recall"] for r in with_events]
    assert series["wm_event_tokens"] == [r["world/tokens"] for r in with_events]
    assert series["wm_replay_match"] == []  # no replay check in this run
    assert dream_series(tmp_path / "plain", [0, 1]) is None


def test_report_plots_the_world_models_accuracy(tmp_path):
    """A task whose curves carry world-model accuracy gets a third panel (wider figure), with
    the event recall dashed where a run has it (here one seed of two)."""
    from clicker.experiment.report import _colours, _plot_curves

    curve = {"world_tokens": [0.0, 50.0, 100.0], "success": [0.1, 0.2, 0.3],
             "imagined_tokens": [0.0, 400.0, 900.0], "wm_world_tokens": [10.0, 60.0, 100.0],
             "wm_obs_exact": [0.0, 0.3, 0.5]}
    t = {"budget": 100, "target": 0.25, "curves": {"grpo": [{"world_tokens": [0.0, 100.0],
                                                             "success": [0.1, 0.2]}],
                                                   "dream": [curve, curve | {
                                                       "wm_event_tokens": [20.0, 90.0],
                                                       "wm_event_recall": [0.0, 0.8],
                                                       "wm_replay_tokens": [20.0, 90.0],
                                                       "wm_replay_match": [0.1, 0.6]}]}}
    path = tmp_path / "c.png"
    width = _plot_curves("t", t, ["grpo", "dream"], _colours(["grpo", "dream"]), path)
    assert width == 7.5 + 2 * 3.5 and path.stat().st_size > 0
    for c in t["curves"]["dream"]:
        del c["wm_obs_exact"]
    assert _plot_curves("t", t, ["grpo", "dream"], _colours(["grpo", "dream"]), path) == 11.0
    for c in t["curves"]["dream"]:  # every dream gated off: no imagined-token panel
        c["imagined_tokens"] = [0.0, 0.0, 0.0]
    assert _plot_curves("t", t, ["grpo", "dream"], _colours(["grpo", "dream"]), path) == 7.5


def test_dreamer_weighs_imagined_rows_only(policy):
    from clicker.core.config import DreamConfig, RolloutConfig
    from clicker.core.types import Batch
    from clicker.dream.dreamer import Dreamer

    world = KeyDoor(rooms=2)
    d = Dreamer(DreamConfig(dyna=True, oracle=True, warmup_iterations=0, dyna_prompts=1,
                            dyna_weight=0.25),
                RolloutConfig(prompts=1, group_size=2), policy, world)
    real = run_episodes(policy, world, "train", [0], RolloutSettings(group_size=2),
                        generator=torch.Generator().manual_seed(0))
    dreams, m = d.imagine(0, 1, torch.Generator().manual_seed(0))
    assert len(dreams) == 2 and all(e.imagined and e.world_tokens == 0 for e in dreams)
    assert {e.group for e in dreams} == {1} and {e.group for e in real} == {0}
    batch = Batch.from_episodes(real + dreams, policy.pad_id)
    adv = torch.ones(batch.shape)
    w = d.weigh(batch, adv)
    assert torch.equal(w[:2], adv[:2]) and torch.allclose(w[2:], adv[2:] * 0.25)
    assert m["dream/dyna/imagined_tokens"] == sum(e.meta["imagined_tokens"] for e in dreams)
    # dyna_problems "seen" (the default): the problems the real rollouts just played
    assert {e.prompt for e in dreams}.isdisjoint({e.prompt for e in real})
    seen, _ = d.imagine(0, 1, torch.Generator().manual_seed(0), seen=[0])
    assert {e.prompt for e in seen} == {e.prompt for e in real}


def test_dyna_dreams_only_while_the_world_model_recalls_the_events(random_policy):
    """min_event_recall: no Dyna dream (and a `gated` metric) before the world model has a
    held-out event recall or while it is below the bound; dreams once it is above;
    max_false_rewards: none while too many rewardless steps are given a reward."""
    from clicker.core.config import DreamConfig, RolloutConfig
    from clicker.dream.dreamer import Dreamer

    d = Dreamer(DreamConfig(dyna=True, warmup_iterations=0, dyna_prompts=1, min_confidence=0.0,
                            min_event_recall=0.5, max_false_rewards=0.1),
                RolloutConfig(prompts=1, group_size=2), random_policy, KeyDoor(rooms=2))
    gen = torch.Generator().manual_seed(0)
    assert d.model is not None and not d.trusted()
    assert d.imagine(0, 1, gen) == ([], {"dream/dyna/gated": 1.0})
    d.model.event_log.extend([(1, 4, 0, 10), (0, 1, 0, 10)])  # 1 of 5 events right
    assert not d.trusted() and d.imagine(0, 1, gen)[0] == []
    d.model.event_log.append((4, 4, 4, 10))  # 5 of 9 right, but 4 of 30 quiet steps called events
    assert not d.trusted()
    d.model.event_log.append((0, 0, 0, 20))  # 4 of 50
    dreams, m = d.imagine(0, 1, gen)
    assert d.trusted() and len(dreams) == 2 and m["dream/dyna/gated"] == 0.0
    assert d.cfg.min_event_recall == 0.5 and Dreamer(
        DreamConfig(dyna=True, oracle=True), RolloutConfig(), random_policy,
        KeyDoor(rooms=2)).trusted()  # an exact model is always trusted


def test_dream_methods_are_valid_configs(tmp_path):
    """compare's dream methods (value_turn + plan / dyna / both) build valid configs, as
    `clicker compare` builds them."""
    from clicker.experiment.compare import METHODS, load_spec, plan

    for name in ("dream_plan", "dream_dyna", "dream", "dyna_steps", "dyna_gated", "branch",
                 "branch_oracle"):
        assert METHODS[name]["credit.value.steps"] == "turn"
    spec = load_spec(None, tasks=["keydoor_quick"],
                     methods=["grpo", "dream_plan", "dream", "dyna_steps", "dyna_gated",
                              "branch", "branch_oracle"],
                     seeds=1)
    cfgs = {r.method: r.cfg for r in plan(spec, tmp_path)}
    assert cfgs["dream"].dream.plan and cfgs["dream"].dream.dyna
    assert cfgs["dyna_steps"].dream.dyna_updates == 3 and cfgs["dyna_steps"].dream.dyna
    gated = cfgs["dyna_gated"].dream
    assert gated.wm_event_share == 0.5 and gated.min_event_recall == 0.5 and gated.dyna_updates
    assert cfgs["branch"].dream.branch == 32 and cfgs["branch"].dream.enabled
    assert cfgs["branch_oracle"].dream.oracle and not cfgs["branch"].dream.oracle
    assert not cfgs["grpo"].dream.enabled


def test_imagined_updates_train_the_policy_on_dreams_alone(policy):
    """Dyna's planning steps: each round dreams a new batch (flagged, no world tokens), runs
    credit on it and updates the policy on it; a credit that spends no world tokens leaves the
    world-token count alone, and a round the confidence gate empties makes no update."""
    import copy
    import dataclasses

    from clicker.credit.base import CreditOutput
    from clicker.dream.dreamer import Dreamer
    from clicker.dream.dyna import imagined_updates

    live = copy.deepcopy(policy)
    world = KeyDoor(rooms=2)
    seen_batches = []

    def credit(batch):  # every action token pushed up: the update must move the policy
        seen_batches.append(batch)
        return CreditOutput(batch.action_mask.float())

    sets = ["dream.dyna=true", "dream.oracle=true", "dream.warmup_iterations=0",
            "dream.dyna_prompts=1", "rollout.prompts=1", "rollout.group_size=2"]
    cfg = build_config({}, sets + ["dream.dyna_updates=2"])
    d = Dreamer(cfg.dream, cfg.rollout, live, world)
    before = [p.detach().clone() for p in live.model.parameters()]
    opt = torch.optim.AdamW(live.model.parameters(), lr=1e-3)
    m, spent = imagined_updates(d, credit, live, opt, cfg, 0, [0], torch.Generator().manual_seed(0))
    assert spent == 0 and m["dream/dyna_updates/updates"] == 2
    assert m["dream/dyna_updates/imagined_tokens"] == d.imagined_tokens > 0
    assert len(seen_batches) == 2
    assert all(e.imagined and e.world_tokens == 0 for b in seen_batches for e in b.episodes)
    assert any(not torch.equal(p, q) for p, q in zip(before, live.model.parameters()))
    oracle = d.world.predictor

    class Unsure:  # the oracle's answers at confidence 0.1, below the gate's 0.5
        def predict(self, requests):
            return [dataclasses.replace(p, confidence=0.1) for p in oracle.predict(requests)]

    d.world.predictor = Unsure()
    m, _ = imagined_updates(d, credit, live, opt, build_config({}, sets + ["dream.dyna_updates=1"]),
                            1, [0], torch.Generator().manual_seed(0))
    assert m["dream/dyna_updates/updates"] == 0 and m["dream/dyna_updates/skipped"] == 1


def test_dyna_updates_in_the_loop(tmp_path, tiny_dir):
    """`dream.dyna_updates`: that many extra updates on dreams each iteration; the world-token
    count is the real rollouts' alone and every imagined token is counted."""
    _, base = _run(tmp_path, "plain")
    summary, rows = _run(tmp_path, "updates", dyna="true", oracle="true", warmup_iterations=0,
                         dyna_prompts=2, min_confidence=0.5, dyna_updates=2)
    assert rows[0]["world/tokens"] == base[0]["world/tokens"]
    assert all(r["dream/dyna_updates/updates"] == 2 for r in rows)
    assert summary["imagined_tokens"] == rows[-1]["dream/imagined_tokens"] == sum(
        r["dream/dyna/imagined_tokens"] + r["dream/dyna_updates/imagined_tokens"] for r in rows)
    assert summary["world_tokens"] == rows[-1]["world/tokens"]
    with pytest.raises(ValueError, match="dream.dyna=true"):
        build_config({}, ["dream.dyna_updates=1"])
