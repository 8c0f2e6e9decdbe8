"""Try a trained model: `python eval_model.py --model_mode 0` continues your text.

Model modes: which stage's checkpoint is loaded from --out_dir (`out` by default;
--ckpt loads another file), by number or by name (--model_mode sft); the table of
stages (common/stages.py) is printed at the end of this help. The pretrained model
continues prompts as raw text; the others chat, and a model that thinks shows its
thinking dimmed (labelled [思考] when not on a terminal), then the answer (--hide_think).

Where the prompts come from (mode 0):
  --prompt TEXT    that one prompt: prints the prompt, then streams its continuation
  a terminal       an interactive loop: type a prompt, Enter; /help, /exit;
                   Ctrl-C stops a generation, Ctrl-D (or Ctrl-C at the prompt) quits
  a pipe or file   one prompt per non-empty line, answered in order, one JSON
                   line each: {"prompt": ..., "continuation": ...}

Chat (every mode but 0) keeps the last --history_turns exchanges and an optional --system prompt:
  --prompt TEXT    one user turn: prints the reply
  a terminal       a conversation; /help, /clear forgets it, /exit or Ctrl-D quits,
                   Ctrl-C stops a reply
  a pipe or file   each non-empty line is the next user turn of one conversation
                   (with --no_history, of a new one), one JSON line each:
                   {"user": ..., "assistant": ...}

The calculator (--calculator, any mode): after each equation the model writes up to its
"=" (3×4=), the result is written for it, as in GRPO's rollouts (inference/calculator.py).

Budget forcing (any mode, s1-style): --max_think_tokens N closes the thinking with
</think><answer> once it reaches N tokens; --min_think_tokens M replaces an earlier
</think> with --continue_word (等等) so the model thinks on.

Batch evaluation (any mode): --eval_file F [--out predictions.jsonl] scores the
model on a chat file's last assistant turns: BLEU-4, ROUGE-1/2/L, loss and
perplexity of the references, generation speed (see evaluation/batch_eval.py).
Comparing --model_mode 0 with --model_mode 1 on one file is the before/after of SFT.

Sampling: --temperature 0 is greedy (plain argmax: no repetition penalty unless you
name one, so outputs match transformers and llama.cpp); with --seed every prompt's output depends
only on the prompt and the seed. Model details go to stderr, so a piped stdout
holds only the outputs.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

import torch

from dataset.chat_formats import CHAT_FORMATS
from evaluation.commands import batch_evaluation
from dataset.preference import PREF_FORMATS
from inference.calculator import Calculator
from inference.budget import DEFAULT_CONTINUE_WORD, ThinkBudget, think_budget
from inference.chat import CHAT_HELP, TEXT_HELP, ChatSession, ReasoningRender, chat_loop, command, write_reply
from inference.generate import generate
from inference.sampling import SamplingConfig, default_repetition_penalty
from common.stages import STAGES
from inference.loading import MODES_HELP, UserError, load, mode_number, mode_stage
from inference.streaming import stream_text
from inference.think_split import ANSWER, ThinkSplitter
from model import SpongeBob
from tokenizer import SpongeTokenizer
from common.cli import OneLineParser

PROMPT_MARKER = "> "


def build_parser() -> argparse.ArgumentParser:
    modes = "\n".join(f"  {s.mode}  {s.name:<10} <out_dir>/{s.checkpoint:<14} {s.what}" for s in STAGES)
    p = OneLineParser(description=__doc__, epilog="model modes:\n" + modes,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer_dir", default=None,
                   help="the tokenizer the model was trained with (default: the one its checkpoint records, "
                        "else the shipped one)")
    p.add_argument("--model_mode", type=mode_number, default=0,
                   help=MODES_HELP + "; a number or a stage name (--model_mode sft); picks the checkpoint in --out_dir")
    p.add_argument("--out_dir", default="out", help="the folder the training stages wrote to (their --out_dir)")
    p.add_argument("--ckpt", default=None, help="checkpoint to load instead of the mode's <out_dir>/<stage>.pth")
    p.add_argument("--prompt", default=None, help="continue this one prompt and exit (default: read stdin)")
    p.add_argument("--max_new_tokens", type=int, default=200, help="most tokens to generate per prompt")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature; 0 = greedy (always the most likely token). "
                        "Default 0.7, or 0 with --eval_file so scores are reproducible")
    p.add_argument("--top_p", type=float, default=0.9,
                   help="nucleus sampling: keep the most likely tokens up to this probability mass; 1 = off")
    p.add_argument("--top_k", type=int, default=0, help="keep only the k most likely tokens; 0 = off")
    # The penalty covers the prompt too; why 1.1 and why greedy gets none: inference/generate.py.
    p.add_argument("--repetition_penalty", type=float, default=None,
                   help="divide the scores of tokens already in the text by this; 1 = off "
                        "(default: 1.1 when sampling, 1 at --temperature 0 so greedy is plain argmax)")
    p.add_argument("--seed", type=int, default=None,
                   help="sampling seed: the same prompt and seed give the same output (default: random)")
    p.add_argument("--system", default=None, help="chat modes: a system prompt that opens every conversation")
    # 3: a tiny model's context fills fast, and SFT data is mostly one or two turns deep.
    p.add_argument("--history_turns", type=int, default=3,
                   help="chat modes: how many past user/assistant exchanges the prompt keeps")
    p.add_argument("--no_history", action="store_true",
                   help="chat modes: every turn starts a new conversation (same as --history_turns 0)")
    p.add_argument("--hide_think", action="store_true", help="mode 2: show only the answer, not the thinking")
    p.add_argument("--calculator", action="store_true",
                   help="a calculator writes the result after each equation's '=' in the replies (as grpo.py "
                        "--calculator): chat, --eval_file and --samples")
    p.add_argument("--max_think_tokens", type=int, default=None,
                   help="budget forcing: force </think><answer> after this many thinking tokens (default: no cap)")
    p.add_argument("--min_think_tokens", type=int, default=0,
                   help="budget forcing: replace an earlier </think> with --continue_word (default 0: off)")
    p.add_argument("--continue_word", default=DEFAULT_CONTINUE_WORD,
                   help="budget forcing: what replaces an early </think> (default 等等; s1 used Wait)")
    p.add_argument("--think_budgets", default=None,
                   help="with --eval_file: compare several --max_think_tokens values, e.g. none,16,64; "
                        "prints one table row each")
    p.add_argument("--eval_file", default=None,
                   help="batch evaluation: a chat file (any format sft.py reads); each conversation's last "
                        "assistant turn is the reference. Reports BLEU-4, ROUGE, loss/perplexity and speed")
    p.add_argument("--samples", type=int, default=0,
                   help="with --eval_file of reasoning problems: also sample this many answers per problem and "
                        "report pass@1..N with 95%% intervals, and how many problems RL could learn from")
    p.add_argument("--sample_temperature", type=float, default=1.0,
                   help="with --samples: the sampling temperature (grpo.py's --temperature; the demo's rollouts use 0.5)")
    p.add_argument("--out", default=None, help="with --eval_file: write predictions JSONL (prompt, label, predict) here")
    p.add_argument("--max_samples", type=int, default=None, help="with --eval_file: evaluate only the first N samples")
    p.add_argument("--data_format", default=None, choices=sorted(set(CHAT_FORMATS) | set(PREF_FORMATS)),
                   help="with --eval_file: read it as this format instead of detecting it")
    p.add_argument("--ref_ckpt", default=None,
                   help="with --eval_file of preference pairs: the reference for DPO's reward (default <out_dir>/sft.pth)")
    p.add_argument("--pref_beta", type=float, default=0.1,
                   help="with --eval_file of preference pairs: beta of DPO's reward (dpo.py's --pref_beta)")
    p.add_argument("--skip_bad", action="store_true",
                   help="with --eval_file: skip and count bad records instead of stopping at the first")
    p.add_argument("--device", default="auto", help="cuda, mps, cpu or auto (cuda, then mps, then cpu)")
    return p


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        parser.error(f"--max_new_tokens {args.max_new_tokens}: must be at least 1")
    if args.temperature is None:
        args.temperature = 0.0 if args.eval_file else 0.7
    if args.temperature < 0:
        parser.error(f"--temperature {args.temperature}: must be 0 (greedy) or more")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top_p {args.top_p}: must be in (0, 1]")
    if args.top_k < 0:
        parser.error(f"--top_k {args.top_k}: must be 0 (off) or more")
    if args.repetition_penalty is None:
        args.repetition_penalty = default_repetition_penalty(args.temperature)
    if args.repetition_penalty <= 0:
        parser.error(f"--repetition_penalty {args.repetition_penalty}: must be above 0 (1 = off)")
    if args.history_turns < 0:
        parser.error(f"--history_turns {args.history_turns}: must be 0 (no history) or more")
    if args.max_samples is not None and args.max_samples < 1:
        parser.error(f"--max_samples {args.max_samples}: must be at least 1")
    if args.eval_file is None and (args.out or args.max_samples or args.data_format or args.skip_bad or args.samples):
        parser.error("--out, --max_samples, --samples, --data_format and --skip_bad go with --eval_file")
    if args.samples < 0 or args.sample_temperature <= 0:
        parser.error(f"--samples {args.samples} must be 0 (off) or more and --sample_temperature "
                     f"{args.sample_temperature:g} above 0")
    if args.eval_file is not None and args.prompt is not None:
        parser.error("--prompt and --eval_file: pick one")
    if args.max_think_tokens is not None and args.max_think_tokens < 0:
        parser.error(f"--max_think_tokens {args.max_think_tokens}: must be 0 or more")
    if args.min_think_tokens < 0 or (args.max_think_tokens is not None
                                     and args.min_think_tokens > args.max_think_tokens):
        parser.error(f"--min_think_tokens {args.min_think_tokens}: must be 0 or more, and at most --max_think_tokens")
    if args.think_budgets is not None:
        if args.eval_file is None:
            parser.error("--think_budgets goes with --eval_file")
        try:
            args.think_budgets = [None if b.strip() == "none" else int(b) for b in args.think_budgets.split(",")]
        except ValueError:
            parser.error(f"--think_budgets {args.think_budgets}: a comma list of token counts or none, e.g. none,16,64")
    if args.model_mode == 0 and args.system is not None:
        parser.error("--system: only the chat modes (--model_mode 1 to 5) take a system prompt")


def continuation(model: SpongeBob, tok: SpongeTokenizer, prompt: str, sampling: SamplingConfig,
                 seed: int | None, device: torch.device, budget: ThinkBudget | None = None) -> Iterator[str]:
    """Stream the text that follows prompt, in chunks that never split a character."""
    # The prompt opens a fresh document: in the packed pretraining stream every
    # document starts right after the <|endoftext|> that ends the one before.
    prompt_ids = [tok.endoftext_id] + tok.encode(prompt)
    generator = None
    if seed is not None:
        # Seeded per prompt, so an output does not depend on the prompts before it.
        generator = torch.Generator(device=device).manual_seed(seed)
    yield from stream_text(tok, generate(model, prompt_ids, sampling, generator=generator, budget=budget))


def write_plain(prompt: str, chunks: Iterable[str], out: TextIO) -> None:
    """The prompt, then its continuation as it is generated."""
    out.write(prompt)
    out.flush()
    for chunk in chunks:
        out.write(chunk)
        out.flush()
    out.write("\n")
    out.flush()


def write_json_line(prompt: str, chunks: Iterable[str], out: TextIO,
                    keys: tuple[str, str] = ("prompt", "continuation")) -> None:
    """One JSON object on one line per prompt, still streamed: the continuation's
    characters are escaped chunk by chunk, so its newlines cannot break the line."""
    out.write(f'{{"{keys[0]}": {json.dumps(prompt, ensure_ascii=False)}, "{keys[1]}": "')
    out.flush()
    for chunk in chunks:
        out.write(json.dumps(chunk, ensure_ascii=False)[1:-1])
        out.flush()
    out.write('"}\n')
    out.flush()


def prompt_lines(stdin: TextIO) -> Iterator[str]:
    """Non-empty lines of a piped stdin, read lazily so a pipe is answered as it arrives."""
    # Read bytes where we can, so bad input is reported with its exact line.
    for line_no, line in enumerate(getattr(stdin, "buffer", stdin), start=1):
        if isinstance(line, bytes):
            try:  # utf-8-sig drops the byte-order mark some Windows editors put first
                line = line.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError:
                raise UserError(f"stdin line {line_no}: not valid UTF-8 text") from None
        line = line.rstrip("\r\n")
        if line.strip():
            yield line


def interactive(answer: Callable[[str], Iterable[str]], out: TextIO) -> None:
    """Prompt, continue, repeat. Ctrl-C stops one generation; Ctrl-D or Ctrl-C at the prompt quits."""
    try:  # line editing and history for input(), where the platform has readline
        importlib.import_module("readline")
    except ImportError:
        pass
    print(TEXT_HELP, file=sys.stderr)
    while True:
        try:
            prompt = input(PROMPT_MARKER)
        except (EOFError, KeyboardInterrupt):
            out.write("\n")
            return
        if not prompt.strip():
            continue
        action = command(prompt)
        if action == "exit":
            return
        if action is not None:  # /help, or /clear, which has nothing to forget here
            print(TEXT_HELP, file=sys.stderr)
            continue
        try:
            write_plain(prompt, answer(prompt), out)
        except KeyboardInterrupt:
            out.write("\n")


def budget_for(args: argparse.Namespace, tok: SpongeTokenizer, max_think_tokens: int | None) -> ThinkBudget | None:
    return think_budget(tok, max_think_tokens, args.min_think_tokens, args.continue_word)


def chat(args: argparse.Namespace, model: SpongeBob, tok: SpongeTokenizer, sampling: SamplingConfig) -> None:
    """Modes 1-3. Mode 2 shows its thinking apart from its answer and keeps only answers in the history."""
    reasoning = mode_stage(args.model_mode).thinks
    session = ChatSession(model, tok, sampling, system=args.system, seed=args.seed,
                          history_turns=0 if args.no_history else args.history_turns,
                          budget=budget_for(args, tok, args.max_think_tokens), keep_thinking=not reasoning)
    render = ReasoningRender(args.hide_think, color=sys.stdout.isatty()) if reasoning else write_reply
    if args.prompt is not None:
        render(session.reply(args.prompt), sys.stdout)
        sys.stdout.write("\n")
    elif sys.stdin.isatty():
        try:  # line editing and history for input(), where the platform has readline
            importlib.import_module("readline")
        except ImportError:
            pass
        chat_loop(session, sys.stdout, render=render)
    else:
        for line in prompt_lines(sys.stdin):
            action = command(line)  # the terminal's commands work in a pipe too
            if action == "exit":
                break
            if action == "clear":
                session.clear()
            elif action == "help":
                print(CHAT_HELP, file=sys.stderr)
            if action is not None:
                continue
            reply = session.reply(line)
            if reasoning and args.hide_think:
                reply = answer_only(reply)
            write_json_line(line, reply, sys.stdout, keys=("user", "assistant"))


def answer_only(chunks: Iterable[str]) -> Iterator[str]:
    """The answer part of a streamed reasoning reply, without its tags."""
    splitter = ThinkSplitter()
    for chunk in chunks:
        yield from (text for kind, text in splitter.feed(chunk) if kind == ANSWER)
    yield from (text for kind, text in splitter.flush() if kind == ANSWER)


def run(args: argparse.Namespace) -> None:
    model, tok, device = load(args)
    # A pretrained model ends a document with <|endoftext|>; <|im_end|> is a
    # chat-turn end that a continuation should not run past either.
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                              stop_ids=(tok.endoftext_id, tok.eos_id),
                              calculator=Calculator.for_tokenizer(tok) if args.calculator else None)
    if args.eval_file is not None:
        batch_evaluation(args, model, tok, sampling)
    elif args.model_mode != 0:
        chat(args, model, tok, sampling)
        return

    def answer(prompt: str) -> Iterator[str]:
        return continuation(model, tok, prompt, sampling, args.seed, device,
                            budget_for(args, tok, args.max_think_tokens))

    if args.prompt is not None:
        write_plain(args.prompt, answer(args.prompt), sys.stdout)
    elif sys.stdin.isatty():
        interactive(answer, sys.stdout)
    else:
        for prompt in prompt_lines(sys.stdin):
            action = command(prompt)
            if action == "exit":
                break
            if action is None:
                write_json_line(prompt, answer(prompt), sys.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        run(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside the interactive loop
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `python eval_model.py < prompts.txt | head`
        # Python would complain again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
