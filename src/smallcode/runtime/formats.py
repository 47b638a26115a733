"""Prompt formats: how text, a fill-in-the-middle request or a chat become token ids for a model.

``prompt_format(tokenizer)`` gives the ``PromptFormat`` of a smallcode ``CodeTokenizer`` (or of an
``HFTokenizer``: its own); ``hf_prompt_format(tokenizer)`` that of a transformers tokenizer, whose
family is recognised from the special tokens in its vocabulary, or, for our own tokenizer (a
``smallcode export hf`` directory: its ``tokenizer_config.json`` names the tokenizer's hash), our
layouts. A ``PromptFormat`` has:

* ``name`` and ``stop_ids``: the tokens that end a completion (end-of-text, and what the family
  uses to close a turn or open another file);
* ``encode(text)`` / ``decode(ids)``: a plain prompt and its text;
* ``fim(prefix, suffix, extra)``: the prompt asking for the text between ``prefix`` and ``suffix``,
  after other files given as ``(filename, text)`` pairs;
* ``chat(messages)``: the conversation with an assistant turn opened; ``ValueError`` for a message
  that is not ``{"role": "system" | "user" | "assistant", "content": str}`` or a tokenizer with no
  chat template.

Layouts. Ours is suffix-prefix-middle with the other files first
(``[files] <|fim_prefix|><|fim_suffix|> suffix <|fim_middle|> prefix``): typing at the cursor only
lengthens the end of the prompt, so the scheduler's prompt cache reuses all the rest. The Hugging
Face families use the prefix-suffix-middle order their model cards document (``FAMILIES``, in
``smallcode.tokenizer.families``: the tokenizer reads the same table). Our
tokenizer spells its FIM tokens as Qwen2.5-Coder does, so an export of ours is recognised before the
families and keeps our layout, chat and stops: the same model answers the same under both servers. Other
files go as ``<file_sep>path\\ntext`` blocks where the family has a file separator (StarCoder2,
Qwen2.5-Coder), and otherwise as plain text opened by a comment naming the file, at the start of the
prefix, where the model reads them as earlier code of the same file. Neither the repository's name
nor the current file's path is part of the request, so the repository header and the path after the
current file's separator are left out.

``load_hf_tokenizer(path)`` loads a model directory's tokenizer (a Hugging Face directory, or an imported
smallcode checkpoint holding the model's tokenizer files) as an ``HFTokenizer`` in its family's layout.
``HFTokenizer(format)`` is a transformers tokenizer as the engine asks for one (``step.Tokenizer``:
``vocab_size``, ``stop_ids``, ``encode``, ``decode``), its stops and plain layout the format's.

Not here: running a model (``smallcode.runtime.engine``, ``smallcode.runtime.hf``), the HTTP
schemas (``smallcode.serve.app``), formats for chat-only models without FIM tokens beyond what
their chat template does.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from smallcode.errors import UserError
from smallcode.tokenizer import CodeTokenizer, check_messages
from smallcode.tokenizer.code_tokenizer import HASH_KEY, TokenizerError, encode_inside, eos_id_list, plain_file_block
from smallcode.tokenizer.families import FAMILIES, Family, detect_family, fim_token_ids, first_id


class FormatError(UserError, ValueError):
    """A request this model's prompt format cannot express (e.g. FIM on a model without FIM tokens)."""


class PromptFormat(ABC):
    """How one tokenizer lays out prompts (see the module docstring)."""

    name: str
    stop_ids: list[int]

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """A plain prompt: ``text`` to continue."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """The text of ``ids`` (a prompt, for echo)."""

    @abstractmethod
    def fim(self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()) -> list[int]:
        """The prompt for the text between ``prefix`` and ``suffix``, after the files in ``extra``."""

    @abstractmethod
    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation in ``messages`` followed by an opened assistant turn."""


# ---------------------------------------------------------------------------------- smallcode
class SmallcodeFormat(PromptFormat):
    """The smallcode tokenizer's own layouts (``CodeTokenizer.fim_prompt`` and ``chat_ids``)."""

    name = "smallcode"

    def __init__(self, tokenizer: CodeTokenizer) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = list(tokenizer.stop_ids)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids)

    def fim(self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()) -> list[int]:
        return self.tokenizer.fim_prompt(prefix, suffix, "spm", files=list(extra))

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.chat_ids(check_messages(messages), add_generation_prompt=True)


