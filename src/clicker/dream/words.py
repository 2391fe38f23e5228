"""A world model that reads words (`dream.wm_init: words`): its own tokenizer and a fresh LM.

The policy's tokenizer need not be the world model's. The built-in tiny policy reads one token
per character, and a world model that starts as its copy has to find a room's exits in a list
whose letters (n, s, e, w) are also the letters of "exits", "key", "open" and "locked". In the
offline probes of issue 7 (docs/dreaming_rounds.md, "After the fifteenth round") that model did
not learn keydoor_long's move rule from a whole run's data. `word_tokenizer` gives every word of
the world's text (two letters or more, seen `min_count` times in its warmup transcripts) one
token, and every other character its own token, so any text still encodes losslessly and decodes
back exactly. A transcript is about 1.7x shorter than in characters, and a move's exit letters
are tokens no word shares.

`fresh_lm` is a Llama of the tiny model's shape (or `LAYERSxHIDDEN`) with random weights for that
vocabulary: nothing pretrained reads these tokens. The world model converts the policy's token
ids to its own through text (`WorldModel(source=...)`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from clicker.dream.transcript import format_reply
from clicker.models.chartok import CHARS, SPECIALS

WORD = re.compile(r"[A-Za-z]{2,}")


def word_tokenizer(texts: Iterable[str], min_count: int = 5) -> PreTrainedTokenizerFast:
    """Words (2+ letters) seen at least `min_count` times in `texts` as single tokens, longest
    first where two could start at one place; every other character its own token; <pad>,
    <eos>, <unk> as the character tokenizer has them."""
    counts = Counter(w for t in texts for w in WORD.findall(t))
    words = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-len(w), w))
    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for piece in (*CHARS, *words):
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    pattern = "|".join([re.escape(w) for w in words] + [r"[\s\S]"])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", clean_up_tokenization_spaces=False)


def world_tokenizer(world, texts: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    """`word_tokenizer` of `texts` warmup transcripts of the world (its problems played by its
    own expert, with random slips: the words its env answers with) and of the reply headers."""
    rng = random.Random(seed)
    sample = [world.warmup_text(i, rng) for i in range(texts)]
    sample += [format_reply(1.0, True, "")] * 5  # "end"
    return word_tokenizer(sample)


def parse_shape(spec: str) -> tuple[int, int]:
    """(layers, hidden) from `LAYERSxHIDDEN` ("6x256"); ValueError otherwise."""
    m = re.fullmatch(r"(\d+)x(\d+)", spec)
    if m is None or int(m.group(1)) < 1 or int(m.group(2)) < 32 or int(m.group(2)) % 32:
        raise ValueError(f"world model shape {spec!r}: write LAYERSxHIDDEN, hidden a multiple "
                         "of 32 (words:6x256)")
    return int(m.group(1)), int(m.group(2))


def fresh_lm(tokenizer, layers: int = 4, hidden: int = 128, max_positions: int = 1024,
             seed: int = 0) -> LlamaForCausalLM:
    """A float32 Llama with random weights for `tokenizer`: `layers` layers of width `hidden`,
    heads of 32, an MLP 3x as wide (the tiny model's proportions; its shape is the default)."""
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 32, num_key_value_heads=hidden // 32,
        intermediate_size=3 * hidden, max_position_embeddings=max_positions,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    with torch.random.fork_rng(devices=[]):  # the run's own random stream is left as it was
        torch.manual_seed(seed)
        return LlamaForCausalLM(cfg).float()
