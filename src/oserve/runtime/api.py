"""The OpenAI-compatible HTTP surface shared by the gateway and the emulated engine: request bodies (pydantic, at
the edge), the prompt-token estimate, OpenAI-style error bodies and SSE framing.

Prompt tokens without a tokenizer: ``ceil(characters / 4)`` for text (about 4 characters per token for English
under Llama/GPT tokenizers), the list's length for a prompt given as token ids, and for chat the sum over
messages of their text's estimate plus ``CHAT_TOKENS_PER_MESSAGE`` for the role and template markers. The
gateway and the emulated engine use the same estimate, so a request is typed by the length the engine prices.
Only single prompts and ``n = 1`` are served; anything else is a 400 naming the field.

Prefix block hashes without a tokenizer (``prompt_hashes``): a text prompt's tokens are its 4-character chunks,
so a block of ``b`` tokens is ``4 b`` characters; a chat prompt is its messages in order, each a 16-character role
marker (the template's 4 tokens) and its text padded to whole tokens; token ids hash as themselves. The blocks are
chained as vLLM chains its block hashes, so two prompts share a block hash exactly when they share the prefix
up to that block's end.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from oserve.errors import GatewayError
from oserve.sim.prefix_cache import block_hashes, chained_hashes

__all__ = [
    "CHARS_PER_TOKEN",
    "CHAT_TOKENS_PER_MESSAGE",
    "CLASS_HEADER",
    "CLASS_METADATA_KEY",
    "MAX_TOKENS_LIMIT",
    "GenerationRequest",
    "error_body",
    "error_json",
    "estimate_text_tokens",
    "parse_request",
    "prompt_hashes",
    "sse_event",
]

CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 4
MAX_TOKENS_LIMIT = 1 << 24  # beyond any context window; keeps the arithmetic in int64
SSE_DONE = b"data: [DONE]\n\n"

COMPLETIONS = "completions"
CHAT = "chat"


def estimate_text_tokens(text: str) -> int:
    """Tokens of ``text`` without a tokenizer: ``ceil(len / CHARS_PER_TOKEN)``, at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


# -- bodies (only the fields OServe reads or checks; others are accepted and ignored, as vLLM does) ----------
_Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
_TokenId = Annotated[int, Field(ge=0, lt=1 << 31)]
_MaxTokens = Annotated[int, Field(ge=1, le=MAX_TOKENS_LIMIT)]
_TokenIds = Annotated[list[_TokenId], Field(min_length=1)]
_ONE = Field(min_length=1, max_length=1)  # one prompt per request


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Field(ge=1, le=1)] = 1
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # OpenAI's request metadata (string values); ``oserve_class`` names the request's SLO class
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None


class CompletionBody(_Sampling):
    prompt: str | _TokenIds | Annotated[list[str], _ONE] | Annotated[list[_TokenIds], _ONE]
    max_tokens: _MaxTokens | None = None
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None


class TextPart(_Body):
    type: Literal["text"]
    text: str


