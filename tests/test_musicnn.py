"""musicnn in torch: the TF checkpoint reader, the port against the original TensorFlow outputs, the input."""

from __future__ import annotations

import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from model.config import ModelNotFoundError, resolve_path
from model.musicnn import (
    PATCH_FRAMES,
    Musicnn,
    convert,
    load_config,
    log_mel,
    mel_filterbank,
    patch_spectrograms,
    patch_starts,
    patches,
    tagger_names,
)
from model.tfcheckpoint import TABLE_MAGIC, CheckpointFormatError, CheckpointReader
from tests.conftest import MODELS_DIR

FIXTURE = Path(__file__).parent / "fixtures" / "musicnn_reference.safetensors"
TAGGERS = ("MSD_musicnn", "MTT_musicnn")


# -- a TF checkpoint bundle written by the test, in the table + protobuf layout TF's Saver uses ----------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _block(entries: list[tuple[bytes, bytes]], restart_every: int = 2) -> bytes:
    """A table block with prefix-compressed keys and a restart point every `restart_every` entries."""
    body, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_every == 0:
            restarts.append(len(body))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        body += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    body += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(body)


def write_bundle(prefix: Path, tensors: dict[str, np.ndarray], per_block: int = 3) -> None:
    """Write `PREFIX.index` + `PREFIX.data-00000-of-00001` holding `tensors` (float32/int32/int64 arrays)."""
    dtype_ids = {np.dtype("<f4"): 1, np.dtype("<i4"): 3, np.dtype("<i8"): 9}
    data, entries = bytearray(), [(b"", _field(1, 1) + _field(2, 0))]  # the header: one shard, little-endian
    for name in sorted(tensors):
        array = np.asarray(tensors[name])
        shape = b"".join(_field(2, _field(1, d)) for d in array.shape)
        proto = (_field(1, dtype_ids[array.dtype]) + _field(2, shape) + _field(4, len(data))
                 + _field(5, array.nbytes))
        entries.append((name.encode(), proto))
        data += array.tobytes()
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(data))
    table, index = bytearray(), []
    for start in range(0, len(entries), per_block):
        chunk = entries[start:start + per_block]
        block = _block(chunk)
        index.append((chunk[-1][0], _varint(len(table)) + _varint(len(block))))
        table += block + b"\0\0\0\0\0"  # compression type 0 and an (unchecked) CRC
    meta_offset = len(table)
    meta = _block([])
    table += meta + b"\0" * 5
    index_offset = len(table)
    index_block = _block(index)
    table += index_block + b"\0" * 5
    handles = _varint(meta_offset) + _varint(len(meta)) + _varint(index_offset) + _varint(len(index_block))
    table += handles.ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    Path(f"{prefix}.index").write_bytes(bytes(table))


def test_reader_reads_a_bundle_written_here(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {
        "conv2d/kernel": rng.standard_normal((7, 38, 1, 4)).astype(np.float32),
        "conv2d/bias": rng.standard_normal(4).astype(np.float32),
        "conv2d_1/kernel": rng.standard_normal((3, 5)).astype(np.float32),
        "conv2d_10/kernel": np.arange(6, dtype=np.int32).reshape(2, 3),
        "dense/kernel": rng.standard_normal((9, 2)).astype(np.float32),
        "global_step": np.array(1234, dtype=np.int64),
        "scalar": np.array(0.5, dtype=np.float32),
    }
    write_bundle(tmp_path / "model", tensors)
    reader = CheckpointReader(tmp_path / "model")
    assert reader.names() == sorted(tensors)
    for name, expected in tensors.items():
        got = reader.read(name)
        assert got.dtype == expected.dtype and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected)
    with pytest.raises(KeyError, match="no tensor 'missing'"):
        reader.read("missing")


def test_reader_refuses_what_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(CheckpointFormatError, match="no checkpoint index"):
        CheckpointReader(tmp_path / "absent")
    (tmp_path / "junk.index").write_bytes(b"\1" * 100)
    with pytest.raises(CheckpointFormatError, match="bad magic"):
        CheckpointReader(tmp_path / "junk")
    write_bundle(tmp_path / "short", {"w": np.ones(1000, dtype=np.float32)})
    data = tmp_path / "short.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CheckpointFormatError, match="ends before"):
        CheckpointReader(tmp_path / "short").read("w")


