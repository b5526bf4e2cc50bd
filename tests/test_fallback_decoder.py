"""The second decoder and the lying header, through the real decoders and a real scan.

The file FFmpeg refuses is real Ogg Vorbis whose identification header carries one byte more than its
defined 30: libvorbis, and so libsndfile, reads the fields the header defines and ignores the rest,
while FFmpeg's Ogg demuxer insists on exactly 30 bytes and fails ("Header processing failed: Invalid
data found when processing input"), as it does on such files in the wild. The lying WAV holds one
second of audio under a header that promises 0xFFFFFFF0 bytes, 74 hours at 8 kHz.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
from sqlalchemy import text

from catalog.store import Catalog
from indexer.cli import main as cli
from indexer.pipeline import scan
from indexer.ray_engine import decode_batch
from model.audio import AudioDecodeError, read_audio
from tests import hostile
from tests.conftest import write_audio

RATE = hostile.RATE
LIE = 0xFFFFFFF0  # the data size the lying WAV's header claims, in bytes


def ogg_crc(data: bytes) -> int:
    """The CRC of an Ogg page (its checksum field zeroed): CRC-32, polynomial 0x04C11DB7, MSB first, start 0."""
    crc = 0
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1) & 0xFFFFFFFF
    return crc


def refused_by_ffmpeg(path: Path, seconds: float = 3.0, seed: int = 4) -> tuple[Path, Path]:
    """An Ogg Vorbis file whose identification header is 31 bytes, and the 30-byte original it was made from.

    The first page holds that header alone (the Ogg Vorbis mapping requires it), so it is rewritten
    whole: one lacing value one larger, a zero byte after the header's framing flag, a new CRC.
    """
    original = write_audio(path.with_name(f"original-{path.name}"), seconds, seed)
    blob = original.read_bytes()
    segments, size = blob[26], blob[27]
    assert blob[:4] == b"OggS" and segments == 1 and size == 30 and blob[28:35] == b"\x01vorbis"
    page = bytearray(blob[:26] + bytes([1, size + 1]) + blob[28:28 + size] + b"\0")
    page[22:26] = bytes(4)
    page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(page) + blob[28 + size:])
    return path, original


def lying_wav(path: Path) -> Path:
    """One second of a 440 Hz tone at 8 kHz whose RIFF and data sizes both claim 0xFFFFFFF0 bytes."""
    blob = bytearray(hostile.write_wav(path, hostile.tone(1.0, 8000), 8000).read_bytes())
    assert blob[36:40] == b"data"
    struct.pack_into("<I", blob, 4, LIE)
    struct.pack_into("<I", blob, 40, LIE)
    path.write_bytes(bytes(blob))
    return path


def test_ffmpeg_refuses_the_file_and_libsndfile_reads_it_whole(tmp_path: Path) -> None:
    path, original = refused_by_ffmpeg(tmp_path / "long-id-header.ogg")
    with pytest.raises(av.error.InvalidDataError):
        av.open(str(path))
    got, reference = read_audio(path, RATE), read_audio(original, RATE)
    assert (got.decoder, reference.decoder) == ("libsndfile", "ffmpeg")
    # libvorbis and FFmpeg's own Vorbis decoder agree to float rounding on the same packets
    assert got.wave.dtype == np.float32 and got.wave.size == reference.wave.size
    assert got.wave.size == pytest.approx(3.0 * RATE, abs=0.01 * RATE)
    np.testing.assert_allclose(got.wave, reference.wave, atol=1e-5)
    # the window and the offset bound libsndfile's reading as they bound FFmpeg's
    assert read_audio(path, RATE, max_seconds=1.0).wave.size == RATE
    window = read_audio(path, RATE, max_seconds=1.0, offset_seconds=1.5).wave
    np.testing.assert_allclose(window[100:-100], reference.wave[int(1.5 * RATE):][100:RATE - 100], atol=1e-4)


def test_a_file_neither_decoder_reads_is_refused_with_both_reasons(tmp_path: Path) -> None:
    path, _ = hostile.random_bytes(tmp_path)  # named .mp3, which libsndfile must not take for MPEG from its name
    with pytest.raises(AudioDecodeError) as refused:
        read_audio(path, RATE)
    assert str(refused.value) == ("ffmpeg: cannot open as media: Invalid data found when processing input; "
                                  "libsndfile: Format not recognised")


def _rows(settings, query: str) -> list:
    with Catalog(settings.catalog_path).read() as conn:
        return conn.execute(text(query)).all()


def test_scan_stores_the_decoder_and_the_decoded_length(audio_library, indexer_settings, indexer_models, capsys):
    root = audio_library.root
    refused, _ = refused_by_ffmpeg(root / "Vorbis" / "long-id-header.ogg")
    os.remove(root / "Vorbis" / "original-long-id-header.ogg")
    liar = lying_wav(root / "Liar" / "one-second.wav")
    plain = audio_library("Plain/Album/01 Plain.flac", seconds=2.0, seed=2)
    garbage, _ = hostile.random_bytes(root)
    run = dict(models=indexer_models, greedy=True)

    summary = scan([str(root)], indexer_settings, indexer_models.profile, **run)
    assert summary.state == "finished" and len(summary.indexed) == 3
    stored = {p: (d, duration, header) for p, d, duration, header in _rows(
        indexer_settings, "SELECT path, decoder, duration, header_duration FROM tracks")}
    assert {p: d for p, (d, _, _) in stored.items()} == {
        str(refused): "libsndfile", str(liar): "ffmpeg", str(plain): "ffmpeg"}
    assert stored[str(refused)][1] == pytest.approx(3.0, abs=0.05) and stored[str(refused)][2] is None
    assert stored[str(plain)][1] == pytest.approx(2.0, abs=0.05) and stored[str(plain)][2] is None
    _, duration, header = stored[str(liar)]
    assert duration == pytest.approx(1.0, abs=0.01) and header == pytest.approx(LIE / 16000, abs=1)
    assert [f["reason"] for f in summary.failed] == [
        "ffmpeg: cannot open as media: Invalid data found when processing input; libsndfile: Format not recognised"]
    assert _rows(indexer_settings, "SELECT path FROM errors") == [(str(garbage),)]

    out = summary.to_dict()  # what `python -m indexer scan --json` prints
    assert out["decoders"] == {"ffmpeg": 2, "libsndfile": 1}
    assert [w["path"] for w in out["warnings"]] == [str(liar)] and out["counts"]["warnings"] == 1
    assert out["warnings"][0]["reason"] == (f"the header claims {LIE / 16000:.1f} s of audio, decoding found 1.0 s: "
                                            "the decoded duration is stored")

    data = ["--data-dir", str(indexer_settings.data_dir)]
    assert cli(["status", *data, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["decoders"] == {"ffmpeg": 2, "libsndfile": 1} and status["header_mismatches"] == 1
    assert status["header_mismatch_tracks"] == [
        {"path": str(liar), "duration": pytest.approx(1.0, abs=0.01), "header_duration": pytest.approx(LIE / 16000)}]
    assert cli(["status", *data]) == 0
    said = capsys.readouterr().out
    assert "decoded by ffmpeg: 2, libsndfile: 1" in said and f"header {LIE / 16000:.1f} s, decoded 1.0 s" in said

    # A move keeps what decoding found: the header, read again, does not bring the 74 hours back.
    moved = root / "Moved" / "one-second.wav"
    moved.parent.mkdir()
    os.rename(liar, moved)
    again = scan([str(root)], indexer_settings, indexer_models.profile, **run)
    assert again.indexed == [] and len(again.moved) == 1 and again.decoders == {} and again.warnings == []
    assert _rows(indexer_settings, f"SELECT decoder, round(duration, 2), header_duration > 0 FROM tracks "
                                   f"WHERE path = '{moved}'") == [("ffmpeg", 1.0, True)]


def test_the_ray_decode_stage_carries_the_decoder_and_the_header_figure(tmp_path: Path) -> None:
    """Ray's decode task hands each file's tags to the shard, and with them what decoding found."""
    refused, _ = refused_by_ffmpeg(tmp_path / "long-id-header.ogg")
    liar = lying_wav(tmp_path / "one-second.wav")
    rows = [{"path": str(p), "root": str(tmp_path), "size": p.stat().st_size, "mtime": p.stat().st_mtime,
             "fingerprint": "f", "track_id": None, "reason": "new"} for p in (refused, liar)]
    table = decode_batch(pa.Table.from_pylist(rows), RATE, 60.0)
    tags = {r["path"]: json.loads(r["tags"]) for r in table.to_pylist()}
    assert tags[str(refused)]["decoder"] == "libsndfile" and tags[str(refused)]["header_duration"] is None
    assert tags[str(liar)]["decoder"] == "ffmpeg" and tags[str(liar)]["duration"] == pytest.approx(1.0, abs=0.01)
    assert tags[str(liar)]["header_duration"] == pytest.approx(LIE / 16000)
