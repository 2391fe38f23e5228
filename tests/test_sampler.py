"""Tests of the batched KV-cache Sampler against cache-free reference computations.

The references are deliberately naive (one prompt at a time, the full sequence through the model
every step, no cache, no padding), so they check the sampler's cache sharing, left padding, row
removal and log-prob bookkeeping rather than re-implementing them.
"""

from __future__ import annotations

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from clicker.rollout import sampler as sampler_module
from clicker.rollout.sampler import Sampler, Samples

CHARS = "0123456789+-=?:QA \nabcdefghijklmnopqr"
VOCAB = 40
EOS = 1


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": EOS, "<unk>": 2}
    for c in CHARS:
        vocab[c] = len(vocab)
    assert len(vocab) == VOCAB
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=None,
        eos_token_id=EOS,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def gpt2() -> GPT2LMHeadModel:
    """Absolute position embeddings: unlike RoPE, wrong position ids change its outputs."""
    torch.manual_seed(1)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=256,
        bos_token_id=EOS,
        eos_token_id=EOS,
    )
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def prompts(tokenizer: PreTrainedTokenizerFast) -> list[list[int]]:
    texts = ["Q: 37+45=?\nA: ", "Q: 1+2=?\nA:", "abc"]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def full_logprobs(model: LlamaForCausalLM, prompt: list[int], completion: list[int], temp: float):
    """log_softmax(logits / temp) of each completion token from one cache-free forward pass."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
    logp = torch.log_softmax(logits[len(prompt) - 1 : -1] / temp, dim=-1)
    return logp.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)


def naive_greedy(model: LlamaForCausalLM, prompt: list[int], n: int, eos: int) -> list[int]:
    """Argmax decoding of one prompt, re-running the whole sequence every step without a cache."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0, -1]
            seq.append(int(logits.argmax()))
            if seq[-1] == eos:
                break
    return seq[len(prompt) :]


def test_same_seed_gives_identical_samples(model, tokenizer, prompts) -> None:
    sampler = Sampler(model, tokenizer)
    kw = {"num_samples": 4, "max_new_tokens": 20, "temperature": 1.0, "stop": ["\n"]}
    a = sampler.sample(prompts, generator=torch.Generator().manual_seed(7), **kw)
    b = sampler.sample(prompts, generator=torch.Generator().manual_seed(7), **kw)
    c = sampler.sample(prompts, generator=torch.Generator().manual_seed(8), **kw)
    assert a == b
    assert a.tokens != c.tokens
    assert len(a.tokens) == len(prompts) * 4


@pytest.mark.parametrize("arch", ["model", "gpt2"])
def test_greedy_matches_naive_loop(arch, request, tokenizer, prompts) -> None:
    model = request.getfixturevalue(arch)
    n = 16
    reference = [naive_greedy(model, p, n, eos=-1) for p in prompts]
    # Make EOS a token that ends prompt 0's greedy completion early, so that row leaves the batch
    # mid-decode while the others continue.
    eos = reference[0][5]
    expected = []
    for ref in reference:
        cut = ref.index(eos) + 1 if eos in ref else n
        expected.append(ref[:cut])
    out = Sampler(model, tokenizer, eos_id=eos).sample(prompts, max_new_tokens=n, temperature=0.0)
    assert out.tokens == expected
    assert out.finished == [eos in ref for ref in expected]
    assert len(out.tokens[0]) <= 6 < n
    for p, toks, lps in zip(prompts, out.tokens, out.logprobs):
        torch.testing.assert_close(
            torch.tensor(lps), full_logprobs(model, p, toks, 1.0), atol=1e-5, rtol=0
        )


