"""Render MIDI bytes to mono float audio with the FluidSynth CLI and a General MIDI soundfont.

Needs the Debian packages `fluidsynth` and `fluid-soundfont-gm` (or $SYNTH_SOUNDFONT pointing at any GM
.sf2). Output level is a fixed gain, never normalised per clip, so soft and loud dynamics stay audible;
a soft knee above 0.9 keeps the rare dense, loud peak from clipping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import wave
from pathlib import Path

import numpy as np

SOUNDFONT_ENV = "SYNTH_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/default.sf2",
)
INSTALL_HINT = "install the Debian packages: apt-get install fluidsynth fluid-soundfont-gm"
DEFAULT_SAMPLE_RATE = 24000
DEFAULT_GAIN = 0.7
FADE_SECONDS = 0.05


class SynthUnavailable(RuntimeError):
    """FluidSynth or a General MIDI soundfont is missing."""


def find_fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise SynthUnavailable(f"the `fluidsynth` program is not on PATH; {INSTALL_HINT}")
    return exe


def find_soundfont(path: str | Path | None = None) -> Path:
    candidates = [path] if path else [os.environ.get(SOUNDFONT_ENV), *SOUNDFONT_CANDIDATES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    where = path or f"${SOUNDFONT_ENV} or {', '.join(SOUNDFONT_CANDIDATES)}"
    raise SynthUnavailable(f"no General MIDI soundfont found at {where}; {INSTALL_HINT}")


def unavailable_reason() -> str | None:
    """None when rendering works here, else why not (for pytest skips and CLI errors)."""
    try:
        find_fluidsynth()
        find_soundfont()
    except SynthUnavailable as exc:
        return str(exc)
    return None


def render_midi(midi: bytes, seconds: float | None = None, sample_rate: int = DEFAULT_SAMPLE_RATE,
                gain: float = DEFAULT_GAIN, soundfont: str | Path | None = None,
                timeout: float = 300.0) -> np.ndarray:
    """Render Standard MIDI File bytes to mono float32 at `sample_rate`.

    With `seconds`, the result is exactly that long: trimmed (with a short fade) or zero-padded.
    """
    exe = find_fluidsynth()
    sf2 = find_soundfont(soundfont)
    with tempfile.TemporaryDirectory(prefix="synth-") as tmp:
        mid_path = Path(tmp) / "in.mid"
        raw_path = Path(tmp) / "out.raw"
        mid_path.write_bytes(midi)
        # Dynamic sample loading reads only the samples the piece uses: half the start-up time.
        cmd = [exe, "-ni", "-q", "-g", f"{gain:g}", "-r", str(int(sample_rate)), "-O", "float", "-T", "raw",
               "-E", "little", "-o", "synth.cpu-cores=1", "-o", "synth.dynamic-sample-loading=1",
               "-F", str(raw_path), str(sf2), str(mid_path)]
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not raw_path.is_file():
            err = proc.stderr.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"fluidsynth failed (exit {proc.returncode}): {err}")
        stereo = np.fromfile(raw_path, dtype="<f4")
    audio = stereo[: stereo.size // 2 * 2].reshape(-1, 2).mean(axis=1)
    if seconds is not None:
        n = int(round(seconds * sample_rate))
        if audio.size >= n:
            audio = audio[:n].copy()
            fade = min(int(FADE_SECONDS * sample_rate), n)
            audio[n - fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        else:
            audio = np.pad(audio, (0, n - audio.size))
    return soft_limit(np.nan_to_num(audio)).astype(np.float32)


def soft_limit(audio: np.ndarray, knee: float = 0.9) -> np.ndarray:
    """Identity below `knee`, then a tanh curve that approaches (but never reaches) 1.0."""
    out = audio.astype(np.float32, copy=True)
    over = np.abs(out) > knee
    if over.any():
        head = 1.0 - knee
        x = np.abs(out[over]) - knee
        out[over] = np.sign(out[over]) * (knee + head * np.tanh(x / head))
    return out


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write mono 16-bit PCM, atomically (a half-written file never has the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype("<i2")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with wave.open(str(tmp), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM wav as mono float32 and its sample rate."""
    with wave.open(str(path), "rb") as w:
        rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        if width != 2:
            raise ValueError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return data.reshape(-1, channels).mean(axis=1), rate
