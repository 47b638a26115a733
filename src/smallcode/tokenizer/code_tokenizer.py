"""``CodeTokenizer``: the loaded smallcode tokenizer, with FIM and chat formatting.

Interface (other subpackages rely on it):

* ``load_tokenizer(path) -> CodeTokenizer``: ``path`` is a directory holding ``tokenizer.json``
  (e.g. a model checkpoint directory) or the file itself.
* ``encode(str) -> list[int]``, ``encode_batch(list[str])``, ``decode(list[int]) -> str``;
  ``decode(encode(x)) == x`` for every string. ``encode`` treats its input as *plain text*: a
  literal ``<|endoftext|>`` inside a source file becomes ordinary tokens, never the special id.
  Special ids enter a sequence only through the formatting helpers below. (A transformers
  tokenizer built from the same file keeps transformers' default and does match them in text;
  tokenise training data with this class.)
* ``stop_ids``: the ids that end a generation (end-of-text, and ``<|end|>`` closing a chat turn).
* ``vocab_size``, ``eot_id``, ``pad_id``, ``fim_prefix_id``, ``fim_middle_id``, ``fim_suffix_id``,
  ``file_sep_id`` (None for tokenizers trained before ``<|file_sep|>`` existed: they still load).
* ``hash``: sha256 of the canonical JSON (sorted keys, compact) of ``tokenizer.json``; token
  shards record it so data tokenised with another tokenizer is refused.
* ``save(dir)``: writes ``tokenizer.json`` (loadable by ``tokenizers.Tokenizer.from_file`` and
  ``transformers.PreTrainedTokenizerFast``) and a ``tokenizer_config.json`` naming the special
  tokens and the chat template, each atomically.
* ``fim_ids`` / ``fim_prompt``: prefix-suffix-middle ("psm") and suffix-prefix-middle ("spm")
  layouts, optionally after other files as context (``context_ids``); ``chat_ids``: role-tagged
  turns.
* ``context_ids(files)``: other files laid out before a FIM prompt, each as
  ``<|file_sep|>path\ntext``. A tokenizer without ``<|file_sep|>`` lays them out as plain text
  instead, each file opened by a comment line naming it (``# path``, ``// path``, ... by the
  file's extension) and ended by a newline; the model then reads them as ordinary code.

A *foreign* tokenizer (a Hugging Face model's ``tokenizer.json`` with its ``tokenizer_config.json``
beside it, as an imported checkpoint carries it) loads as a ``CodeTokenizer`` too, with ``native``
False: ``eot_id`` is its end-of-sequence token; ``pad_id`` its pad token when that differs from
end-of-sequence, else its family's pad (``families.Family.pad``, then ``families.PAD_TOKENS``), else
reading it raises ``TokenizerError`` (such a model serves, but training cannot pad for it); the FIM
ids and ``file_sep_id`` are its family's (``families.detect_family``), None when it has none, and then
``fim_ids`` / ``fim_prompt`` raise ``TokenizerError``; it has no chat roles (``chat_ids`` raises: the
model's own chat template lays chats out); ``stop_ids`` are end-of-sequence, the generation config's
end tokens and the family's stops. Its FIM and context layouts are the family's, as
``smallcode.runtime.formats`` serves them (prefix-suffix-middle; files as ``<file_sep>`` blocks with
one more separator opening the current file, or as plain text at the start of the prefix), so a model
trained on them is asked the way it learned. ``encode`` adds no begin-of-sequence token and matches no
special token in text, as ours. ``sidecars`` holds the Hugging Face files read beside it
(``SIDECAR_FILES``), which ``save`` and the data pipeline write back unchanged.

It does not train (see :mod:`smallcode.tokenizer.train`) and does not know about shards.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer

from smallcode.errors import UserError
from smallcode.fileio import atomic_write_text
from smallcode.tokenizer import specials
from smallcode.tokenizer.families import PAD_TOKENS, Family, detect_family, fim_token_ids, first_id

FimMode = Literal["psm", "spm"]
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SIDECAR_FILES: tuple[str, ...] = ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
                                   "chat_template.jinja", "chat_template.json")
"""The Hugging Face files a model's tokenizer comes with beside ``tokenizer.json`` (its special tokens,
its generation's end tokens, its chat template: transformers 5 saves that in a file of its own, some
earlier versions in a JSON one); a foreign tokenizer is read with them."""
HASH_KEY = "smallcode_tokenizer_hash"
"""The ``tokenizer_config.json`` field holding ``hash``: it marks the tokenizer as ours, for
``runtime.formats`` to lay a transformers-loaded copy's prompts out as ours."""

