"""The wire formats of ``smallcode serve``: pydantic models of the requests, and the error shape.

The request bodies: OpenAI's ``/v1/completions`` (``prompt`` a string or a list of strings,
``suffix`` for fill-in-the-middle) and ``/v1/chat/completions``, Mistral's ``/v1/fim/completions``,
and llama.cpp's ``/infill``; and llama.cpp's ``/completion``, ``/tokenize`` and ``/detokenize``. Types
are strict (a JSON string is not an integer, ``NaN`` is not a temperature), so a wrong type is a 400
before anything is tokenised. Ranges that do not depend on the server's configuration are checked
here (``logprobs`` <= 5, ``top_p`` in (0, 1], ...); the configurable caps (``max_tokens``, ``n``,
stop strings, body size) are the service's :class:`~smallcode.serve.service.Limits`.

Unknown fields are ignored, as OpenAI's and llama.cpp's servers ignore them: ``model`` and ``user``
are accepted and not used, and so are llama.cpp's tuning knobs that llama.vscode sends
(``samplers``, ``min_p``, ``t_max_prompt_ms``, ``n_probs``, ``repeat_penalty``, ...). Fields that
would change what is generated and that this server does not implement are named in
:func:`unsupported` and refused with a 400 naming the field, never silently dropped: ``best_of``
other than ``n``, ``echo`` with ``suffix`` or with ``logprobs``, ``logit_bias``, non-zero
``presence_penalty`` / ``frequency_penalty``, chat ``tools`` / ``tool_choice`` / ``response_format``
other than text, non-text chat content parts.

Responses are plain JSON built by the routes (OpenAI's shapes; llama.cpp's for ``/infill``); only the
error body has a model here, because every 4xx/5xx uses it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# Seeds go to torch.Generator.manual_seed, row r getting seed + r; this keeps every one in range.
MAX_SEED = 2**62
MAX_LOGPROBS = 5


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class StreamOptions(_Request):
    include_usage: bool = False
    """Send a last chunk with the usage (and empty ``choices``) before ``data: [DONE]``."""


class _Sampling(_Request):
    """The OpenAI sampling fields shared by completions and chat."""

    model: str | None = None
    """Accepted and ignored: the server serves one model."""
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    """An extension (vLLM, llama.cpp): keep the k most likely tokens (0 = no limit)."""
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    user: str | None = None


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    suffix: str | None = None
    """Text after the cursor: the prompt becomes a fill-in-the-middle prompt."""
    max_tokens: int | None = Field(16, ge=1)
    """None: the server's cap."""
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    """Log-probability of each chosen token and of the ``logprobs`` most likely alternatives."""
    echo: bool = False
    """Put the prompt in front of the completion."""
    best_of: int | None = None


