"""Issue 7 probe, offline: does a world model that reads words learn keydoor_long's rules
where the character-level one does not?

Same data and scores as `benchmarks/wm_capacity.py` (teacher-forced) and
`benchmarks/wm_first_step.py`, but the world model has its own tokenizer: the words of the
cached episodes as single tokens, every other character its own token
(`clicker.dream.words.word_tokenizer`), and a fresh LM (`fresh_lm`) of the tiny model's shape
or `shape=LAYERSxHIDDEN`; it reads the policy's ids through text, as in the loop.
Also prints how many real moves the reply begins right ("R#: exits", up to the label) even
where the rest is wrong.

    python benchmarks/wm_words.py '{"steps": 200, "lr": 1e-3, "batch_size": 32,
        "augment": 1.0}' CHUNKS [first] [shape=6x256]

(`first`: the first step of each episode only, as wm_first_step; one thread, CPU; ~40 s a
chunk of 200 first steps, ~3 min a chunk of 400 whole-run steps.)
"""
import json
import sys
import time
from collections import Counter
from dataclasses import replace

import torch

from clicker.dream.transcript import Transition, episode_transitions
from clicker.dream.words import fresh_lm, parse_shape, word_tokenizer
from clicker.dream.world_model import WorldModel, WorldModelConfig

sys.path.insert(0, "benchmarks")
from wm_capacity import blind, is_right
from wm_episode_replay import kind
from wm_replay_probe import policy, probe_episodes, world

TEST = 64


def main() -> None:
    eps = probe_episodes()
    cfg = WorldModelConfig(**json.loads(sys.argv[1]))
    chunks = int(sys.argv[2])
    first = "first" in sys.argv[3:]
    ptok = policy.tokenizer
    train_eps = [e for b in eps["train"] for e in b]
    tok = word_tokenizer([ptok.decode(e.tokens) for e in train_eps])
    layers, hidden = parse_shape(next((a[6:] for a in sys.argv[3:] if a.startswith("shape=")),
                                      "4x128"))
    model = fresh_lm(tok, layers, hidden, seed=cfg.seed)
    wm = WorldModel(model, tok, replace(cfg, buffer=10**6), max_turns=20,
                    symmetry=world.symmetry, source=ptok)

    def words(e) -> list[tuple[Transition, str]]:
        """(transition in the policy's ids, kind of its real step), the first only if `first`."""
        ts = episode_transitions(e, 20, wm.history_cap)
        out = [(t, kind(turn.feedback)) for t, turn in zip(ts, e.turns)]
        return out[:1] if first else out

    train = [words(e) for e in train_eps]
    for pairs in train:
        if own := wm.own_transitions([t for t, _ in pairs]):
            wm.add(own)
    test = [p for e in eps["test"][:(400 if first else TEST)] for p in words(e)]
    seen_train = [p for g in train for p in g][:len(test)]
    n_tok = sum(len(wm.own(t.history)) for t, _ in test) / len(test)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(cfg, f"{layers}x{hidden}, {params:.2f}M params; vocab {len(tok)}; buffer {wm.size} "
          f"transitions; mean history {n_tok:.0f} tokens",
          flush=True)

    def right(pairs) -> dict[str, str]:
        preds = wm.predict_histories([list(t.history) for t, _ in pairs])
        r, s, start = Counter(), Counter(), Counter()
        for (t, k), p in zip(pairs, preds):
            s[k] += 1
            r[k] += is_right(p, t)
            start[k] += p.ok and blind(p.observation)[:9] == blind(t.observation)[:9]
        return {k: f"{r[k]}/{n}" for k, n in s.most_common(6)} | {
            "moves begun right": f"{start['moved']}/{s['moved']}"}

    t0 = time.time()
    for c in range(chunks):
        loss = wm.fit()
        with torch.no_grad():
            print(f"steps {(c + 1) * cfg.steps:5d}  loss {loss:.4f}  test {right(test)}  "
                  f"train {right(seen_train)}  {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
