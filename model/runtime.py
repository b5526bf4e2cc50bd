"""Build settings, profile and model from CLI-style options; shared by the model commands and the UI."""

from __future__ import annotations

import argparse
import ctypes
import sys

from model.config import Profile, load_profile
from model.settings import Settings, load_settings


def settings_and_profile(args: argparse.Namespace) -> tuple[Settings, Profile]:
    settings = load_settings(data_dir=getattr(args, "data_dir", None), profile=getattr(args, "profile", None),
                             device=getattr(args, "device", None))
    overrides: dict[str, object] = {}
    if getattr(args, "encoder", None):
        overrides.update(encoder="mert", encoder_path=args.encoder)
    if getattr(args, "llm", None):
        overrides["llm"] = args.llm
    if getattr(args, "adapter", None) is not None:
        overrides["adapter"] = args.adapter
    if getattr(args, "free", False):  # the LLM's own words, not a template's nor the analysis's
        overrides.update(caption_template="", caption_source="model")
    return settings, load_profile(settings.profile, settings.data_dir, **overrides)


def load_model(settings: Settings, profile: Profile, with_encoder: bool = True):
    from model.musilingo import MusiLingo

    return MusiLingo.from_profile(profile, device=settings.resolved_device(), cache_dir=settings.models_dir,
                                  with_encoder=with_encoder)


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed blocks of up to 32 MB for reuse (Linux only; a no-op elsewhere).

    By default it maps large blocks afresh and unmaps them when freed, so every tensor of a long clip's
    spectrum faults its pages in again: the lite encoder spent about as long in the kernel as computing.
    Called once by a process that runs the models over many tracks (a scan).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
    libc.mallopt(m_mmap_threshold, 32 << 20)  # the largest glibc accepts
    libc.mallopt(m_trim_threshold, 1 << 30)
