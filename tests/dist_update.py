"""One data-parallel policy update, for `tests/test_distributed.py`.

`make_case(aggregation)` builds the same policy, batch and advantages in every process (seeded);
run under torchrun, each rank runs `policy_update` with its `DataParallel` and rank 0 saves the
parameters and metrics to the path given as argv[1] (argv[3] `fsdp`: shard the model
first, and take micro-batches of 1 row, so the ranks' pass counts differ and need padding):
    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_update.py OUT AGG
"""

from __future__ import annotations

import sys

import torch


def make_case(aggregation: str, micro: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM

    from clicker.core.config import UpdateConfig
    from clicker.core.types import Batch
    from clicker.models.chartok import build_char_tokenizer
    from clicker.models.policy import Policy
    from clicker.rollout.runner import RolloutSettings, run_episodes
    from clicker.tasks import make_world

    torch.manual_seed(0)
    tok = build_char_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                      max_position_embeddings=512, tie_word_embeddings=False,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      bos_token_id=None)
    policy = Policy(LlamaForCausalLM(cfg).eval(), tok)
    episodes = run_episodes(policy, make_world("addition"), "train", [0, 1, 2], RolloutSettings(group_size=3),
                            torch.Generator().manual_seed(1))
    batch = Batch.from_episodes(episodes, policy.pad_id)
    # per-row advantages on the action tokens; rows 1 and 4 tie (zero: left out of the passes)
    a = torch.tensor([1.0, 0.0, -0.5, 0.7, 0.0, -1.2, 0.3, 0.9, -0.4])[:, None]
    advantages = a * batch.action_mask.float()
    # a little noise on the sampling log-probs so that ratios and clipping are not trivial
    batch = Batch(batch.input_ids, batch.attention_mask, batch.action_mask,
                  batch.old_logprobs + 0.05 * torch.randn(batch.old_logprobs.shape)
                  * batch.action_mask, batch.rewards, batch.groups, batch.episodes,
                  batch.token_rewards)
    update = UpdateConfig(lr=0.5, aggregation=aggregation, minibatches=2, micro_batch=micro,
                          epochs=2)
    # SGD: the weights then show the gradients themselves (Adam normalises near-zero gradient
    # entries to +-lr, so summation-order noise of 1e-9 would move weights by 1e-5)
    optimizer = torch.optim.SGD(policy.model.parameters(), lr=update.lr)
    return policy, optimizer, batch, advantages, update


def run(dp, aggregation: str, micro: int = 2):
    from clicker.train.distributed import full_weights
    from clicker.train.update import policy_update

    policy, optimizer, batch, advantages, update = make_case(aggregation, micro)
    if dp is not None and dp.sharded:  # FSDP: the optimizer then holds the sharded parameters
        dp.shard_model(policy.model)
        optimizer = torch.optim.SGD(policy.model.parameters(), lr=update.lr)
    result = policy_update(policy, optimizer, batch, advantages, update,
                           generator=torch.Generator().manual_seed(3), dp=dp)
    return {k: v.clone() for k, v in full_weights(policy.model).items()}, result.metrics


if __name__ == "__main__":
    from clicker.train.distributed import DataParallel

    torch.set_num_threads(1)
    fsdp = sys.argv[3:] == ["fsdp"]
    dp = DataParallel.from_env(sharded=fsdp)
    assert dp is not None and dp.world == 2
    params, metrics = run(dp, sys.argv[2], micro=1 if fsdp else 2)
    if dp.main:
        torch.save({"params": params, "metrics": metrics}, sys.argv[1])
    dp.close()
