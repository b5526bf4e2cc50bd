"""Shared fixtures. Indexer fixtures: real audio files in eight formats, and the lite models loaded once."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO / "data" / "models"  # the converted LLM cache, shared so tests load it in about a second
# The search tests' library and its fixtures (`library`, `engine`, `scratch`), built only where a test asks.
pytest_plugins = ["tests.search_library"]

# suffix -> (container, codec, sample format, rate)
AUDIO_FORMATS = {
    ".wav": ("wav", "pcm_s16le", "s16", 44100), ".flac": ("flac", "flac", "s16", 44100),
    ".mp3": ("mp3", "libmp3lame", "fltp", 44100), ".ogg": ("ogg", "vorbis", "fltp", 44100),
    ".opus": ("ogg", "libopus", "s16", 48000), ".m4a": ("ipod", "aac", "fltp", 44100),
    ".aiff": ("aiff", "pcm_s16be", "s16", 44100), ".wma": ("asf", "wmav2", "fltp", 44100),
}
_ID3_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "album_artist": "TPE2", "genre": "TCON",
               "date": "TDRC", "track": "TRCK"}


def synth_wave(seconds: float, seed: int, rate: int) -> np.ndarray:
    """A distinct little piece per seed: a chord, a pulse at its own tempo and some noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    root = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    chord = sum(np.sin(2 * np.pi * root * r * t) for r in (1.0, 1.26, 1.5)) / 3
    bpm = rng.uniform(70, 170)
    pulse = np.exp(-((t * bpm / 60) % 1.0) * 12.0) * rng.standard_normal(t.size)
    return (0.3 * chord + 0.2 * pulse + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def write_audio(path: str | Path, seconds: float = 3.0, seed: int = 0, tags: dict | None = None) -> Path:
    """Encode a synthetic stereo piece with PyAV in the format the suffix names; tags as in FFmpeg metadata
    (title, artist, album, album_artist, genre, date, track), written as ID3 for WAV and AIFF."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    container, codec, sample_fmt, rate = AUDIO_FORMATS[path.suffix.lower()]
    stereo = np.stack([synth_wave(seconds, seed, rate)] * 2)
    with av.open(str(path), "w", format=container) as out:
        if tags and path.suffix.lower() not in (".wav", ".aiff"):
            out.metadata.update({k: str(v) for k, v in tags.items()})
        stream = out.add_stream(codec, rate=rate, layout="stereo")
        stream.bit_rate = 128000
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        for start in range(0, stereo.shape[1], 1024):
            chunk = stereo[:, start:start + 1024]
            if sample_fmt == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16).T.reshape(1, -1)
            else:
                data = np.ascontiguousarray(chunk)
            frame = av.AudioFrame.from_ndarray(data, format=sample_fmt, layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    if tags and path.suffix.lower() in (".wav", ".aiff"):
        import mutagen
        from mutagen import id3

        f = mutagen.File(path)
        f.add_tags()
        for key, value in tags.items():
            f.tags.add(getattr(id3, _ID3_FRAMES[key])(encoding=3, text=[str(value)]))
        f.save()
    return path


@pytest.fixture
def audio_library(tmp_path: Path):
    """Factory: `audio_library("Artist/Album/01 Song.flac", seconds=3, seed=1, tags={...})` writes a real file
    under `<tmp_path>/library` and returns its path; `audio_library.root` is that folder."""
    root = tmp_path / "library"
    root.mkdir()

    def make(rel: str, seconds: float = 3.0, seed: int = 0, tags: dict | None = None) -> Path:
        return write_audio(root / rel, seconds, seed, tags)

    make.root = root
    return make


@pytest.fixture(scope="session")
def lite_model():
    """MusiLingo with the real `lite` profile, a fresh (random) adapter and short captions, with its encoder."""
    from model.config import load_profile
    from model.musilingo import MusiLingo

    profile = load_profile("lite", adapter="", max_new_tokens=8, caption_template="")  # free, short: fast
    return MusiLingo.from_profile(profile, "cpu", cache_dir=MODELS_DIR, with_encoder=True)


@pytest.fixture(scope="session")
def text_embedder():
    from model.config import load_profile
    from model.textembed import TextEmbedder

    return TextEmbedder(load_profile("lite").text_embedder)


@pytest.fixture
def indexer_settings(tmp_path: Path):
    """Settings for a fresh data dir (the models come from the settings' cache dir, shared by every data dir)."""
    from model.settings import load_settings

    data = tmp_path / "data"
    data.mkdir()
    return load_settings(data_dir=data, decode_workers=1, device="cpu")


@pytest.fixture
def indexer_models(lite_model, text_embedder, indexer_settings):
    """The scan's model bundle built from the session models (nothing loads twice). Torch runs on one
    thread meanwhile: on a shared 2-core machine two spinning threads make generation 5-10x slower."""
    import torch

    from indexer.indexing import Models

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Models(lite_model.profile, indexer_settings, encoder=lite_model.encoder, musilingo=lite_model,
                 text=text_embedder)
    torch.set_num_threads(threads)