class Message(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatBody(_Sampling):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: _MaxTokens | None = None
    max_completion_tokens: _MaxTokens | None = None
    logprobs: bool = False


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What serving needs from a completions or chat body."""

    kind: str  # COMPLETIONS or CHAT
    model: str | None
    prompt_tokens: int
    max_tokens: int | None  # None: the server's default
    stream: bool
    include_usage: bool
    slo_class: str | None = None  # the body's ``metadata.oserve_class`` (the gateway also reads a header)
    prefix: str | tuple[int, ...] = ""  # the prompt as ``prompt_hashes`` blocks it (text, or token ids)


#: where a live request names its SLO class: this header, else the body's ``metadata`` under this key
CLASS_HEADER = "x-oserve-class"
CLASS_METADATA_KEY = "oserve_class"


def _prompt_prefix(body: CompletionBody) -> str | tuple[int, ...]:
    prompt = body.prompt
    if isinstance(prompt, str):
        return prompt
    first = prompt[0]
    if isinstance(first, int):
        return tuple(prompt)
    return first if isinstance(first, str) else tuple(first)


def _chat_prefix(body: ChatBody) -> str:
    parts = []
    for m in body.messages:
        content = m.content
        text = (
            ""
            if content is None
            else content
            if isinstance(content, str)
            else "".join(p.text for p in content)
        )
        marker = f"<|{m.role}|>"[: CHARS_PER_TOKEN * CHAT_TOKENS_PER_MESSAGE]
        parts.append(marker.ljust(CHARS_PER_TOKEN * CHAT_TOKENS_PER_MESSAGE, "\0"))
        parts.append(text + "\0" * (-len(text) % CHARS_PER_TOKEN))
    return "".join(parts)


def prompt_hashes(prefix: str | tuple[int, ...], block_tokens: int) -> list[int]:
    """Chained hashes of the prompt's full ``block_tokens``-token blocks (see the module docstring)."""
    if isinstance(prefix, str):
        data = prefix.encode("utf-32-le")  # fixed width: 4 bytes a character, so blocks split no character
        step = block_tokens * CHARS_PER_TOKEN * 4
        full = len(data) // step * step
        return chained_hashes(data[i : i + step] for i in range(0, full, step))
    return block_hashes(prefix, block_tokens)


def _prompt_tokens(body: CompletionBody) -> int:
    prompt = body.prompt
    if isinstance(prompt, str):
        return estimate_text_tokens(prompt)
    first = prompt[0]
    if isinstance(first, int):
        return len(prompt)
    if isinstance(first, str):
        return estimate_text_tokens(first)
    return len(first)


def _chat_tokens(body: ChatBody) -> int:
    total = 0
    for m in body.messages:
        content = m.content
        if content is None:
            chars = 0
        elif isinstance(content, str):
            chars = len(content)
        else:
            chars = sum(len(p.text) for p in content)
        total += math.ceil(chars / CHARS_PER_TOKEN) + CHAT_TOKENS_PER_MESSAGE
    return total


def _is_field(part: object) -> bool:
    """A field name in a pydantic error location (not a union member's tag such as ``list[int]`` or ``str``)."""
    return isinstance(part, str) and part.isidentifier() and part not in ("str", "int", "float", "bool")


def _invalid(exc: ValidationError) -> GatewayError:
    """The first validation error as OpenAI's 400 body fields."""
    first = exc.errors(include_url=False)[0]
    kind = first.get("type", "")
    if kind.startswith("json"):
        return GatewayError(f"request body is not valid JSON: {first.get('msg', '')}", code="invalid_json")
    loc = [str(p) for p in first.get("loc", ()) if isinstance(p, int) or _is_field(p)]
    if kind == "model_type" and not loc:
        return GatewayError("request body must be a JSON object", code="invalid_json")
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if param == "n":
        msg = "only n=1 is supported"
    elif param is not None and param.startswith("prompt"):
        param, msg = (
            "prompt",
            (
                "must be a string or a list of token ids (0 <= id < 2**31), or a one-element list of either; "
                "one prompt per request"
            ),
        )
    return GatewayError(f"{param or 'body'}: {msg}", param=param, code="invalid_value")


def parse_request(kind: str, raw: bytes) -> GenerationRequest:
    """Validate a ``/v1/completions`` (``kind="completions"``) or ``/v1/chat/completions`` body; a
    ``GatewayError`` (400) names the offending field."""
    try:
        if kind == COMPLETIONS:
            body: Any = CompletionBody.model_validate_json(raw)
            prompt, max_tokens = _prompt_tokens(body), body.max_tokens
            prefix = _prompt_prefix(body)
        else:
            body = ChatBody.model_validate_json(raw)
            prompt = _chat_tokens(body)
            prefix = _chat_prefix(body)
            max_tokens = (
                body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
            )
    except ValidationError as exc:
        raise _invalid(exc) from None
    include_usage = bool(body.stream and body.stream_options and body.stream_options.include_usage)
    named = (body.metadata or {}).get(CLASS_METADATA_KEY)
    return GenerationRequest(
        kind, body.model, prompt, max_tokens, body.stream, include_usage, slo_class=named, prefix=prefix
    )


# -- errors and SSE -------------------------------------------------------------------------------------------
def error_body(exc: GatewayError) -> dict[str, Any]:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI returns it."""
    return {"error": {"message": str(exc), "type": exc.error_type, "param": exc.param, "code": exc.code}}


def error_json(exc: GatewayError) -> bytes:
    return json.dumps(error_body(exc)).encode()


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