class ContentPart(_Request):
    type: str
    text: str | None = None


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant"]
    """``developer`` is OpenAI's newer name for ``system`` and is read as it."""
    content: str | list[ContentPart] | None = None
    name: str | None = None


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for ``max_tokens``; either may be given (None: the server's cap)."""
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None


class FimRequest(_Sampling):
    """``POST /v1/fim/completions``, Mistral's fill-in-the-middle route (Continue's autocomplete calls
    it); answered in the chat completion's shape, as Mistral answers it."""

    prompt: str
    """The text before the cursor."""
    suffix: str | None = None
    """The text after the cursor."""
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    random_seed: int | None = Field(None, ge=0, le=MAX_SEED)
    """Mistral's name for ``seed``."""
    min_tokens: int | None = Field(None, ge=0)


class ExtraChunk(_Request):
    filename: str = ""
    text: str = ""


class InfillRequest(_Request):
    """``POST /infill``, llama.cpp's fill-in-the-middle endpoint (llama.vscode, llama.vim)."""

    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: list[ExtraChunk] = Field(default_factory=list)
    """Other files as context, laid out before the fill-in-the-middle prompt."""
    prompt: str = ""
    """Text typed at the cursor: appended to the prefix."""
    n_predict: int = Field(-1, ge=-1)
    """Most new tokens; -1 is the server's cap."""
    t_max_predict_ms: int = Field(0, ge=0)
    """Time limit of the generation in milliseconds (0: the server's)."""
    n_indent: int = Field(0, ge=0)
    """Stop at a line indented by fewer than ``n_indent`` whitespace characters (the line is dropped)."""
    stream: bool = False
    stop: str | list[str] = Field(default_factory=list)
    cache_prompt: bool = True
    """Accepted for compatibility: prompt reuse is exact here, so it is always on."""
    temperature: float = Field(0.8, ge=0)
    top_k: int = Field(40, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    """-1 draws a fresh seed, as llama.cpp does."""
    model: str | None = None


LlamaPrompt = str | list[int | str | list[int | str]]
"""llama.cpp's ``prompt``: text, token ids, a mix of both, or a list of such prompts."""


class LlamaCompletionRequest(_Request):
    """``POST /completion`` (and ``/completions``), llama.cpp's native completion body (Continue's and
    Tabby's llama.cpp providers). Defaults are llama.cpp's where this server does the same thing.

    The knobs of samplers this server does not have are accepted at the values where they do
    nothing, and also at any value where they cannot change the output (``min_p`` and the other
    filters when decoding is greedy; penalties when ``repeat_last_n`` is 0, which switches them off
    in llama.cpp); any other value is a 400 naming the field (:func:`llama_unsupported`).
    """

    prompt: LlamaPrompt
    n_predict: int = Field(-1, ge=-1)
    """Most new tokens; -1 (and anything above the server's cap) is the cap; 0 only evaluates the prompt."""
    stream: bool = False
    stop: str | list[str] = Field(default_factory=list)
    n_probs: int = Field(0, ge=0)
    """Log-probabilities of the chosen token and the ``n_probs`` most likely ones, per token."""
    n_indent: int = Field(0, ge=0)
    """As ``/infill``'s: stop at a line indented by fewer than ``n_indent`` characters."""
    n_cmpl: int = Field(1, ge=1)
    """Completions per prompt (sample i seeded ``seed + i``)."""
    t_max_predict_ms: int = Field(0, ge=0)
    temperature: float = 0.8
    """<= 0 is greedy, as in llama.cpp."""
    top_k: int = 40
    """<= 0: no limit."""
    top_p: float = Field(0.95, gt=0)
    """>= 1: no limit."""
    seed: int = Field(-1, ge=-1, le=2**64 - 1)
    """-1 draws a fresh seed; others are taken modulo ``MAX_SEED`` (Tabby sends a millisecond clock)."""
    ignore_eos: bool = False
    cache_prompt: bool = True
    """Accepted: prompt reuse is exact here, so caching never changes an answer and is always on."""
    return_tokens: bool = False
    """Accepted: ``tokens`` is always filled."""
    response_fields: list[str] | None = None
    """Only these fields of the answer (``a/b`` takes field ``b`` of object ``a`` to the top, as ``b``)."""
    model: str | None = None
    # Samplers and penalties this server does not have: see llama_unsupported for when each is refused.
    min_p: float = 0.0
    typical_p: float = 1.0
    dynatemp_range: float = 0.0
    xtc_probability: float = 0.0
    top_n_sigma: float = -1.0
    mirostat: int = 0
    repeat_last_n: int = 64
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_penalty_last_n: int = -1
    logit_bias: list[Any] | dict[str, Any] | None = None
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    lora: list[Any] | None = None
    post_sampling_probs: bool = False


class TokenizeRequest(_Request):
    """``POST /tokenize``."""

    content: str
    add_special: bool = False
    """Put the tokenizer's sequence start (a BOS token, if it has one) in front, as a prompt gets it."""
    parse_special: bool = True
    """Accepted; special tokens in ``content`` are read as the served prompt format reads text."""
    with_pieces: bool = False
    """Answer ``[{"id", "piece"}]``; a piece is a string, or its bytes when they are not valid UTF-8."""


class DetokenizeRequest(_Request):
    """``POST /detokenize``."""

    tokens: list[int] = Field(default_factory=list)


def llama_unsupported(request: LlamaCompletionRequest) -> str | None:
    """The first field of a ``/completion`` body that asks for a sampler or penalty this server does
    not have, at a value where it would change the output; None when there is none."""
    greedy = request.temperature <= 0
    if not greedy:
        filters = (("min_p", request.min_p > 0), ("typical_p", request.typical_p < 1),
                   ("dynatemp_range", request.dynatemp_range > 0), ("xtc_probability", request.xtc_probability > 0),
                   ("top_n_sigma", request.top_n_sigma > 0), ("mirostat", request.mirostat != 0))
        for name, active in filters:
            if active:
                return name
    if request.repeat_last_n != 0:
        penalties = (("repeat_penalty", request.repeat_penalty != 1),
                     ("presence_penalty", request.presence_penalty != 0),
                     ("frequency_penalty", request.frequency_penalty != 0))
        for name, active in penalties:
            if active:
                return name
    if request.dry_multiplier != 0 and request.dry_penalty_last_n != 0:
        return "dry_multiplier"
    if request.logit_bias:
        return "logit_bias"
    if request.grammar:
        return "grammar"
    if request.json_schema is not None:
        return "json_schema"
    if request.lora:
        return "lora"
    if request.post_sampling_probs:
        return "post_sampling_probs"
    return None


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorBody


def unsupported(request: CompletionRequest | ChatRequest | FimRequest) -> str | None:
    """The name of the first field whose value asks for something this server does not do, or None."""
    if request.logit_bias:
        return "logit_bias"
    if request.presence_penalty:
        return "presence_penalty"
    if request.frequency_penalty:
        return "frequency_penalty"
    if isinstance(request, FimRequest):
        return "min_tokens" if request.min_tokens else None
    if isinstance(request, CompletionRequest):
        if request.best_of is not None and request.best_of != request.n:
            return "best_of"
        if request.echo and (request.suffix is not None or request.logprobs is not None):
            return "echo"
        return None
    if request.tools:
        return "tools"
    if request.tool_choice not in (None, "none", "auto"):
        return "tool_choice"
    if request.response_format is not None and request.response_format.get("type", "text") != "text":
        return "response_format"
    for message in request.messages:
        if isinstance(message.content, list) and any(p.type != "text" or p.text is None for p in message.content):
            return "messages"
    return None


ErrorType = Literal["invalid_request_error", "authentication_error", "server_error", "unavailable_error"]
