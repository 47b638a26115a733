"""smallcode's code tokenizer: byte-level BPE trained for code, with FIM and chat formatting.

Public interface: :func:`train_tokenizer`, :func:`load_tokenizer`, :class:`CodeTokenizer` (see
:mod:`smallcode.tokenizer.code_tokenizer` for its methods), the special-token names of
:mod:`smallcode.tokenizer.specials`, and :func:`compression_stats`. Nothing here reads token
shards; that is :mod:`smallcode.data`.
"""

from smallcode.tokenizer.code_tokenizer import (
    CodeTokenizer,
    TokenizerError,
    canonical_hash,
    check_messages,
    load_tokenizer,
)
from smallcode.tokenizer.stats import compression_stats
from smallcode.tokenizer.train import train_tokenizer

__all__ = [
    "CodeTokenizer",
    "TokenizerError",
    "canonical_hash",
    "check_messages",
    "compression_stats",
    "load_tokenizer",
    "train_tokenizer",
]