# Jinja template equivalent to ``chat_ids`` so transformers' apply_chat_template agrees with us.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


class TokenizerError(UserError, ValueError):
    """A tokenizer file that cannot be used, or one that cannot be trained as asked; the message says which."""


def canonical_hash(tokenizer_json: str) -> str:
    """sha256 of a tokenizer.json's content, independent of key order and whitespace."""
    obj = json.loads(tokenizer_json)
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


class CodeTokenizer:
    """A byte-level BPE tokenizer with smallcode's special tokens (see module docstring)."""

    def __init__(self, tokenizer: Tokenizer, source: str = "<memory>",
                 sidecars: dict[str, str] | None = None) -> None:
        """``sidecars``: the Hugging Face files found beside the tokenizer (name -> text, see
        ``SIDECAR_FILES``); a ``tokenizer_config.json`` among them that is not ours makes this a
        foreign tokenizer (see the module docstring)."""
        self._tok = tokenizer
        self.source = source
        self.sidecars: dict[str, str] = dict(sidecars or {})
        vocab: dict[str, int] = tokenizer.get_vocab(with_added_tokens=True)
        config = _sidecar_json(self.sidecars, CONFIG_FILE, source)
        self.native: bool = not config or bool(config.get(HASH_KEY)) or _has_our_specials(vocab)
        """Whether this is a smallcode tokenizer (else a Hugging Face model's own)."""
        self.family: str = "smallcode"
        """Whose special tokens these are: ``smallcode``, a ``families.FAMILIES`` name, or ``plain``."""
        self._dummy_space = False
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        # Computed before the runtime flag below, which is not part of the file anyway.
        self.hash: str = canonical_hash(tokenizer.to_str())
        self._pad_id: int | None = None
        self._no_pad = ""
        self.fim_prefix_id: int | None
        self.fim_middle_id: int | None
        self.fim_suffix_id: int | None
        self.end_of_turn_id: int | None
        if self.native:
            self._init_ours(tokenizer, source)
            self.sidecars = {}  # ours writes its own config (``save``)
        else:
            self._init_foreign(vocab, config)
        # Plain text never yields special ids: the added-token matcher is switched off for
        # encode(); formatting helpers insert special ids explicitly.
        self._tok.encode_special_tokens = True

    def _init_ours(self, tokenizer: Tokenizer, source: str) -> None:
        ids: dict[str, int] = {}
        for name in specials.SPECIAL_TOKENS:
            tid = tokenizer.token_to_id(name)
            if tid is None:
                if name in specials.OPTIONAL_TOKENS:  # a tokenizer trained before this token existed
                    continue
                raise TokenizerError(f"{source}: not a smallcode tokenizer (special token {name} missing; a "
                                     f"Hugging Face model's {TOKENIZER_FILE} needs its {CONFIG_FILE} beside it)")
            ids[name] = tid
        self.special_ids: dict[str, int] = ids
        self.eot_id: int = ids[specials.EOT]
        self._pad_id = ids[specials.PAD]
        self.fim_prefix_id = ids[specials.FIM_PREFIX]
        self.fim_middle_id = ids[specials.FIM_MIDDLE]
        self.fim_suffix_id = ids[specials.FIM_SUFFIX]
        self.end_of_turn_id = ids[specials.END_OF_TURN]
        # End-of-text closes a document; <|end|> closes an assistant turn (how SFT teaches chat, and
        # no document holds it): either ends a generation.
        self.stop_ids: tuple[int, ...] = (self.eot_id, self.end_of_turn_id)
        self.file_sep_id: int | None = ids.get(specials.FILE_SEP)
        self.role_ids: dict[str, int] = {role: ids[tok] for role, tok in specials.ROLE_TOKENS.items()}

    def _init_foreign(self, vocab: dict[str, int], config: dict[str, Any]) -> None:
        source = self.source
        special_map = _sidecar_json(self.sidecars, "special_tokens_map.json", source)
        family: Family | None = detect_family(vocab)
        self.family = family.name if family else "plain"

        def named(key: str) -> str | None:
            value = config.get(key, special_map.get(key))
            return value.get("content") if isinstance(value, dict) else value

        eos = named("eos_token")
        if not eos or eos not in vocab:
            raise TokenizerError(f"{source}: the tokenizer names no end-of-sequence token in its vocabulary "
                                 f"(eos_token {eos!r} in {CONFIG_FILE}): nothing would end a document")
        self.eot_id = vocab[eos]
        pad = named("pad_token")
        if pad and pad != eos and pad in vocab:
            self._pad_id = vocab[pad]
        else:
            # A pad equal to end-of-sequence would mask every document's end in the loss.
            self._pad_id = first_id(vocab, [*(family.pad if family else ()), *PAD_TOKENS])
            if self._pad_id is None:  # serving needs none; training asks for it (``pad_id``) and is refused
                self._no_pad = (f"{source}: no pad token distinct from end-of-sequence {eos!r} (pad_token {pad!r}, "
                                f"and none of {', '.join(PAD_TOKENS)} in the vocabulary); set pad_token in "
                                f"{CONFIG_FILE} to a token no text holds")
        self.fim_prefix_id = self.fim_suffix_id = self.fim_middle_id = None
        self.file_sep_id = None
        stops = [self.eot_id, *_generation_eos(self.sidecars, source)]
        if family is not None:
            self.fim_prefix_id, self.fim_suffix_id, self.fim_middle_id = fim_token_ids(vocab, family)
            self.file_sep_id = first_id(vocab, family.file_sep)
            stops += [vocab[t] for t in family.stops if t in vocab]
        self.stop_ids = tuple(dict.fromkeys(stops))
        self.end_of_turn_id = None
        self.role_ids = {}
        names = {"eos": self.eot_id, "pad": self._pad_id, "fim_prefix": self.fim_prefix_id,
                 "fim_suffix": self.fim_suffix_id, "fim_middle": self.fim_middle_id, "file_sep": self.file_sep_id}
        self.special_ids = {k: v for k, v in names.items() if v is not None}
        # A SentencePiece tokenizer with a dummy prefix invents a space before every piece it encodes
        # ("a" -> "▁a"); text that continues a line (the suffix, the middle) must not get one.
        first = self._tok.encode("a", add_special_tokens=False).tokens[:1]
        self._dummy_space = bool(first) and first[0].startswith("▁")

    @property
    def pad_id(self) -> int:
        """The id that pads training rows (masked in the loss). A foreign tokenizer with no pad token
        distinct from end-of-sequence raises ``TokenizerError`` here: it serves, but cannot pad."""
        if self._pad_id is None:
            raise TokenizerError(self._no_pad)
        return self._pad_id

    @property
    def pad_id_or_none(self) -> int | None:
        """``pad_id``, or None for a foreign tokenizer that has no pad token (what an export writes)."""
        return self._pad_id

    # -- plain text ---------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts at once; the Rust side spreads them over all cores."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self._tok.decode_batch([list(x) for x in batch], skip_special_tokens=False)

    def token_count(self, text: str) -> int:
        return len(self.encode(text))

    # -- formatting ---------------------------------------------------------------------------
    def fim_ids(self, prefix: str, middle: str, suffix: str, mode: FimMode = "psm",
                files: Sequence[tuple[str, str]] = ()) -> list[int]:
        """A training example in fill-in-the-middle form (no trailing end-of-text).

        psm: ``<pre> prefix <suf> suffix <mid> middle``;
        spm: ``<pre> <suf> suffix <mid> prefix middle`` (the prefix continues straight into the
        middle, so generation after the prompt is ordinary left-to-right text). ``files``
        ((path, text) pairs) come first, laid out by ``context_ids`` (a foreign tokenizer without a
        file separator: as plain text at the start of the prefix, as its family is served).
        """
        if mode not in ("psm", "spm"):
            raise ValueError(f"unknown FIM mode {mode!r}; choose 'psm' or 'spm'")
        pre, suf, mid = self.fim_prefix_id, self.fim_suffix_id, self.fim_middle_id
        if pre is None or suf is None or mid is None:
            raise TokenizerError(f"{self.source}: this model has no fill-in-the-middle tokens (its vocabulary "
                                 "has none of a known family's); use plain prompts, or fim_rate 0 in training")
        head: list[int] = []
        if files and (self.native or self.file_sep_id is not None):
            head = self.context_ids(files)
        elif files:
            prefix = "".join(plain_file_block(path, text) for path, text in files) + prefix
        if self._dummy_space:
            p, m, s = self.encode(prefix), encode_inside(self.encode, middle), encode_inside(self.encode, suffix)
        else:
            p, m, s = self.encode_batch([prefix, middle, suffix])
        if mode == "psm":
            return [*head, pre, *p, suf, *s, mid, *m]
        return [*head, pre, suf, *s, mid, *p, *m]

    def fim_prompt(self, prefix: str, suffix: str, mode: FimMode = "psm",
                   files: Sequence[tuple[str, str]] = ()) -> list[int]:
        """The prompt asking a model for the middle between ``prefix`` and ``suffix``."""
        return self.fim_ids(prefix, "", suffix, mode, files)

    def context_ids(self, files: Sequence[tuple[str, str]]) -> list[int]:
        """Other files as context before a FIM prompt (see the module docstring for both layouts).
        A foreign tokenizer's blocks end with one more separator, which opens the current file (its
        family's repository layout)."""
        if self.file_sep_id is None:
            return self.encode("".join(plain_file_block(path, text) for path, text in files))
        out: list[int] = []
        for ids in self.encode_batch([f"{path}\n{text}" for path, text in files]):
            out += [self.file_sep_id, *ids]
        if not self.native and files:
            out.append(self.file_sep_id)
        return out

    def chat_ids(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:
        """``<|role|> content <|end|>`` per message; optionally open an assistant turn at the end."""
        if not self.native or self.end_of_turn_id is None:
            raise TokenizerError(f"{self.source}: a Hugging Face model's tokenizer has no smallcode chat roles; "
                                 "lay chats out with the model's chat template")
        out: list[int] = []
        for i, msg in enumerate(messages):
            role = msg.get("role")
            if role not in self.role_ids:
                raise ValueError(f"message {i}: role {role!r} is not one of {sorted(self.role_ids)}")
            content = msg.get("content")
            if not isinstance(content, str):
                raise ValueError(f"message {i}: content must be a string")
            out += [self.role_ids[role], *self.encode(content), self.end_of_turn_id]
        if add_generation_prompt:
            out.append(self.role_ids["assistant"])
        return out

    # -- files --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return self._tok.to_str(pretty=True)

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` into ``directory``; return the first."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / TOKENIZER_FILE
        atomic_write_text(path, self.to_json())
        if not self.native:  # a model's own files, as they came
            for name, text in self.sidecars.items():
                atomic_write_text(directory / name, text)
            return path
        atomic_write_text(directory / CONFIG_FILE, json.dumps(self.hf_config(), indent=2) + "\n")
        return path

    def hf_config(self) -> dict[str, Any]:
        """The ``tokenizer_config.json`` that makes transformers know our special tokens (a foreign
        tokenizer's: its own)."""
        if not self.native:
            return _sidecar_json(self.sidecars, CONFIG_FILE, self.source)
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": specials.EOT,
            "bos_token": None,
            "pad_token": specials.PAD,
            "unk_token": None,
            "additional_special_tokens": [
                t for t in self.special_ids if t not in (specials.EOT, specials.PAD)
            ],
            "chat_template": CHAT_TEMPLATE,
            "model_max_length": 1_000_000_000,
            "clean_up_tokenization_spaces": False,
            HASH_KEY: self.hash,
        }

    @property
    def backend(self) -> Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (its special-token matching is switched off)."""
        return self._tok


# Line-comment markers by file extension, for the plain-text layout of context files.
_COMMENT_MARKERS: dict[str, str] = {
    **dict.fromkeys(("c", "h", "cc", "cpp", "hpp", "cs", "java", "js", "jsx", "ts", "tsx", "go", "rs", "swift",
                     "kt", "kts", "scala", "php", "dart", "zig", "proto"), "//"),
    **dict.fromkeys(("sql", "lua", "hs", "elm"), "--"),
    **dict.fromkeys(("lisp", "clj", "el", "scm"), ";;"),
    **dict.fromkeys(("tex", "erl", "m"), "%"),
}


def plain_file_block(path: str, text: str) -> str:
    """One context file as plain text: a comment line naming it (``#`` unless the extension says
    otherwise), the text, and a newline if the text does not end with one."""
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    marker = _COMMENT_MARKERS.get(ext, "#")
    return f"{marker} {path}\n{text}" + ("" if text.endswith("\n") else "\n")


def check_messages(messages: Any) -> list[dict[str, str]]:
    """``messages`` (a chat: a non-empty list of role/content objects, roles those ``chat_ids`` lays
    out) as plain dicts, or a ValueError naming the first bad message. The server's chat route and
    the fine-tuning data both check chats with it."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list")
    roles = list(specials.ROLE_TOKENS)
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ValueError(f"message {i} is not an object with 'role' and 'content'")
        if m.get("role") not in roles:
            raise ValueError(f"message {i} has role {m.get('role')!r}; allowed roles: {roles}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} content must be a string")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def encode_inside(encode: Callable[[str], list[int]], text: str) -> list[int]:
    """``text`` as ``encode`` gives it in the middle of a line: without the space a SentencePiece
    tokenizer with a dummy prefix invents before every piece it encodes ("▁a" for "a"). Encoded after a
    marker whose own tokens are then dropped (as Meta's codellama code does); the training FIM layout
    (``CodeTokenizer.fim_ids``) and the served one (``runtime.formats``) both use it."""
    if not text:
        return []
    head, ids = encode("☺"), encode("☺" + text)
    return ids[len(head):] if ids[: len(head)] == head else encode(text)


def _sidecar_json(sidecars: dict[str, str], name: str, source: str) -> dict[str, Any]:
    text = sidecars.get(name)
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise TokenizerError(f"{source}: {name} beside it is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise TokenizerError(f"{source}: {name} beside it is not a JSON object")
    return value


def eos_id_list(value: Any) -> list[int]:
    """A config's ``eos_token_id`` (an id, a list of ids, or nothing) as a list of ids."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return [e for e in value if isinstance(e, int) and not isinstance(e, bool)] if isinstance(value, list) else []


def _generation_eos(sidecars: dict[str, str], source: str) -> list[int]:
    return eos_id_list(_sidecar_json(sidecars, "generation_config.json", source).get("eos_token_id"))


def _has_our_specials(vocab: dict[str, int]) -> bool:
    return all(t in vocab for t in specials.SPECIAL_TOKENS if t not in specials.OPTIONAL_TOKENS)


def read_sidecars(directory: str | Path) -> dict[str, str]:
    """The ``SIDECAR_FILES`` present in ``directory`` (name -> text)."""
    directory = Path(directory)
    out = {}
    for name in SIDECAR_FILES:
        path = directory / name
        if path.is_file():
            try:
                out[name] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as e:
                raise TokenizerError(f"{path}: not UTF-8 text ({e})") from e
    return out


def load_tokenizer(path: str | Path) -> CodeTokenizer:
    """Load from a directory holding ``tokenizer.json`` or from the file; errors name the path.
    The ``SIDECAR_FILES`` beside the file come with it (a foreign tokenizer is recognised by them)."""
    path = Path(path)
    file = path / TOKENIZER_FILE if path.is_dir() else path
    if not file.is_file():
        raise TokenizerError(f"{file}: no tokenizer file here (expected a directory with {TOKENIZER_FILE})")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as e:  # the Rust side raises a bare Exception for any malformed file
        raise TokenizerError(f"{file}: not a valid tokenizer.json ({e})") from e
    return CodeTokenizer(tok, source=str(file), sidecars=read_sidecars(file.parent))