def test_shared_prefill_matches_separate_prompts(model, tokenizer, prompts) -> None:
    sampler = Sampler(model, tokenizer)
    g = 3
    kw = {"max_new_tokens": 24, "temperature": 1.0, "stop": ["\n"]}
    shared = sampler.sample(
        prompts, num_samples=g, generator=torch.Generator().manual_seed(3), **kw
    )
    copies = [p for p in prompts for _ in range(g)]
    separate = sampler.sample(
        copies, num_samples=1, generator=torch.Generator().manual_seed(3), **kw
    )
    assert shared.tokens == separate.tokens
    assert shared.finished == separate.finished
    for a, b in zip(shared.logprobs, separate.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    # The G samples of one prompt are genuinely different draws.
    assert len({tuple(t) for t in shared.tokens[:g]}) > 1


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 1.0), (1.3, 0.8)])
def test_logprobs_match_full_forward(model, tokenizer, prompts, temperature, top_p) -> None:
    out = Sampler(model, tokenizer).sample(
        prompts,
        num_samples=3,
        max_new_tokens=24,
        temperature=temperature,
        top_p=top_p,
        stop=["\n", "="],
        generator=torch.Generator().manual_seed(11),
    )
    rows = [p for p in prompts for _ in range(3)]
    for p, toks, lps in zip(rows, out.tokens, out.logprobs):
        assert len(toks) == len(lps) > 0
        expected = full_logprobs(model, p, toks, temperature)
        torch.testing.assert_close(torch.tensor(lps), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["model", "gpt2"])
def test_left_padding_does_not_change_a_row(arch, request, tokenizer, prompts) -> None:
    model = request.getfixturevalue(arch)
    short, long = prompts[2], prompts[0]
    assert len(short) < len(long)
    kw = {"max_new_tokens": 20, "temperature": 0.0}
    together = Sampler(model, tokenizer, eos_id=-1).sample([short, long], **kw)
    # A different pad id must not matter either: padded positions are masked out.
    other_pad = Sampler(model, tokenizer, eos_id=-1, pad_id=5).sample([short, long], **kw)
    for i, p in enumerate([short, long]):
        alone = Sampler(model, tokenizer, eos_id=-1).sample([p], **kw)
        assert together.tokens[i] == alone.tokens[0] == other_pad.tokens[i]
        torch.testing.assert_close(
            torch.tensor(together.logprobs[i]), torch.tensor(alone.logprobs[0]), atol=1e-5, rtol=0
        )


def test_multi_token_stop_string_ends_each_row_independently(model, tokenizer, prompts) -> None:
    n = 24
    free = Sampler(model, tokenizer, eos_id=-1).sample(prompts, max_new_tokens=n, temperature=0.0)
    # Two consecutive single-character tokens of row 0's greedy completion form the stop string.
    k = next(i for i in range(3, n - 1) if min(free.tokens[0][i : i + 2]) >= 3)
    stop = tokenizer.decode(free.tokens[0][k : k + 2])
    assert len(stop) == 2
    out = Sampler(model, tokenizer, eos_id=-1).sample(
        prompts, max_new_tokens=n, temperature=0.0, stop=[stop]
    )
    for full, toks, done in zip(free.tokens, out.tokens, out.finished):
        # Reference: the first prefix of the unstopped completion whose text contains the stop.
        cut = next((j for j in range(1, n + 1) if stop in tokenizer.decode(full[:j])), None)
        if cut is None:
            assert not done and toks == full
        else:
            assert done and toks == full[:cut] and tokenizer.decode(toks).endswith(stop)
    assert out.finished[0] and len(out.tokens[0]) <= k + 2
    assert out.tokens != free.tokens


def test_eos_and_stop_strings_while_sampling(model, tokenizer, prompts) -> None:
    stops = ["a", "7"]
    n = 40
    out = Sampler(model, tokenizer).sample(
        prompts,
        num_samples=8,
        max_new_tokens=n,
        temperature=1.0,
        stop=stops,
        generator=torch.Generator().manual_seed(5),
    )
    on_eos = on_stop = 0
    for toks, done in zip(out.tokens, out.finished):
        text = tokenizer.decode(toks)
        prefix = tokenizer.decode(toks[:-1])
        # Nothing before the last token ends a row.
        assert EOS not in toks[:-1] and not any(s in prefix for s in stops)
        if done:
            hit_eos, hit_stop = toks[-1] == EOS, any(s in text for s in stops)
            assert hit_eos or hit_stop
            on_eos += hit_eos
            on_stop += hit_stop
        else:
            assert len(toks) == n and not any(s in text for s in stops)
    assert on_eos > 0 and on_stop > 0
    assert len({len(t) for t in out.tokens}) > 3  # rows stop independently


