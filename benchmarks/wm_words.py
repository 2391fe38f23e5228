"""Issue 7 probe, offline: does a world model that reads words learn keydoor_long's rules
where the character-level one does not?

Same data and scores as `benchmarks/wm_capacity.py` (teacher-forced) and
`benchmarks/wm_first_step.py`, but the world model has its own tokenizer: the words of the
cached episodes as single tokens, every other character its own token
(`clicker.dream.words.word_tokenizer`), and a fresh LM of the tiny model's shape or `shape=`.
Also prints how many real moves the reply begins right ("R#: exits", up to the label) even
where the rest is wrong.

    python benchmarks/wm_words.py '{"steps": 200, "lr": 1e-3, "batch_size": 32,
        "augment": 1.0}' CHUNKS [first] ['shape={"hidden_size": 256, "num_hidden_layers": 6,
        "num_attention_heads": 8, "intermediate_size": 768}']

(`first`: the first step of each episode only, as wm_first_step; one thread, CPU; ~40 s a
chunk of 200 first steps, ~3 min a chunk of 400 whole-run steps.)
"""
import json
import sys
import time
from collections import Counter
from dataclasses import replace

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from clicker.dream.transcript import Transition, episode_transitions
from clicker.dream.words import word_tokenizer
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
    spec = policy.model.config
    shape = {"hidden_size": spec.hidden_size, "num_hidden_layers": spec.num_hidden_layers,
             "num_attention_heads": spec.num_attention_heads,
             "intermediate_size": spec.intermediate_size}
    shape |= json.loads(next((a[6:] for a in sys.argv[3:] if a.startswith("shape=")), "{}"))
    torch.manual_seed(cfg.seed)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), max_position_embeddings=spec.max_position_embeddings,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True, **shape))
    wm = WorldModel(model, tok, replace(cfg, buffer=10**6), max_turns=20,
                    symmetry=world.symmetry)

    def words(e) -> list[tuple[Transition, str]]:
        ts = episode_transitions(e, 20, 10**6)
        out = [(Transition(tuple(tok.encode(ptok.decode(list(t.history)),
                                            add_special_tokens=False)),
                           t.reward, t.done, t.observation), kind(turn.feedback))
               for t, turn in zip(ts, e.turns)]
        return out[:1] if first else out

    train = [words(e) for e in train_eps]
    for g in train:
        if g:
            wm.add([t for t, _ in g])
    test = [p for e in eps["test"][:(400 if first else TEST)] for p in words(e)]
    seen_train = [p for g in train for p in g][:len(test)]
    n_tok = sum(len(t.history) for t, _ in test) / len(test)
    print(cfg, shape, f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
          f"vocab {len(tok)}; buffer {wm.size} transitions; mean history {n_tok:.0f} tokens",
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
