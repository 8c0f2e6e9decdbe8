"""The ChatML chat template, written twice: as Python and as Jinja.

Python is what our own code runs; the Jinja string goes into
tokenizer_config.json so that Hugging Face (and llama.cpp, via GGUF) render the
exact same text. tests/test_tokenizer.py checks the two agree char for char.

    <|im_start|>{role}\\n{content}<|im_end|>\\n    for every message
    <|im_start|>assistant\\n                       if add_generation_prompt

There is no default system prompt (a 26M model gains nothing from being told it
is helpful, and a hidden prompt surprises users), and assistant content is kept
verbatim, <think>/<answer> tags included.
"""

from .specials import IM_END, IM_START

CHAT_ROLES: tuple[str, ...] = ("system", "user", "assistant")

# Jinja source, one statement per line for reading; joined without newlines so
# no stray whitespace can reach the output. '\\n' is a newline escape that
# Jinja itself interprets inside its string literals.
CHAT_TEMPLATE = "".join([
    "{%- for message in messages -%}",
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}",
    "{{- raise_exception('chat roles must be system, user or assistant') -}}",
    "{%- endif -%}",
    "{{- '" + IM_START + "' + message['role'] + '\\n' + message['content'] + '" + IM_END + "\\n' -}}",
    "{%- endfor -%}",
    "{%- if add_generation_prompt -%}",
    "{{- '" + IM_START + "assistant\\n' -}}",
    "{%- endif -%}",
])


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Render a conversation as ChatML text (the Python twin of CHAT_TEMPLATE)."""
    parts = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in CHAT_ROLES:
            raise ValueError(f"message {i}: role must be one of {', '.join(CHAT_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be a string, got {type(content).__name__}")
        parts.append(f"{IM_START}{role}\n{content}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)