def test_preallocated_cache_matches_stock_dynamic_cache(
    model, tokenizer, prompts, monkeypatch
) -> None:
    assert all(
        isinstance(layer, sampler_module._SlabLayer)
        for layer in sampler_module._new_cache(model.config, 8).layers
    )
    kw = {"num_samples": 8, "max_new_tokens": 30, "temperature": 1.0, "stop": ["a", "7"]}
    slab = Sampler(model, tokenizer).sample(
        prompts, generator=torch.Generator().manual_seed(9), **kw
    )
    monkeypatch.setattr(
        sampler_module, "_new_cache", lambda config, capacity: DynamicCache(config=config)
    )
    stock = Sampler(model, tokenizer).sample(
        prompts, generator=torch.Generator().manual_seed(9), **kw
    )
    assert slab.tokens == stock.tokens and slab.finished == stock.finished
    for a, b in zip(slab.logprobs, stock.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    # Rows stopped at different steps, so the batch was compacted along the way.
    assert sum(slab.finished) >= 8 and len({len(t) for t in slab.tokens}) > 3


def test_tiny_top_p_equals_greedy(model, tokenizer, prompts) -> None:
    sampler = Sampler(model, tokenizer)
    greedy = sampler.sample(prompts, num_samples=2, max_new_tokens=16, temperature=0.0)
    nucleus = sampler.sample(
        prompts,
        num_samples=2,
        max_new_tokens=16,
        temperature=1.0,
        top_p=1e-6,
        generator=torch.Generator().manual_seed(0),
    )
    assert nucleus.tokens == greedy.tokens
    for a, b in zip(nucleus.logprobs, greedy.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.5, 1.0), (1.0, 0.7)])
def test_draws_follow_the_tempered_nucleus_distribution(temperature, top_p) -> None:
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0]).repeat(40_000, 1)
    probs = torch.softmax(logits[0] / temperature, dim=-1)
    keep = torch.cumsum(probs, 0) - probs < top_p  # the nucleus (probs are sorted already)
    expected = torch.where(keep, probs, 0.0)
    expected = expected / expected.sum()
    tok, lp = sampler_module._pick(logits, temperature, top_p, torch.Generator().manual_seed(0))
    freq = torch.bincount(tok, minlength=5).float() / len(tok)
    torch.testing.assert_close(freq, expected, atol=0.008, rtol=0)  # ~3.5 sigma at p = 0.5
    assert (freq[~keep] == 0).all()
    torch.testing.assert_close(lp, probs.log()[tok])  # log-probs before truncation


def test_rows_hitting_max_new_tokens_are_unfinished(model, tokenizer, prompts) -> None:
    out = Sampler(model, tokenizer, eos_id=-1).sample(
        prompts,
        num_samples=2,
        max_new_tokens=7,
        temperature=1.0,
        generator=torch.Generator().manual_seed(1),
    )
    assert isinstance(out, Samples)
    assert out.finished == [False] * 6
    assert all(len(t) == 7 for t in out.tokens)
    assert out.num_tokens == 42


