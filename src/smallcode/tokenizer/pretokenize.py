"""Pre-tokenisation schemes: how text is cut into pieces before byte-level BPE merges them.

BPE never merges across a pre-token boundary, so the scheme decides which tokens can exist
(e.g. whether "newline + indentation" can become one token). Each scheme is a named regex;
:func:`build_pre_tokenizer` turns a name into a ``tokenizers`` pre-tokenizer. The schemes were
compared by ``benchmarks/tokenizer_compression.py --compare-pretokenizers`` (figures in docs/data.md);
``DEFAULT_SCHEME`` is the one that won. This module does not train anything.
"""

from __future__ import annotations

from typing import Literal, get_args

from tokenizers import Regex, pre_tokenizers

from smallcode.tokenizer.code_tokenizer import TokenizerError

Scheme = Literal["gpt2", "cl100k", "code_plain", "code"]
SCHEMES: tuple[str, ...] = get_args(Scheme)

# GPT-2's pattern: words/numbers/punctuation runs with an optional leading space; a whitespace
# run leaves its last space to the next word.
_GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# cl100k's pattern: numbers in groups of <= 3 digits, punctuation swallows following newlines.
_CL100K = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Ours, for code: a line break together with the next line's indentation is one piece, so
# "\n        " or "\r\n\t\t" can become a single token; an identifier (underscores and digits
# included) is one piece together with at most one preceding space or punctuation character
# (" foo", ".append", "(self", "_name"), so BPE learns attribute access and call openings but
# never glues two identifiers; numbers in groups of <= 3 digits with an optional leading space
# (" 1" is one token, as in "x = 1"; without the space it costs two); other operator runs with
# an optional leading space; spaces inside a line as in GPT-2.
_CODE = (
    r"""(?:\r?\n|\r)+[ \t]*"""
    r"""|[^\r\n\p{L}\p{N}_]?[\p{L}_][\p{L}\p{M}\p{N}_]*"""
    r"""| ?\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}_]+"""
    r"""|[ \t]+(?![^ \t\r\n])|[ \t]+"""
    r"""|\s+"""
)

# The same without the one-character prefix on identifiers (measured worse: see docs/data.md).
_CODE_PLAIN = (
    r"""(?:\r?\n|\r)+[ \t]*"""
    r"""| ?[\p{L}_][\p{L}\p{M}\p{N}_]*"""
    r"""| ?\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}_]+"""
    r"""|[ \t]+(?![^ \t\r\n])|[ \t]+"""
    r"""|\s+"""
)

PATTERNS: dict[str, str] = {"gpt2": _GPT2, "cl100k": _CL100K, "code_plain": _CODE_PLAIN, "code": _CODE}
DEFAULT_SCHEME: Scheme = "code"


def build_pre_tokenizer(scheme: str) -> pre_tokenizers.PreTokenizer:
    """The ``tokenizers`` pre-tokenizer for a scheme name: regex split, then bytes -> byte alphabet."""
    if scheme not in PATTERNS:
        raise TokenizerError(f"unknown pre-tokenisation scheme {scheme!r}; choose one of {list(SCHEMES)}")
    return pre_tokenizers.Sequence(
        [
            # "isolated": every match and every gap between matches is its own piece, so no
            # character is ever dropped whatever the pattern misses.
            pre_tokenizers.Split(Regex(PATTERNS[scheme]), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
