"""Bits per byte on held-out third-party Python: the one quality figure every training stage reports.

The recipe trains on the standard library's sources, so the held-out set is the Python of packages
that are *not* the standard library and that every installation of smallcode has anyway: smallcode's
own core dependencies and theirs (``HELD_OUT_PACKAGES``, a pinned list). No tokenizer or model of
ours is trained on them. From each package a fixed sample of whole files is taken (files ordered by
a hash of their path inside the package, then taken until the package's byte budget is spent), so the
set is the same on every machine with the same package versions; ``HeldOutSet.fingerprint`` names
the versions and a digest of the text, and the report prints it so two figures can be compared.

The packages are split in two fixed halves (``SPLITS``): settings are chosen on the **tuning** half
(``split="tune"``) and figures are reported on the other (``split="report"``), so a reported figure
was not what the settings were chosen by. The split is a pinned list, not a hash, so that the halves
are of similar size and kind: a template engine, a version parser, a terminal renderer and a YAML
parser are reported; a CLI toolkit, a Markdown parser and a progress bar tune. ``split="all"`` (the
default) is the whole set, as before the split.

Bits per byte (``bits_per_byte``) divides the model's summed negative log-likelihood, in bits, by the
UTF-8 bytes of the text it scored, so models with different tokenizers are compared fairly. Every
file is scored as the training data is laid out: its tokens followed by the end-of-text token, cut
into non-overlapping rows of ``context`` tokens.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from smallcode.corpus import python_files
from smallcode.errors import UserError

if TYPE_CHECKING:
    from smallcode.model import SmallCodeLM
    from smallcode.tokenizer import CodeTokenizer

# import name -> distribution name (for its version); all installed with smallcode's core dependencies
HELD_OUT_PACKAGES: dict[str, str] = {
    "click": "click",
    "jinja2": "Jinja2",
    "markdown_it": "markdown-it-py",
    "packaging": "packaging",
    "rich": "rich",
    "tqdm": "tqdm",
    "yaml": "PyYAML",
}
TUNE_PACKAGES: tuple[str, ...] = ("click", "markdown_it", "tqdm")
"""The tuning half: settings are chosen on these."""
REPORT_PACKAGES: tuple[str, ...] = ("jinja2", "packaging", "rich", "yaml")
"""The reporting half: the figures a report quotes."""
SPLITS: dict[str, tuple[str, ...]] = {"all": tuple(HELD_OUT_PACKAGES), "tune": TUNE_PACKAGES,
                                      "report": REPORT_PACKAGES}
BYTES_PER_PACKAGE = 24_000
EVAL_CONTEXT = 256


class HeldOutError(UserError, RuntimeError):
    """A package of the held-out list is not installed (the message says what to install), or an
    unknown split was asked for."""


@dataclass(frozen=True)
class HeldOutSet:
    names: tuple[str, ...]
    """``package/relative/path.py`` of each file."""
    texts: tuple[str, ...]
    versions: dict[str, str]

    @property
    def n_bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for t in self.texts)

    @property
    def fingerprint(self) -> str:
        """Package versions and a digest of the sampled text: equal fingerprints, comparable figures."""
        digest = hashlib.sha256("\0".join(self.texts).encode("utf-8")).hexdigest()[:12]
        pins = ",".join(f"{k}=={v}" for k, v in sorted(self.versions.items()))
        return f"{len(self.texts)} files, {self.n_bytes} bytes, sha256 {digest} ({pins})"


def split_packages(split: str) -> tuple[str, ...]:
    """The packages of ``split`` ("all", "tune" or "report"); ``HeldOutError`` for another name."""
    if split not in SPLITS:
        raise HeldOutError(f"unknown held-out split {split!r}: one of {', '.join(SPLITS)}")
    return SPLITS[split]


def held_out_set(packages: Sequence[str] | dict[str, str] = tuple(HELD_OUT_PACKAGES),
                 bytes_per_package: int | None = BYTES_PER_PACKAGE, split: str = "all") -> HeldOutSet:
    """The sampled files of ``packages`` (import names) that belong to ``split`` ("all", "tune" or
    "report"; see ``SPLITS``); ``bytes_per_package=None`` takes every file."""
    names, texts, versions = [], [], {}
    in_split = split_packages(split)
    for pkg in packages:
        if pkg in HELD_OUT_PACKAGES and pkg not in in_split:
            continue
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            raise HeldOutError(f"held-out package {pkg!r} is not installed (it comes with smallcode's "
                               "dependencies: reinstall with pip install -e .)")
        root = Path(next(iter(spec.submodule_search_locations)))
        dist = HELD_OUT_PACKAGES.get(pkg, pkg)
        try:
            versions[pkg] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "?"
        files = sorted(python_files(root), key=lambda p: hashlib.sha256(p.relative_to(root).as_posix().encode())
                       .hexdigest())
        spent = 0
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            size = len(text.encode("utf-8"))
            if not text.strip() or (bytes_per_package is not None and spent and spent + size > bytes_per_package):
                continue
            names.append(f"{pkg}/{path.relative_to(root).as_posix()}")
            texts.append(text)
            spent += size
            if bytes_per_package is not None and spent >= bytes_per_package:
                break
    return HeldOutSet(tuple(names), tuple(texts), versions)


@dataclass(frozen=True)
class BitsPerByte:
    bits_per_byte: float
    nats_per_token: float
    tokens: int
    bytes: int


def bits_per_byte(model: SmallCodeLM, tokenizer: CodeTokenizer, texts: Sequence[str],
                  context: int = EVAL_CONTEXT, batch_size: int = 16) -> BitsPerByte:
    """Summed next-token negative log-likelihood of ``texts`` in bits, over their UTF-8 bytes."""
    import torch
    import torch.nn.functional as F

    stream: list[int] = []
    for ids in tokenizer.encode_batch(list(texts)):
        stream += [*ids, tokenizer.eot_id]
    # rows of context + 1 tokens overlapping by one, so every token but the first is predicted once
    rows = [stream[s: s + context + 1] for s in range(0, len(stream) - 1, context)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total_nats, count = 0.0, 0
    try:
        with torch.no_grad():
            for b in range(0, len(rows), batch_size):
                chunk = rows[b: b + batch_size]
                width = max(len(r) for r in chunk)
                ids = torch.full((len(chunk), width), tokenizer.pad_id, dtype=torch.long)
                labels = torch.full((len(chunk), width - 1), -100, dtype=torch.long)
                for i, r in enumerate(chunk):
                    ids[i, : len(r)] = torch.tensor(r)
                    labels[i, : len(r) - 1] = torch.tensor(r[1:])
                ids, labels = ids.to(device), labels.to(device)
                logits = model(ids[:, :-1]).logits.float()
                total_nats += float(F.cross_entropy(logits.flatten(0, 1), labels.reshape(-1), ignore_index=-100,
                                                    reduction="sum"))
                count += int((labels != -100).sum())
    finally:
        model.train(was_training)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return BitsPerByte(total_nats / math.log(2) / max(1, n_bytes), total_nats / max(1, count), count, n_bytes)
