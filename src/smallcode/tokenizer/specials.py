"""The special tokens of the smallcode tokenizer, in id order.

They take ids 0..len(SPECIAL_TOKENS)-1 of every tokenizer we train, so a model's embedding row
for end-of-text or padding does not move when the vocabulary size changes. New tokens are only
ever appended, so the ids of the older ones keep their meaning; a token in ``OPTIONAL_TOKENS``
came later, and tokenizers trained before it still load (without it). This module holds names
only; how they are combined (FIM, chat, files as context) lives in
:mod:`smallcode.tokenizer.code_tokenizer`.
"""

from __future__ import annotations

EOT = "<|endoftext|>"
PAD = "<|pad|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
SYSTEM = "<|system|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
END_OF_TURN = "<|end|>"
# Opens one file of context before a FIM prompt: ``<|file_sep|>path\ntext``.
FILE_SEP = "<|file_sep|>"

SPECIAL_TOKENS: tuple[str, ...] = (
    EOT,
    PAD,
    FIM_PREFIX,
    FIM_MIDDLE,
    FIM_SUFFIX,
    SYSTEM,
    USER,
    ASSISTANT,
    END_OF_TURN,
    FILE_SEP,
)

# Appended after the first tokenizers were trained: a tokenizer may lack them.
OPTIONAL_TOKENS: frozenset[str] = frozenset({FILE_SEP})

# Chat role name -> the token that opens a turn of that role.
ROLE_TOKENS: dict[str, str] = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
