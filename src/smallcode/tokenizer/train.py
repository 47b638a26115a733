"""Training smallcode's byte-level BPE tokenizer with Hugging Face ``tokenizers``.

``train_tokenizer(corpus, vocab_size, out) -> Path`` reads the corpus (directories, globs,
files, JSONL; the embedded standard-library corpus when empty, without the modules held out for
the ``repo`` suite, see :mod:`smallcode.corpus`), skips binary and non-UTF-8 documents (counted,
and reported in ``train_report.json`` beside the tokenizer with the held-out files), trains BPE
over the pre-tokenisation scheme of :mod:`smallcode.tokenizer.pretokenize`, and saves
``tokenizer.json`` into ``out``; it returns that file's path. The special tokens of
:mod:`smallcode.tokenizer.specials` take the first ids, then the 256 byte tokens, then merges.

It does not deduplicate, decontaminate or filter generated files: that is the data pipeline's
job, and the tokenizer only needs representative text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence, Set
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from smallcode.corpus import EMBEDDED_LABEL, discover, iter_raw_documents
from smallcode.fileio import atomic_write_text
from smallcode.tokenizer import specials
from smallcode.tokenizer.code_tokenizer import TOKENIZER_FILE, CodeTokenizer, TokenizerError
from smallcode.tokenizer.pretokenize import DEFAULT_SCHEME, build_pre_tokenizer

MIN_VOCAB = len(specials.SPECIAL_TOKENS) + 256


def build_untrained(scheme: str = DEFAULT_SCHEME) -> Tokenizer:
    """An empty BPE tokenizer with our pre-tokenizer and a byte-level decoder."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = build_pre_tokenizer(scheme)
    tok.decoder = decoders.ByteLevel()
    return tok


# Fractions of documents shown to the trainer in another formatting style. The embedded corpus
# is uniformly LF-terminated and 4-space indented, but code in the wild (MBPP, Windows projects,
# Go/Makefiles, 2-space styles) is not; without these the vocabulary has no CRLF or tab tokens.
STYLE_RATES: dict[str, float] = {"crlf": 0.15, "tabs": 0.10, "two_spaces": 0.10}


def _reindent(text: str, unit: str) -> str:
    lines = text.split("\n")
    for i, line in enumerate(lines):
        n = len(line) - len(line.lstrip(" "))
        if n and n % 4 == 0:
            lines[i] = unit * (n // 4) + line[n:]
    return "\n".join(lines)


def restyle(text: str, rates: dict[str, float] = STYLE_RATES) -> str:
    """Deterministically (by content hash) re-indent and/or CRLF-terminate a fraction of documents."""
    h = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    # Independent draws from different bytes of the hash, each uniform in [0, 1).
    u_crlf, u_indent = h[0] / 256, int.from_bytes(h[1:3], "big") / 65536
    if u_indent < rates.get("tabs", 0.0):
        text = _reindent(text, "\t")
    elif u_indent < rates.get("tabs", 0.0) + rates.get("two_spaces", 0.0):
        text = _reindent(text, "  ")
    if u_crlf < rates.get("crlf", 0.0):
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    return text


def iter_corpus_texts(
    corpus: Sequence[str | Path] | None,
    counts: dict[str, int] | None = None,
    extensions: Sequence[str] = (".py",),
    held_out_modules: Set[str] | None = None,
) -> Iterator[str]:
    """Decoded documents of a corpus; binary and non-UTF-8 ones are counted in ``counts`` and skipped.

    ``held_out_modules`` is :func:`smallcode.corpus.discover`'s (the embedded corpus only); the
    number of files it left out is ``counts["held_out"]``.
    """
    counts = counts if counts is not None else {}
    for key in ("documents", "bytes", "binary", "non_utf8", "held_out"):
        counts.setdefault(key, 0)
    found = discover(corpus, extensions, held_out_modules)
    counts["held_out"] += len(found.held_out)
    for doc in iter_raw_documents(found.files):
        if b"\x00" in doc.data:
            counts["binary"] += 1
            continue
        try:
            text = doc.data.decode("utf-8")
        except UnicodeDecodeError:
            counts["non_utf8"] += 1
            continue
        counts["documents"] += 1
        counts["bytes"] += len(doc.data)
        yield text


def train_tokenizer(
    corpus: Sequence[str | Path] | None,
    vocab_size: int,
    out: str | Path,
    scheme: str = DEFAULT_SCHEME,
    min_frequency: int = 2,
    show_progress: bool = True,
    restyle_rates: dict[str, float] | None = None,
    max_token_length: int | None = None,
    held_out_modules: Set[str] | None = None,
) -> Path:
    """Train on ``corpus`` (None or empty: the embedded corpus) and save into directory ``out``.

    ``held_out_modules``: modules left out of the embedded corpus (None: the ``repo`` suite's,
    an empty set: none); explicit corpora are taken as given.
    """
    if vocab_size < MIN_VOCAB:
        raise TokenizerError(f"vocab_size {vocab_size} too small: specials and bytes alone need {MIN_VOCAB}")
    tok = build_untrained(scheme)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(specials.SPECIAL_TOKENS),
        # All 256 bytes from the start, so any input (even bytes unseen in training) encodes.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=show_progress,
        max_token_length=max_token_length,
    )
    counts: dict[str, int] = {}
    rates = STYLE_RATES if restyle_rates is None else restyle_rates
    texts = (restyle(t, rates) for t in iter_corpus_texts(corpus, counts, held_out_modules=held_out_modules))
    tok.train_from_iterator(texts, trainer=trainer)
    if counts["documents"] == 0:
        raise TokenizerError("the corpus holds no UTF-8 text document; nothing to train on")
    code_tok = CodeTokenizer(tok, source=str(out))
    out = Path(out)
    path = code_tok.save(out)
    report = {
        "vocab_size": code_tok.vocab_size,
        "requested_vocab_size": vocab_size,
        "scheme": scheme,
        "restyle_rates": rates,
        "hash": code_tok.hash,
        "corpus": [str(c) for c in corpus] if corpus else [EMBEDDED_LABEL],
        **counts,
    }
    atomic_write_text(out / "train_report.json", json.dumps(report, indent=2) + "\n")
    assert path.name == TOKENIZER_FILE
    return path
