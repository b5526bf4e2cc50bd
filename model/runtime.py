"""The one path from CLI-style options to settings, profile and model: every CLI (through model/cli.py)
and the UI resolve them here, so a command and the app never disagree on the catalog or the profile."""

from __future__ import annotations

import argparse
import ctypes
import sys

from model.config import Profile, load_profile, resolve_path
from model.settings import Settings, load_settings

PUBLISHED_PROFILE = "musilingo"  # what a MERT checkpoint given on a lite-encoder profile runs with


def settings_of(args: argparse.Namespace | None = None) -> Settings:
    """Settings from the shared options (--config, --data-dir, --profile, --device); an option a command
    does not have, or leaves out, falls through to the environment, the TOML file and the defaults."""
    return load_settings(getattr(args, "settings_file", None), data_dir=getattr(args, "data_dir", None),
                         profile=getattr(args, "profile", None), device=getattr(args, "device", None))


def profile_of(args: argparse.Namespace | None, settings: Settings, **overrides: object) -> Profile:
    """The settings' profile with this run's model options (--encoder, --llm, --adapter, --free) applied,
    then `overrides` (a command's own fixed choices, e.g. a fresh adapter).

    A MERT checkpoint (--encoder) given on a profile whose encoder is the lite front-end runs the published
    `musilingo` profile instead: its prompt, instruction, decoding and model-written captions are what a
    MERT-based adapter was trained with, where lite's template and analysis captions would hide its words.
    """
    name = settings.profile
    options: dict[str, object] = {}
    if getattr(args, "encoder", None):
        if load_profile(name, settings.data_dir).encoder == "lite":
            name = PUBLISHED_PROFILE
        options.update(encoder="mert", encoder_path=args.encoder)
    if getattr(args, "llm", None):
        options["llm"] = args.llm
    if getattr(args, "adapter", None) is not None:
        options["adapter"] = args.adapter
    if getattr(args, "free", False):  # the LLM's own words, not a template's nor the analysis's
        options.update(caption_template="", caption_source="model")
    return load_profile(name, settings.data_dir, **{**options, **overrides})


def settings_and_profile(args: argparse.Namespace | None = None) -> tuple[Settings, Profile]:
    """Settings and profile from CLI-style options; with none, from the environment and the TOML file (the UI)."""
    settings = settings_of(args)
    return settings, profile_of(args, settings)


def model_locations(profile: Profile) -> dict[str, str]:
    """Where each model a profile names is ('' for the adapter: a fresh one), by part."""
    found = {"llm": profile.llm, "text_embedder": profile.text_embedder, "adapter": profile.adapter}
    if profile.encoder == "mert":
        found["encoder"] = profile.encoder_path
    return found


def load_model(settings: Settings, profile: Profile, with_encoder: bool = True):
    """The profile's MusiLingo; a missing model is reported at once, before torch and transformers load."""
    for part, location in model_locations(profile).items():
        if location and part != "text_embedder" and (with_encoder or part != "encoder"):
            resolve_path(location)
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
