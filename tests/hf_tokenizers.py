"""Tiny transformers tokenizers with each family's special tokens, built in memory for the tests.

Byte-level ones have no merges (one token per byte), so a string and its tokens map one to one
and a prompt's expected ids are simply the encoding of its expected text. The SentencePiece-like
one (CodeLlama) invents a leading "▁" for every piece it encodes, as Llama's tokenizer does.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ALTERNATING = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('roles must alternate') }}{% endif %}"
    "{{ '[' + m['role'] + '] ' + m['content'] + '\n' }}{% endfor %}"
)

FAMILY_SPECIALS: dict[str, dict] = {
    "qwen2.5-coder": dict(specials=["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                                    "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>"],
                          eos="<|endoftext|>", chat_template=CHATML),
    "starcoder": dict(specials=["<|endoftext|>", "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>",
                                "<repo_name>", "<file_sep>"], eos="<|endoftext|>"),
    "deepseek-coder": dict(specials=["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜fim▁hole｜>",
                                     "<｜fim▁begin｜>", "<｜fim▁end｜>", "<|EOT|>"],
                           bos="<｜begin▁of▁sentence｜>", eos="<｜end▁of▁sentence｜>", chat_template=ALTERNATING),
    "plain": dict(specials=["<|endoftext|>"], eos="<|endoftext|>"),
}


def byte_level(specials: list[str], eos: str, bos: str | None = None,
               chat_template: str | None = None) -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(specials)
    if bos is not None:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, chat_template=chat_template)


def family_tokenizer(family: str) -> PreTrainedTokenizerFast:
    return byte_level(**FAMILY_SPECIALS[family])


def codellama_like() -> PreTrainedTokenizerFast:
    """Characters as tokens, a "▁" invented before each piece, <s> first; FIM tokens spelt as in
    CodeLlama's Hugging Face vocabulary."""
    chars = ["<unk>", "▁", "☺", "\n", *(chr(c) for c in range(33, 127))]
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    tok.add_special_tokens(["<s>", "</s>", "▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"])
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def tiny_llama_dir(out: Path, tokenizer: PreTrainedTokenizerFast) -> Path:
    """A tiny random ``LlamaForCausalLM`` (seeded) saved with ``tokenizer`` in ``out``: a directory a user
    brings, its vocabulary the tokenizer's and its end-of-sequence the tokenizer's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
