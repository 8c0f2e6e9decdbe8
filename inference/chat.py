"""Chat with a fine-tuned model: a conversation's history, its prompt ids, and a terminal loop.

A ChatSession keeps the last few user/assistant exchanges and renders them with
the tokenizer's ChatML template, so turn 2 sees turn 1:

    session = ChatSession(model, tok, SamplingConfig(...), system="...", history_turns=3)
    for chunk in session.reply("你好"):
        print(chunk, end="", flush=True)

A reply ends at <|im_end|> (the end of an assistant turn in SFT data) or at
<|endoftext|>, and its text, without special tokens, becomes the assistant turn
the next prompt carries.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Protocol, Sequence, TextIO

import torch

from .budget import ThinkBudget
from .generate import generate
from .sampling import SamplingConfig
from model import SpongeBob
from .streaming import stream_text
from .think_split import THINK, ThinkSplitter, split_reasoning

CHAT_MARKER = "你> "
# The same commands in every mode, typed or piped; any other line is a prompt.
COMMANDS = {"/help": "help", "/?": "help", "/clear": "clear", "/exit": "exit", "/quit": "exit"}
CHAT_HELP = "type a message and press Enter; /clear forgets the conversation, /exit or Ctrl-D quits, " \
            "Ctrl-C stops a reply, /help shows this"
TEXT_HELP = "type a prompt and press Enter; /exit or Ctrl-D quits, Ctrl-C stops a generation, /help shows this " \
            "(mode 0 keeps no history, so there is nothing to /clear)"


def command(line: str) -> str | None:
    """"help", "clear" or "exit" when the line is one of the commands, else None (a prompt)."""
    return COMMANDS.get(line.strip().lower())


class ChatTokenizer(Protocol):
    im_end_id: int
    endoftext_id: int

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False,
                            tokenize: bool = False) -> str | list[int]: ...


class ChatSession:
    """One conversation: an optional system prompt and the last history_turns exchanges."""

    def __init__(self, model: SpongeBob, tok: ChatTokenizer, sampling: SamplingConfig,
                 system: str | None = None, history_turns: int = 3, seed: int | None = None,
                 budget: ThinkBudget | None = None, keep_thinking: bool = True):
        self.model, self.tok, self.system = model, tok, system
        self.history_turns, self.seed = history_turns, seed
        # A reasoning model's past thinking is dropped from the history (as DeepSeek-R1
        # does): only its answers are what the conversation said.
        self.budget, self.keep_thinking = budget, keep_thinking
        # Stop at a turn's end; the stop token itself is never yielded, so never shown.
        self.sampling = replace(sampling, stop_ids=(tok.im_end_id, tok.endoftext_id))
        self.exchanges: list[tuple[str, str]] = []  # (user, assistant), oldest first

    def clear(self) -> None:
        self.exchanges.clear()

    def messages(self, user: str, exchanges: list[tuple[str, str]]) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        for past_user, past_reply in exchanges:
            head += [{"role": "user", "content": past_user}, {"role": "assistant", "content": past_reply}]
        return head + [{"role": "user", "content": user}]

    def prompt_ids(self, user: str) -> list[int]:
        """The ids the model is fed for this user turn: system prompt, kept history, the turn,
        and the assistant header. The oldest exchanges go first when the context is short."""
        kept = self.exchanges[-self.history_turns:] if self.history_turns > 0 else []
        context = self.model.config.max_position_embeddings
        # generate keeps only the last (context - max_new) prompt ids; dropping whole
        # exchanges here instead keeps the system prompt and never cuts a turn in half.
        budget = context - min(self.sampling.max_new_tokens, context - 1)
        while True:
            ids = self.tok.apply_chat_template(self.messages(user, kept), add_generation_prompt=True,
                                               tokenize=True)
            if len(ids) <= budget or not kept:
                return list(ids)
            kept = kept[1:]

    def reply(self, user: str) -> Iterator[str]:
        """Stream the reply to user; once it ends (or is stopped) it joins the history."""
        prompt = self.prompt_ids(user)
        generator = None
        if self.seed is not None:
            # Seeded per turn, as eval_model does per prompt.
            generator = torch.Generator(device=self.model.embed.weight.device).manual_seed(self.seed)
        reply_ids: list[int] = []

        def recorded() -> Iterator[int]:
            for token_id in generate(self.model, prompt, self.sampling, generator=generator, budget=self.budget):
                reply_ids.append(token_id)
                yield token_id

        try:
            yield from stream_text(self.tok, recorded(), skip_special_tokens=True)
        finally:
            # Also after Ctrl-C: the part the user saw is what the next turn refers to.
            self._remember(user, self.tok.decode(reply_ids, skip_special_tokens=True))

    def _remember(self, user: str, reply: str) -> None:
        if self.history_turns <= 0:
            return
        if not self.keep_thinking:
            reply = split_reasoning(reply)[1].strip()
        self.exchanges.append((user, reply))
        del self.exchanges[:-self.history_turns]


Render = Callable[[Iterator[str], TextIO], None]


def write_reply(chunks: Iterator[str], out: TextIO) -> None:
    """A reply as it streams, unchanged."""
    for chunk in chunks:
        out.write(chunk)
        out.flush()


class ReasoningRender:
    """Shows a reasoning reply's thinking apart from its answer: dimmed on a terminal,
    labelled 思考/回答 elsewhere; hide_think leaves the thinking out."""

    DIM, RESET = "\033[2m", "\033[0m"

    def __init__(self, hide_think: bool = False, color: bool = False):
        self.hide_think, self.color = hide_think, color

    def __call__(self, chunks: Iterator[str], out: TextIO) -> None:
        splitter, shown = ThinkSplitter(), None
        try:
            for chunk in chunks:
                shown = self._write(splitter.feed(chunk), out, shown)
        finally:  # also when Ctrl-C stops the reply: show what was held back
            self._write(splitter.flush(), out, shown)
            if self.color:
                out.write(self.RESET)
            out.flush()

    def _write(self, pieces: list[tuple[str, str]], out: TextIO, shown: str | None) -> str | None:
        for kind, text in pieces:
            if kind == THINK and self.hide_think:
                continue
            if kind != shown:  # a new part begins
                if self.color:
                    out.write((self.DIM + "思考: ") if kind == THINK else (self.RESET + ("\n" if shown else "")))
                else:
                    out.write(("\n" if shown else "") + ("[思考] " if kind == THINK else "[回答] "))
                shown = kind
            out.write(text)
            out.flush()
        return shown


def chat_loop(session: ChatSession, out: TextIO, read_line: Callable[[str], str] = input,
              render: Render = write_reply) -> None:
    """Read a message, stream the reply, repeat, until /exit or end of input (Ctrl-D)."""
    print(CHAT_HELP, file=sys.stderr)
    while True:
        try:
            line = read_line(CHAT_MARKER).strip()
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C at the prompt
            out.write("\n")
            return
        if not line:
            continue
        action = command(line)
        if action == "exit":
            return
        if action == "help":
            print(CHAT_HELP, file=sys.stderr)
            continue
        if action == "clear":
            session.clear()
            out.write("(conversation cleared)\n")
            continue
        try:
            render(session.reply(line), out)
            out.write("\n")
        except KeyboardInterrupt:  # Ctrl-C during a reply stops just that reply
            out.write(" (stopped)\n")
        out.flush()
