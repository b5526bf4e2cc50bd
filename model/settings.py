"""One settings object for every CLI and the UI, read from a TOML file and the environment.

Precedence, lowest first: built-in defaults, the TOML file, MUSILINGO_* environment variables, then
explicit overrides (CLI flags). The TOML file is `$MUSILINGO_CONFIG`, else `<data_dir>/config.toml`; it
holds the fields of `Settings` at its top level and the UI's options in a `[ui]` table. An unknown key
is an error (ConfigError), not silently kept: a misspelt `decode_worker = 4` would otherwise do nothing.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

DEFAULT_DATA_DIR = Path("data")
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "musilingo-search"


class ConfigError(ValueError):
    """A settings file or variable holds a key or value this version does not know; the message names it."""


def reject_unknown_keys(keys: Iterable[str], known: Sequence[str], where: str) -> None:
    """A ConfigError naming each of `keys` that is not `known`, and the known ones: a misspelt key is a
    mistake to point at, not an option to ignore."""
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys: {', '.join(unknown)}; known: {', '.join(known)}")


@dataclass(frozen=True)
class Settings:
    data_dir: Path = DEFAULT_DATA_DIR
    cache_dir: Path = DEFAULT_CACHE_DIR  # converted model weights, shared by every data dir
    roots: tuple[str, ...] = ()
    profile: str = "lite"
    device: str = "auto"  # "auto" picks cuda when present, else cpu
    encode_batch_size: int = 4
    caption_batch_size: int = 8
    decode_workers: int = 1
    max_track_seconds: float = 900.0  # longer files are indexed from a bounded window
    max_upload_mb: int = 50
    ui: dict = field(default_factory=dict)  # the TOML's [ui] table, read by ui/views/common.py

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.cache_dir / "models"

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


_ENV = {
    "data_dir": "MUSILINGO_DATA_DIR",
    "cache_dir": "MUSILINGO_CACHE_DIR",
    "roots": "MUSILINGO_ROOTS",
    "profile": "MUSILINGO_PROFILE",
    "device": "MUSILINGO_DEVICE",
    "encode_batch_size": "MUSILINGO_ENCODE_BATCH_SIZE",
    "caption_batch_size": "MUSILINGO_CAPTION_BATCH_SIZE",
    "decode_workers": "MUSILINGO_DECODE_WORKERS",
    "max_track_seconds": "MUSILINGO_MAX_TRACK_SECONDS",
    "max_upload_mb": "MUSILINGO_MAX_UPLOAD_MB",
}


def _coerce(name: str, value: object) -> object:
    kind = {f.name: f.type for f in fields(Settings)}[name]
    if name in ("data_dir", "cache_dir"):
        return Path(str(value)).expanduser()
    if name == "roots":
        if isinstance(value, str):
            value = [v for v in value.split(os.pathsep) if v]
        return tuple(str(Path(v).expanduser()) for v in value)  # type: ignore[union-attr]
    if name == "ui":
        if not isinstance(value, dict):
            raise TypeError("expected a table ([ui])")
        return dict(value)
    if kind == "int":
        return int(value)  # type: ignore[arg-type]
    if kind == "float":
        return float(value)  # type: ignore[arg-type]
    return str(value)


def load_settings(config: str | Path | None = None, **overrides: object) -> Settings:
    """Build the settings; `overrides` with value None are ignored so CLI flags can pass through."""
    env = os.environ
    data_dir = overrides.get("data_dir") or env.get(_ENV["data_dir"]) or DEFAULT_DATA_DIR
    path = Path(config or env.get("MUSILINGO_CONFIG") or Path(data_dir) / "config.toml")
    if config and not path.is_file():
        raise ConfigError(f"no settings file at {path}")
    values: dict[str, object] = {}
    source: dict[str, str] = {}  # where each value came from, for the error message
    if path.is_file():
        try:
            with open(path, "rb") as f:
                values = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        reject_unknown_keys(values, [f.name for f in fields(Settings)], str(path))
        source = dict.fromkeys(values, str(path))
    for name, var in _ENV.items():
        if env.get(var):
            values[name], source[name] = env[var], f"${var}"
    for name, value in overrides.items():
        if value is not None:
            values[name], source[name] = value, "the command line"
    values.setdefault("data_dir", data_dir)
    coerced = {}
    for key, value in values.items():
        try:
            coerced[key] = _coerce(key, value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{key} = {value!r} (from {source.get(key, 'the defaults')}): {exc}") from None
    return Settings(**coerced)