def test_the_packaged_checkpoints_hold_every_parameter_of_the_port() -> None:
    for name in TAGGERS:
        config = load_config(name)
        reader = CheckpointReader(str(resolve_path(config.checkpoint)) + "/")
        model = Musicnn(config)
        mapping = model.tf_names()
        params = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
        assert set(mapping) == params
        tf_weights = {n for n in reader.names() if "Adam" not in n and not n.endswith("_power")}
        assert {tf for tf, _ in mapping.values()} == tf_weights  # every TF weight used, none twice
        assert sum(int(np.prod(reader.entries[n].shape)) for n in tf_weights) == sum(
            p.numel() for p in model.state_dict().values() if p.dtype.is_floating_point)


# -- the port against TensorFlow: tests/fixtures/musicnn_reference.safetensors, from scripts/musicnn_reference.py


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    return load_file(FIXTURE)


@pytest.mark.parametrize("name", TAGGERS)
def test_port_equals_the_tensorflow_original(name: str, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    model = Musicnn(load_config(name))
    model.load_tf_checkpoint(str(resolve_path(model.config.checkpoint)) + "/")
    out = model.tag(reference["patches"])
    np.testing.assert_allclose(out.probabilities.numpy(), reference[f"{name}.probabilities"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.penultimate.numpy(), reference[f"{name}.penultimate"], atol=1e-4, rtol=0)
    for pooled in ("mean_pool", "max_pool"):  # large activations: float32 summation order shows past 1e-4
        np.testing.assert_allclose(getattr(out, pooled).numpy(), reference[f"{name}.{pooled}"], rtol=1e-5, atol=1e-3)
    # the four inputs are told apart (a failed restore would tag them alike, as the original then does)
    assert np.abs(np.diff(out.probabilities.numpy(), axis=0)).max() > 0.1
    # the safetensors conversion carries exactly these weights
    cached = Musicnn.from_pretrained(name, tmp_path)
    assert torch.equal(cached.tag(reference["patches"]).probabilities, out.probabilities)


@pytest.mark.parametrize("name", TAGGERS)
def test_pruned_tagger_gives_the_same_outputs(name: str, reference: dict[str, np.ndarray], tmp_path: Path) -> None:
    """Dropping the dead front-end filters changes nothing a caller sees, and drops many of them."""
    full = Musicnn.from_pretrained(name, tmp_path)
    pruned = Musicnn.from_pretrained(name, tmp_path).prune()
    dropped = pruned.pruned
    assert dropped > 200 and pruned.prune().pruned == dropped  # once is enough
    x = np.concatenate([reference["patches"], log_mel(reference["audio"][::-1].copy())[None, :PATCH_FRAMES]])
    a, b = full.tag(x), pruned.tag(x)
    for field in ("probabilities", "penultimate", "mean_pool", "max_pool"):
        np.testing.assert_allclose(getattr(b, field).numpy(), getattr(a, field).numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(b.probabilities.numpy()[:4], reference[f"{name}.probabilities"], atol=1e-4, rtol=0)


def test_prune_drops_exactly_the_dead_filters() -> None:
    """A random tagger with some filters zeroed: those, and only those, go; the outputs stay."""
    torch.manual_seed(0)
    model = Musicnn(replace(load_config("MTT_musicnn"), frontend_scale=0.25))
    dead = {0: [1, 5, 7], 2: [0, 3]}
    with torch.no_grad():
        for branch, filters in dead.items():
            model.frontend[branch].conv.weight[filters] = 1e-30
    x = np.random.default_rng(0).standard_normal((3, PATCH_FRAMES, 96)).astype(np.float32)
    before = model.tag(x)
    model.prune()
    assert model.pruned == 5
    assert [b.conv.out_channels for b in model.frontend] == [32 - 3, 32, 8 - 2, 8, 8]
    after = model.tag(x)
    np.testing.assert_allclose(after.max_pool.numpy(), before.max_pool.numpy(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(after.probabilities.numpy(), before.probabilities.numpy(), atol=1e-6, rtol=0)


def test_input_equals_the_original_log_mel(reference: dict[str, np.ndarray]) -> None:
    assert PATCH_FRAMES == int(reference["n_frames"][0])
    ours = log_mel(reference["audio"])[:PATCH_FRAMES]
    np.testing.assert_allclose(ours, reference["patches"][0], atol=1e-4, rtol=0)


def test_mel_filterbank_is_slaney_normalised() -> None:
    bank = mel_filterbank()
    assert bank.shape == (96, 257)
    bins = np.linspace(0, 8000, 257)
    # area normalisation: each triangle integrates to ~1 over frequency in Hz
    areas = bank.sum(axis=1) * (bins[1] - bins[0])
    assert np.allclose(areas, 1.0, atol=0.08)
    peaks = bins[bank.argmax(axis=1)]
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > 7000 and peaks[0] < 100


def test_loud_audio_stays_finite_and_short_audio_is_repeated() -> None:
    t = np.arange(16000 * 4) / 16000
    loud = np.clip(np.sign(np.sin(2 * np.pi * 110 * t)), -1, 1).astype(np.float32)
    spec = log_mel(loud)
    assert np.isfinite(spec).all() and spec.max() > np.log10(65504 + 1)  # past float16's range
    short = log_mel(loud[:4096])  # a quarter second: 16 hops, repeated to fill the patch
    assert short.shape == (PATCH_FRAMES, 96)
    np.testing.assert_allclose(short[40:60], short[40 + 16:60 + 16], atol=1e-3)
    with pytest.raises(ValueError, match="no audio"):
        log_mel(np.zeros(0, dtype=np.float32))


@pytest.mark.parametrize("seconds", [0.01, 2.9, 3.0, 20.0, 61.3, 240.0])
def test_patch_spectrograms_are_the_whole_spectrograms_patches(seconds: float) -> None:
    """Only the patches' frames are computed, and they are exactly those of the whole track's log-mel."""
    wave = (0.3 * np.random.default_rng(1).standard_normal(int(seconds * 16000))).astype(np.float32)
    whole = log_mel(wave)
    starts, cut = patch_spectrograms(wave, 6)
    assert starts == patch_starts(len(whole), 6)
    np.testing.assert_array_equal(cut, patches(whole, 6))


def test_patch_starts_follow_the_original_then_spread() -> None:
    assert patch_starts(187) == [0]
    assert patch_starts(373) == [0]  # one whole patch and a bit: the original drops the remainder
    assert patch_starts(187 * 10 + 5) == [187 * i for i in range(10)]  # 30 s: every patch
    long = patch_starts(187 * 40, max_patches=10)
    assert len(long) == 10 and long[0] == 0 and long[-1] == 187 * 39
    assert all(b - a >= 187 for a, b in zip(long, long[1:], strict=False))
    spec = np.zeros((187 * 40, 96), dtype=np.float32)
    assert patches(spec, max_patches=4).shape == (4, 187, 96)


def test_missing_package_names_the_install_command(tmp_path: Path) -> None:
    config = replace(load_config("MTT_musicnn"), checkpoint="pkg:musicnn_not_here/MTT_musicnn/")
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps musicnn-not-here"):
        convert(config, tmp_path)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_tagger_registry_spells_labels_as_the_original() -> None:
    assert tagger_names() == sorted(TAGGERS)
    msd = load_config("MSD_musicnn").labels
    mtt = load_config("MTT_musicnn").labels
    assert len(msd) == len(mtt) == 50
    assert {"Progressive rock", "Hip-Hop", "female vocalists", "House"} <= set(msd)
    assert {"no vocals", "male vocal", "harpsichord", "techno"} <= set(mtt)
    with pytest.raises(KeyError, match="known: MSD_musicnn, MTT_musicnn"):
        load_config("nope")


def test_pretrained_tags_tell_music_apart() -> None:
    """A real behaviour check on the real weights: a loud distorted square wave is not 'quiet' or 'classical'."""
    model = Musicnn.from_pretrained("MTT_musicnn", MODELS_DIR)
    t = np.arange(16000 * 6) / 16000
    loud = np.clip(np.sign(np.sin(2 * np.pi * 110 * t)) * 0.9, -1, 1).astype(np.float32)
    quiet = (0.01 * np.sin(2 * np.pi * 440 * t) * np.exp(-(t % 1.5) * 3)).astype(np.float32)
    probs = {name: model.tag(patches(log_mel(w))).probabilities.mean(0) for name, w in
             (("loud", loud), ("quiet", quiet))}
    idx = {label: i for i, label in enumerate(model.labels)}
    assert probs["loud"][idx["loud"]] > probs["quiet"][idx["loud"]]
    assert probs["quiet"][idx["quiet"]] > probs["loud"][idx["quiet"]]
