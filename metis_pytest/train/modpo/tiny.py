"""``--base tiny-random``: a randomly initialised tiny Llama and a tokenizer trained on the run's own text,
built locally (no download), for checking the pipeline's plumbing on a CPU (imports torch, transformers,
tokenizers).

The tokenizer is a byte-level BPE (``tokenizers``) trained on the prompt template, the prompts and the
responses, with ``<s>``, ``</s>`` (EOS), ``<pad>`` and ``<unk>``; the model is a 2-layer Llama
(hidden size 64, 4 heads, so it has the ``q_proj``/``k_proj``/``v_proj``/``o_proj`` modules the LoRA
adapters target) with that vocabulary, its weights drawn from ``seed``. What it generates is noise: only
the plumbing is checked.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["build_tiny"]

SPECIAL = ("<s>", "</s>", "<pad>", "<unk>")


def build_tiny(out: Path, texts: Iterable[str], *, vocab_size: int = 512, seed: int = 0) -> Path:
    """Write the tiny model and tokenizer to ``out`` (a folder ``from_pretrained`` reads); returns it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(list(texts), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
