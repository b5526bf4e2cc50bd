"""One settings object for every CLI and the UI, read from a TOML file and the environment.

Precedence, lowest first: built-in defaults, the TOML file, MUSILINGO_* environment variables, then
explicit overrides (CLI flags). The TOML file is `$MUSILINGO_CONFIG`, else `<data_dir>/config.toml`.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULT_DATA_DIR = Path("data")
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "musilingo-search"


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
    extra: dict = field(default_factory=dict)

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
    values: dict[str, object] = {}
    extra: dict = {}
    if path.is_file():
        with open(path, "rb") as f:
            raw = tomllib.load(f)
        known = {f.name for f in fields(Settings)} - {"extra"}
        for key, value in raw.items():
            (values if key in known else extra)[key] = value
    for name, var in _ENV.items():
        if var in env and env[var] != "":
            values[name] = env[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["data_dir"] = data_dir if "data_dir" not in values else values["data_dir"]
    settings = Settings(**{k: _coerce(k, v) for k, v in values.items()}, extra=extra)
    return replace(settings)