def test_invalid_arguments_raise(model, tokenizer, prompts) -> None:
    sampler = Sampler(model, tokenizer)
    bad = [
        {"prompts": []},
        {"prompts": [[3, 4], []]},
        {"prompts": prompts, "num_samples": 0},
        {"prompts": prompts, "top_p": 0.0},
        {"prompts": prompts, "top_p": 1.5},
        {"prompts": prompts, "temperature": -0.1},
        {"prompts": prompts, "max_new_tokens": 0},
        {"prompts": prompts, "stop": [""]},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            sampler.sample(**kwargs)


@pytest.mark.parametrize("arch", ["model", "gpt2"])
def test_session_turns_match_fresh_prefill(arch, request, tokenizer, prompts) -> None:
    """Three turns of a session, with ragged observations appended, an action cut short by the
    caller, and a row dropped, sample what a fresh prefill of each full context samples."""
    model = request.getfixturevalue(arch)
    sampler = Sampler(model, tokenizer, eos_id=EOS)
    session = sampler.session()
    obs = [tokenizer.encode(t, add_special_tokens=False) for t in ["\nQ: 1+", "ab", "\n7=?"]]
    kw = {"max_new_tokens": 8, "temperature": 0.0, "stop": ["\n"]}
    contexts = [list(p) for p in prompts for _ in range(2)]
    rows = list(range(len(contexts)))
    out = session.sample([list(p) for p in prompts], num_samples=2, **kw)
    for turn in range(3):
        fresh = Sampler(model, tokenizer, eos_id=EOS).sample(contexts, **kw)
        assert out.tokens == fresh.tokens, f"turn {turn}"
        for a, b in zip(out.logprobs, fresh.logprobs):
            torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
        # The caller keeps only part of some actions (the cache holds tokens it then drops).
        for k, (r, toks) in enumerate(zip(rows, out.tokens)):
            keep = toks[: max(1, len(toks) - (k % 3))]
            contexts[k] = contexts[k] + keep + obs[(r + turn) % 3]
        if turn == 1:  # row 1 finished its episode
            contexts.pop(1)
            rows.pop(1)
        out = session.sample(contexts, rows=rows, **kw)
    assert session.rows == rows


def test_session_sampling_is_seeded_and_rejects_misuse(model, tokenizer, prompts) -> None:
    kw = {"max_new_tokens": 6, "temperature": 1.0}
    runs = []
    for _ in range(2):
        s = Sampler(model, tokenizer).session()
        g = torch.Generator().manual_seed(5)
        a = s.sample(prompts, num_samples=2, generator=g, **kw)
        ctx = [list(prompts[i // 2]) + t + [5] for i, t in enumerate(a.tokens)]
        b = s.sample(ctx, rows=list(range(len(ctx))), generator=g, **kw)
        runs.append((a, b))
    assert runs[0] == runs[1]
    s = Sampler(model, tokenizer).session()
    with pytest.raises(ValueError, match="first call"):
        s.sample(prompts, rows=[0, 1, 2], **kw)
    s.sample(prompts, **kw)
    with pytest.raises(ValueError, match="row id per context"):
        s.sample(prompts, **kw)
    with pytest.raises(ValueError, match="not in the session"):
        s.sample(prompts[:1], rows=[7], **kw)
    with pytest.raises(ValueError, match="increasing"):
        s.sample(prompts[:2], rows=[1, 0], **kw)


@pytest.mark.parametrize("arch", ["model", "gpt2"])
def test_session_feed_and_fork_match_fresh_prefill(arch, request, tokenizer, prompts) -> None:
    """A trunk session fed its rows' new tokens (one row left out, which keeps its cache), then
    forked into candidates that each append their own tokens, samples what a fresh prefill of
    each candidate's context samples; the trunk itself is unchanged by the fork."""
    model = request.getfixturevalue(arch)
    sampler = Sampler(model, tokenizer, eos_id=EOS)
    kw = {"max_new_tokens": 6, "temperature": 0.0}
    trunk = sampler.session()
    trunk.sample([list(p) for p in prompts], max_new_tokens=1, temperature=0.0)
    grown = [list(p) + tokenizer.encode(x, add_special_tokens=False)
             for p, x in zip(prompts, ["ab", "\n7=?", "c"])]
    trunk.feed({0: grown[0], 2: grown[2]})  # row 1 is not fed: it keeps its prompt
    states = [grown[0], list(prompts[1]), grown[2]]
    tails = [tokenizer.encode(t, add_special_tokens=False) for t in ["1", "23", "x+"]]
    fork = trunk.fork([0, 1, 2], 3)
    contexts = [states[r] + tails[m] for r in range(3) for m in range(3)]
    out = fork.sample(contexts, rows=list(range(9)), **kw)
    fresh = Sampler(model, tokenizer, eos_id=EOS).sample(contexts, **kw)
    assert out.tokens == fresh.tokens
    for a, b in zip(out.logprobs, fresh.logprobs):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), atol=1e-5, rtol=0)
    again = trunk.fork([2], 1).sample([states[2] + tails[0]], rows=[0], **kw)
    assert again.tokens == [out.tokens[6]]
    with pytest.raises(ValueError, match="not in the session"):
        trunk.feed({5: grown[0]})
    with pytest.raises(ValueError, match="cannot fork"):
        trunk.fork([4], 2)
