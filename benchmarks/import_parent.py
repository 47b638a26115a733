"""The stand-in for a checkpoint a user brings: a small dense Qwen2 trained by transformers itself.

``benchmarks/import_recipe.py`` needs an open dense code model to import, and none can be
downloaded here. This script makes one the way its authors would have: a byte-level BPE with
Qwen2.5-Coder's special tokens (``<|endoftext|>``, the FIM tokens, ``<|file_sep|>``, ChatML's
``<|im_start|>``/``<|im_end|>``) saved as a ``PreTrainedTokenizerFast``, and a ``Qwen2ForCausalLM``
(full attention, tied embeddings, biases on q/k/v) trained with a plain AdamW loop on the embedded
corpus, 10% of its documents turned into prefix-suffix-middle FIM examples as Qwen's are, then
``save_pretrained`` (sharded). Nothing of smallcode's model code is used to train it.

Every step is skipped when its output exists; an interrupted training continues from its last
saved state. ``--minutes`` bounds the training wall time.

    python benchmarks/import_parent.py --out runs/import_bench/parent --minutes 8
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from smallcode.corpus import default_held_out_modules, held_out_files, python_files, stdlib_root
from smallcode.fileio import atomic_dir, atomic_write_json

SPECIALS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
            "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer pattern (contractions, letter runs, single digits, punctuation runs, newlines,
# spaces), from its published tokenizer.json.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def corpus_texts(limit_bytes: int, seed: int = 0) -> list[str]:
    """Standard-library sources (the held-out modules left out), shuffled, up to ``limit_bytes``."""
    root = stdlib_root()
    held = held_out_files(root, default_held_out_modules())
    files = [p for p in python_files(root) if p not in held]
    random.Random(seed).shuffle(files)
    texts, total = [], 0
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        total += len(text)
        if total >= limit_bytes:
            break
    return texts


def build_tokenizer(out: Path, vocab_size: int, texts: list[str]) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (out / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(out)
    tok = Tokenizer(models.BPE())
    # Qwen2's pipeline, as its tokenizer.json spells it: NFC, its split pattern, then bytes. transformers 5
    # rebuilds a qwen2 directory's tokenizer with exactly this (Qwen2Tokenizer), so AutoTokenizer on the
    # saved parent encodes as the parent was trained.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=True,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIALS[1:], chat_template=CHATML)
    fast.save_pretrained(out)
    return fast


def fim_document(ids_text: str, tok: Any, rng: random.Random) -> list[int]:
    """A document as Qwen2.5-Coder's FIM training lays it out (prefix-suffix-middle), split at two
    random character positions."""
    a, b = sorted(rng.randrange(len(ids_text) + 1) for _ in range(2))
    pre, mid, suf = ids_text[:a], ids_text[a:b], ids_text[b:]
    v = tok.convert_tokens_to_ids
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    return [v("<|fim_prefix|>"), *enc(pre), v("<|fim_suffix|>"), *enc(suf), v("<|fim_middle|>"), *enc(mid)]


def token_stream(tok: Any, texts: list[str], fim_rate: float, seed: int) -> torch.Tensor:
    rng = random.Random(seed)
    eos = tok.eos_token_id
    out: list[int] = []
    for text in tqdm(texts, desc="tokenising", unit="doc"):
        if rng.random() < fim_rate and len(text) > 2:
            out += [*fim_document(text, tok, rng), eos]
        else:
            out += [*tok.encode(text, add_special_tokens=False), eos]
    return torch.tensor(out, dtype=torch.long)


def model_config(vocab_size: int, context: int) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab_size, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                       rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
                       attention_dropout=0.0, bos_token_id=None)


def train(out: Path, minutes: float, seq_len: int, batch: int, lr: float, vocab_size: int, context: int,
          corpus_bytes: int, fim_rate: float) -> Path:
    """Tokenizer, stream, model: trained for ``minutes`` of steps and saved to ``out/model``."""
    from transformers import Qwen2ForCausalLM

    final = out / "model"
    if (final / "config.json").is_file():
        return final
    out.mkdir(parents=True, exist_ok=True)
    texts = corpus_texts(corpus_bytes)
    tok = build_tokenizer(out / "tokenizer", vocab_size, texts[: max(1, len(texts) // 2)])
    stream_file = out / "stream.pt"
    if not stream_file.is_file():
        torch.save(token_stream(tok, texts, fim_rate, seed=1), stream_file)
    stream = torch.load(stream_file)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(model_config(len(tok), context))
    model.config.eos_token_id = tok.eos_token_id
    model.config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    state_file = out / "train_state.pt"
    step, spent = 0, 0.0
    if state_file.is_file():
        state = torch.load(state_file)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, spent = state["step"], state["spent"]
    budget = minutes * 60
    n_rows = (len(stream) - 1) // seq_len
    gen = torch.Generator().manual_seed(step)
    model.train()
    bar = tqdm(total=int(budget), initial=int(spent), desc="training the parent", unit="s")
    last_save = time.perf_counter()
    while spent < budget:
        t0 = time.perf_counter()
        rows = torch.randint(0, n_rows, (batch,), generator=gen)
        x = torch.stack([stream[r * seq_len: r * seq_len + seq_len + 1] for r in rows.tolist()])
        warm = min(1.0, (step + 1) / 30)
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, spent / budget)))
        for g in opt.param_groups:
            g["lr"] = lr * warm * decay
        logits = model(input_ids=x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        dt = time.perf_counter() - t0
        spent += dt
        bar.update(int(spent) - bar.n)
        bar.set_postfix(step=step, loss=f"{loss.item():.3f}")
        if time.perf_counter() - last_save > 60:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "spent": spent},
                       state_file)
            last_save = time.perf_counter()
    bar.close()
    # kept, so a later run with more --minutes (and model/ removed) trains on from here
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "spent": spent}, state_file)
    model.eval()
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp, max_shard_size="8MB")  # sharded, as real checkpoints are
        tok.save_pretrained(tmp)
    atomic_write_json(out / "parent.json", {"steps": step, "train_s": round(spent, 1), "seq_len": seq_len,
                                            "batch": batch, "tokens": step * batch * seq_len,
                                            "params": sum(p.numel() for p in model.parameters())})
    return final


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/import_bench/parent")
    p.add_argument("--minutes", type=float, default=8.0)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--context", type=int, default=32768, help="max_position_embeddings of the saved model")
    p.add_argument("--corpus-mb", type=float, default=12.0)
    p.add_argument("--fim-rate", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    final = train(Path(args.out), args.minutes, args.seq_len, args.batch, args.lr, args.vocab_size, args.context,
                  int(args.corpus_mb * 1e6), args.fim_rate)
    print(json.dumps({"parent": str(final), **json.loads((Path(args.out) / "parent.json").read_text())}))


if __name__ == "__main__":
    main()
