"""Feature cache: the encoder + temporal compression run once per clip, training reads the tokens.

Layout (no pickles anywhere):

    CACHE/<encoder version>/index.json        {"version", "profile", "encoder", "dim", "pool_window",
                                                "clips": {audio_key: {"shard", "name", "tokens"}},
                                                "missing": [...], "failed": {...}}
    CACHE/<encoder version>/shard-00000.safetensors   tensors "c<n>": fp32 [T', D] per clip

`<encoder version>` is `profile.version("encoder")`, a hash of everything that shapes the tokens
(encoder kind and weights path, pooling window, chunking), so a cache built by another pipeline is
never read by mistake: `FeatureCache.open` refuses a version mismatch. Building is resumable: clips
already in the index are skipped and each shard is written atomically, then the index.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import Profile
from training.datasets import Item

SHARD_CLIPS = 512


class CacheError(RuntimeError):
    pass


def cache_folder(root: str | Path, profile: Profile) -> Path:
    return Path(root) / profile.version("encoder")


def _atomic_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class FeatureCache:
    """Compressed audio tokens by audio key, loaded into memory (a few KB per clip)."""

    def __init__(self, folder: Path, index: dict) -> None:
        self.folder = folder
        self.index = index
        self._tokens: dict[str, torch.Tensor] = {}
        by_shard: dict[str, list[tuple[str, str]]] = {}
        for key, entry in index["clips"].items():
            by_shard.setdefault(entry["shard"], []).append((key, entry["name"]))
        for shard, names in by_shard.items():
            with safe_open(str(folder / shard), framework="pt") as f:
                for key, name in names:
                    self._tokens[key] = f.get_tensor(name).float()

    @classmethod
    def open(cls, root: str | Path, profile: Profile) -> FeatureCache:
        folder = cache_folder(root, profile)
        index_path = folder / "index.json"
        if not index_path.is_file():
            found = sorted(p.name for p in Path(root).glob("*/index.json")) if Path(root).is_dir() else []
            raise CacheError(f"no feature cache for encoder version {profile.version('encoder')} under {root}"
                             + (f" (found other versions: {found})" if found else "")
                             + "; build it with `python -m training cache-features`")
        index = json.loads(index_path.read_text())
        if index.get("version") != profile.version("encoder"):
            raise CacheError(f"{index_path}: built by encoder version {index.get('version')}, "
                             f"the profile needs {profile.version('encoder')}")
        return cls(folder, index)

    @property
    def dim(self) -> int:
        return int(self.index["dim"])

    def __contains__(self, key: str) -> bool:
        return key in self._tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def get(self, key: str) -> torch.Tensor:
        return self._tokens[key]

    def keys(self) -> list[str]:
        return list(self._tokens)

    def stats(self, keys: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-dimension mean and std over every token of the given clips (all clips by default)."""
        keys = keys if keys is not None else self.keys()
        rows = torch.cat([self._tokens[k] for k in keys if self._tokens[k].shape[0]])
        return rows.mean(0), rows.std(0)


def _segment(wave: np.ndarray, item: Item, sr: int) -> np.ndarray:
    """Cut [start_s, end_s] out of a full-length file; a file already cut to the clip is used whole."""
    if item.start_s is None or item.end_s is None:
        return wave
    if wave.shape[-1] >= int(item.end_s * sr) and item.start_s > 0:
        return wave[int(item.start_s * sr): int(item.end_s * sr)]
    return wave


def build_cache(items: list[Item], root: str | Path, profile: Profile, device: str = "cpu",
                batch: int = 8, log=None) -> dict:
    """Encode every distinct clip of `items` not yet cached; returns the updated index."""
    from model.encoder import Encoder

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    folder = cache_folder(root, profile)
    folder.mkdir(parents=True, exist_ok=True)
    index_path = folder / "index.json"
    encoder = Encoder.from_profile(profile, device, batch_size=batch)
    if index_path.is_file():
        index = json.loads(index_path.read_text())
    else:
        index = {"version": profile.version("encoder"), "profile": profile.name, "encoder": profile.encoder,
                 "encoder_path": profile.encoder_path, "pool_window": profile.pool_window, "dim": encoder.dim,
                 "clips": {}, "failed": {}}
    clips: dict[str, Item] = {}
    for item in items:
        clips.setdefault(item.audio_key, item)
    todo = [it for key, it in clips.items() if key not in index["clips"]]
    say(f"cache-features: {len(clips)} clips, {len(clips) - len(todo)} cached, {len(todo)} to encode "
        f"(encoder version {index['version']})")
    start = time.monotonic()
    n_shard = len({e["shard"] for e in index["clips"].values()})
    for s in range(0, len(todo), SHARD_CLIPS):
        part = todo[s: s + SHARD_CLIPS]
        tensors: dict[str, torch.Tensor] = {}
        entries: dict[str, dict] = {}
        shard = f"shard-{n_shard:05d}.safetensors"
        for b in range(0, len(part), batch):
            waves, keys = [], []
            for item in part[b: b + batch]:
                try:
                    wave = encoder.load(item.audio_path)
                except Exception as exc:  # an undecodable file is recorded, never replaced
                    index["failed"][item.audio_key] = str(exc)[:200]
                    continue
                waves.append(_segment(wave, item, encoder.sample_rate))
                keys.append(item.audio_key)
            for key, tokens in zip(keys, encoder.encode(waves), strict=True):
                name = f"c{len(tensors)}"
                tensors[name] = tokens.float().contiguous()
                entries[key] = {"shard": shard, "name": name, "tokens": int(tokens.shape[0])}
            done = s + min(b + batch, len(part))
            if done % (batch * 25) < batch:
                rate = done / max(time.monotonic() - start, 1e-6)
                say(f"cache-features: {done}/{len(todo)} clips, {rate:.1f} clips/s")
        if tensors:
            tmp = folder / f".{shard}.{os.getpid()}.tmp"
            save_file(tensors, str(tmp), metadata={"version": index["version"]})
            os.replace(tmp, folder / shard)
            index["clips"].update(entries)
            n_shard += 1
        _atomic_json(index_path, index)
    say(f"cache-features: done in {time.monotonic() - start:.1f}s; {len(index['clips'])} clips cached, "
        f"{len(index['failed'])} undecodable")
    return index