def prompt_format(tokenizer: CodeTokenizer | HFTokenizer) -> PromptFormat:
    """The prompt format of a smallcode tokenizer, or the one an ``HFTokenizer`` was made with (so
    that ``prompt_format(engine.tokenizer)`` is the engine's format whatever the model)."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.format
    if not isinstance(tokenizer, CodeTokenizer):
        raise TypeError(f"prompt_format takes a smallcode CodeTokenizer or an HFTokenizer, not "
                        f"{type(tokenizer).__name__}; use hf_prompt_format for a transformers tokenizer")
    if not tokenizer.native:  # our layouts in its tokens would be a prompt the model never learned
        raise TypeError(f"{tokenizer.source} is a Hugging Face model's tokenizer: serve it as transformers loads "
                        "it (load_hf_tokenizer), in its family's layouts")
    return SmallcodeFormat(tokenizer)


# ---------------------------------------------------------------------------------- Hugging Face
def native_format(tokenizer: Any) -> SmallcodeFormat | None:
    """Our own format for a transformers tokenizer that is ours, else None.

    Ours: its ``tokenizer_config.json`` has the field ``CodeTokenizer.hf_config`` writes (``HASH_KEY``,
    in every checkpoint and ``smallcode export hf`` directory) and its vocabulary has our special
    tokens. The field marks it; its value is not compared, as transformers changes the tokenizer it
    loads (it adds a post-processor), and a tokenizer saved again by transformers keeps the field."""
    init_kwargs = getattr(tokenizer, "init_kwargs", None) or {}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not init_kwargs.get(HASH_KEY) or backend is None:
        return None
    try:
        # A copy: CodeTokenizer switches special-token matching off in the object it is given, which
        # must not change how the transformers tokenizer encodes plain prompts.
        ours = CodeTokenizer(Tokenizer.from_str(backend.to_str()), source=str(getattr(tokenizer, "name_or_path", "")))
    except TokenizerError:  # the field without our special tokens: not ours after all
        return None
    return SmallcodeFormat(ours)


class HFFormat(PromptFormat):
    """A transformers tokenizer's layouts: its family's FIM tokens and its own chat template, or ours
    (``native``) for our own tokenizer.

    Text is encoded with the tokenizer's defaults, so the sequence start it adds (Llama's and
    DeepSeek's begin-of-sequence) opens every prompt, and special tokens written in a plain prompt
    are matched (clients that build a FIM prompt themselves rely on that)."""

    def __init__(self, tokenizer: Any, extra_stop_ids: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        vocab: dict[str, int] = tokenizer.get_vocab()
        self.native = native_format(tokenizer)
        # Our FIM tokens are spelled as Qwen2.5-Coder's: ours is recognised first, or our export
        # would get the family's prefix-first layout and its stops.
        self.family: Family | None = None if self.native else detect_family(vocab)
        self.name = self.native.name if self.native else self.family.name if self.family else "plain"
        stops = [tokenizer.eos_token_id, *extra_stop_ids, *(self.native.stop_ids if self.native else ())]
        # The FIM tokens' ids, looked up once (get_vocab rebuilds the vocabulary as a dict each call).
        self._fim_ids: tuple[int, int, int] | None = None
        self._file_sep: int | None = None
        if self.family:
            family = self.family
            stops += [vocab[t] for t in family.stops if t in vocab]
            self._fim_ids = fim_token_ids(vocab, family)
            self._file_sep = first_id(vocab, family.file_sep)
        self.stop_ids = list(dict.fromkeys(s for s in stops if s is not None))
        # What the tokenizer puts before any text (a begin-of-sequence token, or nothing).
        plain = tokenizer.encode("a", add_special_tokens=False)
        full = tokenizer.encode("a")
        self._lead = full[: len(full) - len(plain)] if full[len(full) - len(plain):] == plain else []
        # A SentencePiece tokenizer with a dummy prefix encodes "a" as "▁a": a space is invented at
        # the start of every encoded piece. The suffix must not get one (CodeLlama's "<SUF>{suffix}").
        first = tokenizer.convert_ids_to_tokens(plain[:1])
        self._dummy_space = bool(first) and str(first[0]).startswith("▁")

    def _text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _text_inside(self, text: str) -> list[int]:
        """``text`` as it is encoded in the middle of a line: without the invented leading space."""
        return encode_inside(self._text, text) if self._dummy_space else self._text(text)

    def encode(self, text: str) -> list[int]:
        return self._lead + self._text(text)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def fim(self, prefix: str, suffix: str, extra: Sequence[tuple[str, str]] = ()) -> list[int]:
        if self.native:
            return self.native.fim(prefix, suffix, extra)
        if self._fim_ids is None:
            raise FormatError("this model has no fill-in-the-middle tokens (none of the known families: "
                              f"{', '.join(f.name for f in FAMILIES)}); send the prefix as a plain prompt")
        pre, suf, mid = self._fim_ids
        sep = self._file_sep
        head: list[int] = []
        if extra and sep is not None:
            for path, text in extra:
                head += [sep, *self._text(f"{path}\n{text}")]
            head.append(sep)  # opens the current file
        elif extra:
            prefix = "".join(plain_file_block(path, text) for path, text in extra) + prefix
        return [*self._lead, *head, pre, *self._text(prefix), suf, *self._text_inside(suffix), mid]

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        from jinja2 import TemplateError

        if self.native:  # our template writes what chat_ids does; the ids themselves are ours
            return self.native.chat(messages)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model has no chat template: use /v1/completions")
        try:
            text = self.tokenizer.apply_chat_template(check_messages(messages), tokenize=False,
                                                      add_generation_prompt=True)
        except TemplateError as e:  # a template's own check (e.g. roles that must alternate)
            raise ValueError(f"the chat template refused these messages: {e}") from e
        # The template writes the special tokens (begin-of-sequence too) as text.
        return self._text(text)


def hf_prompt_format(tokenizer: Any, extra_stop_ids: Sequence[int] = ()) -> HFFormat:
    """The prompt format of a transformers tokenizer; ``extra_stop_ids`` adds end tokens the model's
    generation config names. FIM raises ``FormatError`` when no known family's tokens are present."""
    return HFFormat(tokenizer, extra_stop_ids)


