"""The special tokens of the open code-model families: FIM, file separator, stops and padding.

One table, ``FAMILIES``, read by the tokenizer (a foreign ``tokenizer.json`` loaded as a
``CodeTokenizer``: its FIM ids, file separator, stops and pad) and by the runtime's prompt formats
(``smallcode.runtime.formats``: the layouts a transformers tokenizer gets). ``detect_family(vocab)``
names the family whose three FIM tokens a vocabulary holds; a vocabulary with none is "plain" (no
FIM). Nothing here loads a tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    """The special tokens of one model family. Each entry lists the spellings the token has in
    that family's tokenizers; the first one found in the vocabulary is used."""

    name: str
    prefix: tuple[str, ...]
    suffix: tuple[str, ...]
    middle: tuple[str, ...]
    file_sep: tuple[str, ...] = ()
    stops: tuple[str, ...] = ()
    """Tokens that end a completion besides the tokenizer's end-of-sequence."""
    pad: tuple[str, ...] = ()
    """Tokens that pad a training row when the tokenizer's own pad token is its end-of-sequence (or
    none): a token no plain text or FIM example holds, so masking it in the loss masks only padding."""


# Sources: the StarCoder and StarCoder2 model cards and the StarCoder2 paper (§5, repository
# context as <file_sep>path\ncode blocks, FIM inside a file); the Qwen2.5-Coder README (file-level
# and repository-level completion, its list of special tokens); the DeepSeek-Coder README (code
# insertion; repository context as files opened by a path comment) and its vocabulary (<pad>); Meta's
# codellama generation.py and the CodeLlama card (<PRE> prefix <SUF>suffix <MID>, ended by <EOT>; the
# Hugging Face vocabulary spells them with a leading "▁").
FAMILIES: tuple[Family, ...] = (
    Family("qwen2.5-coder", ("<|fim_prefix|>",), ("<|fim_suffix|>",), ("<|fim_middle|>",), ("<|file_sep|>",),
           stops=("<|endoftext|>", "<|fim_pad|>", "<|file_sep|>", "<|repo_name|>", "<|im_end|>", "<|im_start|>",
                  "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
           pad=("<|fim_pad|>",)),
    Family("starcoder", ("<fim_prefix>",), ("<fim_suffix>",), ("<fim_middle>",), ("<file_sep>",),
           stops=("<|endoftext|>", "<file_sep>", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
           pad=("<fim_pad>",)),
    Family("deepseek-coder", ("<｜fim▁begin｜>",), ("<｜fim▁hole｜>",), ("<｜fim▁end｜>",),
           stops=("<｜end▁of▁sentence｜>", "<|EOT|>", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
           pad=("<pad>",)),
    Family("codellama", ("▁<PRE>", "<PRE>"), ("▁<SUF>", "<SUF>"), ("▁<MID>", "<MID>"),
           stops=("▁<EOT>", "<EOT>", "</s>")),
)

# Pad tokens of tokenizers whatever their family (after the family's own): Qwen2.5's (every Qwen2.5
# vocabulary has it), StarCoder's, Llama 3.1's reserved fine-tuning pad, and a SentencePiece
# vocabulary's unknown token (Llama 2, CodeLlama, Mistral: byte fallback means text never yields it).
PAD_TOKENS: tuple[str, ...] = ("<|fim_pad|>", "<fim_pad>", "<|finetune_right_pad_id|>", "<pad>", "<unk>")


def first_id(vocab: Mapping[str, int], names: Sequence[str]) -> int | None:
    """The id of the first of ``names`` in ``vocab`` (token -> id), or None."""
    return next((vocab[n] for n in names if n in vocab), None)


def detect_family(vocab: Mapping[str, int]) -> Family | None:
    """The family whose three FIM tokens are all in ``vocab`` (token -> id), or None."""
    for family in FAMILIES:
        if all(first_id(vocab, names) is not None for names in (family.prefix, family.suffix, family.middle)):
            return family
    return None


def fim_token_ids(vocab: Mapping[str, int], family: Family) -> tuple[int, int, int]:
    """The prefix, suffix and middle ids of ``family`` in ``vocab`` (all present: ``detect_family`` said so)."""
    ids = tuple(first_id(vocab, names) for names in (family.prefix, family.suffix, family.middle))
    assert None not in ids, f"{family.name}: FIM token missing from the vocabulary"
    return ids  # type: ignore[return-value]
