"""The request body of /v1/chat/completions, checked, and errors in OpenAI's shape.

Fields are strict (a string is not a number, true is not 1), as OpenAI's API
is, so a client bug shows up as a 400 naming the field instead of a silent
conversion. Fields this server does not use (frequency_penalty, logprobs, user,
...) are accepted and ignored, because OpenAI clients send them by default.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.sampling import REPETITION_PENALTY_RANGE, TEMPERATURE_RANGE

MAX_STOP_STRINGS = 4   # OpenAI's limit


class ApiError(Exception):
    """An error answered as {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    # "developer" is what newer OpenAI clients call the system prompt.
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def chatml(self) -> dict:
        """The {role, content} the chat template renders."""
        content = self.content or ""
        if isinstance(content, list):
            content = "".join(part.text for part in content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(Strict):
    include_usage: bool = False


class ChatRequest(Strict):
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Valid ranges (inference/generate.py): temperature 0-2 (below 1e-5 is greedy), top_p in (0, 1],
    # repetition_penalty 0.1-10. Outside them a request gets a 400, never an overflow.
    temperature: float | None = Field(None, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1])
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name for max_tokens
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-2**63, le=2**64 - 1)  # what torch.Generator takes
    n: int | None = Field(None, ge=1, le=1)  # one choice per request
    # Extras beyond OpenAI's API, as in vLLM: the sampling knobs eval_model.py has.
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, ge=REPETITION_PENALTY_RANGE[0], le=REPETITION_PENALTY_RANGE[1])
    # Budget forcing (inference/budget.py), mirroring eval_model.py's flags.
    max_think_tokens: int | None = Field(None, ge=0)
    min_think_tokens: int | None = Field(None, ge=0)
    continue_word: str | None = Field(None, min_length=1, max_length=100)

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ApiError(400, f"stop: at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}", param="stop")
        if any(not s for s in stops):
            raise ApiError(400, "stop: a stop string must not be empty", param="stop")
        return tuple(stops)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    try:
        # NaN and Infinity are Python's extension, not JSON: refused like any other bad token.
        return json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        raise ApiError(400, "request body: JSON nested too deeply") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ApiError(400, f"request body is not valid JSON: {e}") from None


def parse_chat_request(data: Any) -> ChatRequest:
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as e:
        # For a field that may be of several types (content: str or parts), the
        # error that got deepest says best what is wrong.
        worst = max(e.errors(), key=lambda err: len(err["loc"]))
        param = ".".join(str(part) for part in worst["loc"] if not _is_type_tag(part)) or None
        where = f"{param}: " if param else "request body: "
        raise ApiError(400, f"{where}{worst['msg']}", param=param) from None


def _is_type_tag(part: str | int) -> bool:
    """Pydantic names the union member it tried in an error's location ('str', 'list[TextPart]')."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool", "none") or "[" in part)