class HFTokenizer:
    """What the engine asks of a tokenizer (``vocab_size``, ``stop_ids``, ``encode``, ``decode``),
    over a transformers tokenizer and its ``HFFormat``: the stops and the plain layout are the
    format's, and ``prompt_format(this)`` is the format itself.

    ``decode`` gives a continuation's text as it reads after the prompt: the ids are decoded after
    an anchor token whose text is then cut off, because a SentencePiece tokenizer drops the leading
    space of the first token it decodes ("▁world" alone is "world", after "a" it is " world")."""

    def __init__(self, fmt: HFFormat) -> None:
        if not fmt.stop_ids:
            raise FormatError("the model's tokenizer names no end-of-sequence token: nothing would end a completion")
        self.format = fmt
        self.tokenizer = fmt.tokenizer
        self.stop_ids = frozenset(fmt.stop_ids)
        self.vocab_size: int = len(fmt.tokenizer)
        self._anchor = self.tokenizer.encode("a", add_special_tokens=False)
        self._anchor_chars = len(self._decode(self._anchor))

    def encode(self, text: str) -> list[int]:
        return self.format.encode(text)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self._decode([*self._anchor, *ids])[self._anchor_chars:]


def vocabulary(tokenizer: Any) -> dict[str, int] | None:
    """The string -> id table of a ``CodeTokenizer`` or an ``HFTokenizer``; None for another kind."""
    if isinstance(tokenizer, CodeTokenizer):
        return tokenizer.backend.get_vocab()
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.tokenizer.get_vocab()  # type: ignore[no-any-return]
    return None


def token_spelling(tokenizer: Any, token: int) -> str | None:
    """How the vocabulary of a ``CodeTokenizer`` or an ``HFTokenizer`` spells ``token`` (byte-level
    BPE's characters, SentencePiece's ``<0xNN>``); None for another kind of tokenizer."""
    if isinstance(tokenizer, CodeTokenizer):
        return tokenizer.backend.id_to_token(token)
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.tokenizer.convert_ids_to_tokens(token)  # type: ignore[no-any-return]
    return None


def generation_eos(path: str | Path) -> list[int]:
    """The end-of-sequence ids a model directory's generation config names (``generation_config.json``,
    else a Hugging Face ``config.json``'s ``eos_token_id``: what transformers' ``generation_config`` holds),
    as a list; none when neither says."""
    path = Path(path)
    eos = None
    for name in ("generation_config.json", "config.json"):
        file = path / name
        if file.is_file():
            try:
                meta = json.loads(file.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise TokenizerError(f"{file}: not valid JSON ({e})") from e
            if isinstance(meta, dict) and meta.get("eos_token_id") is not None:
                eos = meta["eos_token_id"]
                break
    return eos_id_list(eos)


def load_hf_tokenizer(path: str | Path, *, trust_remote_code: bool = False) -> HFTokenizer:
    """The tokenizer of the model in ``path`` as the engine asks for one: ``AutoTokenizer`` (local files
    only) in its family's layout (``hf_prompt_format``), the generation config's end tokens among its
    stops. ``path`` is a Hugging Face model directory or an imported smallcode checkpoint (which holds
    the model's tokenizer files unchanged), so both are served with the same token ids."""
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{path}: cannot load the model's Hugging Face tokenizer ({e})") from e
    return HFTokenizer(hf_prompt_format(tokenizer, extra_stop_ids=generation_eos(path)))
