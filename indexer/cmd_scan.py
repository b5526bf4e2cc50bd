"""Scan library folders (default: the settings' roots) into the catalog.

Indexes new, changed and stale files, keeps moved ones and drops deleted ones. Safe to interrupt: a
rerun resumes where the last commit left off.
"""

from __future__ import annotations

import argparse
import signal

from model.cli import emit
from model.runtime import profile_of
from model.settings import Settings

OPTIONS = ("profile",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="*", metavar="PATH", help="library folders or files")
    p.add_argument("--recaption", action="store_true", help="caption every track again from its stored tokens")
    p.add_argument("--greedy", action="store_true", help="greedy decoding: the same caption every time")
    p.add_argument("--limit-seconds", type=float, metavar="S",
                   help="index at most S seconds of each file (default: settings.max_track_seconds)")
    p.add_argument("--commit-every", type=int, default=8, metavar="N", help="tracks per transaction (default 8)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process and its decode workers; ray: Ray Data (see docs/scaling.md)")
    p.add_argument("--address", help="with --engine ray: the cluster to join ('auto', host:6379, ray://...); "
                                     "default: start a local Ray")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the scan like Ctrl-C: committed work is kept


def run(args: argparse.Namespace, settings: Settings) -> int:
    roots = args.paths or list(settings.roots)
    profile = profile_of(args, settings)
    signal.signal(signal.SIGTERM, _terminate)
    options = dict(recaption=args.recaption, greedy=args.greedy, limit_seconds=args.limit_seconds,
                   commit_every=max(1, args.commit_every), progress=not args.json)
    if args.engine == "ray":
        from indexer.ray_engine import run_ray_scan

        summary = run_ray_scan(roots, settings, profile, args.address, **options)
    else:
        from indexer.pipeline import scan

        summary = scan(roots, settings, profile, **options)
    c = summary.to_dict()["counts"]
    lines = [f"scan {summary.scan_id} {summary.state}: {c['files']} files, {c['indexed']} indexed, {c['moved']} moved, "
             f"{c['removed']} removed, {c['recaptioned']} recaptioned, {c['unchanged']} unchanged, "
             f"{c['failed']} failed, {c['skipped_failed']} skipped (failed before, unchanged)",
             f"audio: {summary.audio_seconds:.1f} s in {summary.wall_seconds:.1f} s "
             f"({summary.audio_per_wall_second:.1f}x realtime)"]
    if summary.decoders:
        lines.append("decoded by " + ", ".join(f"{name} ({n})" for name, n in sorted(summary.decoders.items())))
    if summary.stage_seconds:
        lines.append("busy seconds per stage (stages overlap): "
                     + ", ".join(f"{stage} {seconds:.1f}" for stage, seconds in summary.stage_seconds.items()))
    lines += [f"rebuilt {name} index: {'; '.join(problems)}" for name, problems in summary.index_repairs.items()]
    lines += [f"{stage} batch size cut from {b['start']} to {b['final']} after running out of GPU memory"
              for stage, b in summary.batch_sizes.items() if b["final"] < b["start"]]
    lines += [f"failed: {f['path']}: {f['stage']}: {f['reason']}" for f in summary.failed]
    lines += [f"warning: {w['path']}: {w['reason']}" for w in summary.warnings]
    emit(args, {"ok": summary.state == "finished", **summary.to_dict()}, "\n".join(lines))
    return 0 if summary.state == "finished" else 130
