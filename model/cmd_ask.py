"""Ask questions about one audio file; with no question, an interactive chat that keeps the history.

A profile with `ground_chat` (lite) also tells the model what the analysis heard (tags, tempo, key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.answers import Heard
from model.cli import UserError
from model.runtime import load_model, profile_of
from model.settings import Settings

OPTIONS = ("profile", "device", "models")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="an audio file")
    p.add_argument("question", nargs="?", help="the question; omit it for an interactive loop")
    p.add_argument("--greedy", action="store_true", help="deterministic greedy decoding instead of sampling")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--max-seconds", type=float)


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not Path(args.file).is_file():  # before the model loads
        raise UserError(f"no such audio file: {args.file}")
    profile = profile_of(args, settings)
    model = load_model(settings, profile)
    seconds = args.max_seconds or settings.max_track_seconds
    tokens = model.encoder.encode_file(args.file, seconds)
    context = _context(args.file, settings, seconds) if profile.ground_chat else None
    if args.question:
        gen = model.ask(tokens, args.question, greedy=args.greedy, max_new_tokens=args.max_new_tokens,
                        context=context)
        if args.json:
            print(json.dumps({"file": args.file, "question": args.question, "answer": gen.text,
                              "audio_tokens": gen.n_audio_tokens, "token_ids": gen.token_ids,
                              "context": context.text() if context else None, "profile": profile.name, **gen.extra}))
        else:
            print(gen.text)
        return 0
    history: list[tuple[str, str]] = []
    print(f"Talking about {args.file} ({tokens.shape[0]} audio tokens). Empty line or Ctrl-D ends.", file=sys.stderr)
    while True:
        try:
            question = input("you> ").strip()
        except EOFError:
            break
        if not question:
            break
        print("model> ", end="", flush=True)
        answer = "".join(print(piece, end="", flush=True) or piece for piece in
                         model.stream(tokens, question, history, greedy=args.greedy,
                                      max_new_tokens=args.max_new_tokens, context=context))
        print()
        history.append((question, answer.strip()))
    return 0


def _context(path: str, settings: Settings, seconds: float) -> Heard:
    """What the analysis hears in the file, as the chat model is given it."""
    from model.analysis import Analyzer
    from model.audio import decode_audio

    analyzer = Analyzer(settings.models_dir, settings.resolved_device())
    analysis = analyzer.analyze([decode_audio(path, analyzer.sample_rate, seconds)])[0]
    return analysis.heard()
