"""Training: readers for each published layout, the feature cache, a few steps that lower the loss while
only the adapter changes, resuming from a checkpoint, and the saved adapter's folded normalisation.

Tiny real files in each format are written to tmp_path with real audio (decoded by the project's
decoder, encoded by the lite front-end); the LLM is a 2-layer LLaMA with the real SmolLM2 tokenizer.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from model.checkpoints import load_adapter
from model.config import load_profile
from model.frontend import LiteFrontend
from tests.conftest import write_audio
from tests.harness import tiny_llama_folder, write_profile
from training.datasets import read_dataset
from training.features import FeatureCache, build_cache
from training.train import StandardisedLinear, TrainConfig, match_embedding_norm, train

LITE_DIM = LiteFrontend().dim

CAPS = ["a slow piano piece in a minor key", "a fast guitar tune with drums", "a calm organ drone in major"]
QAS = [("What instrument leads?", "The piano."), ("Is it fast or slow?", "It is fast."),
       ("Which mode is it in?", "It is in a major key.")]


def _write_formats(root: Path) -> dict[str, tuple[Path, str, str]]:
    """One tiny dataset per published layout (three clips, one item of each with a missing clip)."""
    audio = root / "clips"
    for i, name in enumerate(["c0", "c1", "c2"]):
        write_audio(audio / f"{name}.wav", seconds=2.0, seed=i)
    out = {}
    # LP-MusicCaps-MSD: parquet train split, paths relative to the audio folder.
    lp = root / "lp"
    lp.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"track_id": f"T{i}", "caption_writing": c, "path": f"c{i}.wav", "tag": ["x"]} for i, c in enumerate(CAPS)]
    rows.append({"track_id": "T9", "caption_writing": "lost", "path": "gone.wav", "tag": []})
    pq.write_table(pa.Table.from_pylist(rows), lp / "train.parquet")
    (lp / "test.jsonl").write_text(json.dumps(rows[0]) + "\n")
    out["lp-musiccaps-msd"] = (lp, "train", "pretrain")
    # MusicCaps csv, clips named by ytid.
    mc = root / "musiccaps"
    mc.mkdir()
    with open(mc / "musiccaps-public.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["ytid", "start_s", "end_s", "aspect_list", "caption", "is_audioset_eval"])
        for i, c in enumerate(CAPS):
            w.writerow([f"c{i}", 30, 40, "[]", c, "True"])
        w.writerow(["gone", 0, 10, "[]", "lost", "True"])
        w.writerow(["c0", 0, 10, "[]", "train row", "False"])
    out["musiccaps"] = (mc, "test", "pretrain")
    # MusicInstruct JSON.
    mi = root / "mi"
    mi.mkdir()
    qa = [{"question": q, "answer": a, "ytid": f"c{i}", "sampling_rate": 48000, "is_audioset_eval": False}
          for i, (q, a) in enumerate(QAS)]
    qa.append({"question": "q", "answer": "a", "ytid": "gone", "is_audioset_eval": False})
    (mi / "MusicInstruct.json").write_text(json.dumps({"QA": qa}))
    out["musicinstruct"] = (mi, "train", "finetune")
    # MusicQA.
    mq = root / "musicqa"
    mq.mkdir()
    conv = [{"audio_name": f"c{i}.wav", "conversation": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}
            for i, (q, a) in enumerate(QAS)]
    conv.append({"audio_name": "gone.wav", "conversation": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]})
    (mq / "FinetuneMusicQA.json").write_text(json.dumps(conv))
    out["musicqa"] = (mq, "train", "finetune")
    # Synthetic corpus metadata.jsonl.
    sy = root / "synth"
    sy.mkdir()
    with open(sy / "metadata.jsonl", "w") as f:
        for i, (c, (q, a)) in enumerate(zip(CAPS, QAS, strict=True)):
            f.write(json.dumps({"id": f"s{i}", "file": f"../clips/c{i}.wav", "labels": {"mode": "major", "tempo_class": "slow",
                                "instrument_family": "piano"}, "caption": c,
                                "qa": [{"attribute": "mode", "question": q, "answer": a}]}) + "\n")
        f.write(json.dumps({"id": "s9", "file": "audio/gone.wav", "caption": "lost", "qa": []}) + "\n")
    out["synth"] = (sy, "all", "finetune")
    for kind in ("musiccaps", "musicinstruct", "musicqa"):
        for i in range(3):
            target = out[kind][0] / "audio" / f"c{i}.wav"
            target.parent.mkdir(exist_ok=True)
            target.write_bytes((audio / f"c{i}.wav").read_bytes())
    for i in range(3):
        (lp / f"c{i}.wav").write_bytes((audio / f"c{i}.wav").read_bytes())
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    llm_dir = tiny_llama_folder(root / "llm")
    profile_path = write_profile(root / "tiny-lite.toml", encoder="lite", llm=str(llm_dir), adapter="",
                                 pool_window=325, context_seconds=1.0)
    profile = load_profile(profile_path)
    formats = _write_formats(root)
    caches = {}
    for kind, (path, split, _) in formats.items():
        result = read_dataset(kind, path, split)
        caches[kind] = root / "cache" / kind
        build_cache(result.items, caches[kind], profile, log=lambda m: None)
    return root, profile_path, profile, formats, caches


def _llm(setup):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = setup[0]
    llm = AutoModelForCausalLM.from_pretrained(root / "llm", dtype=torch.float32).eval().requires_grad_(False)
    return llm, AutoTokenizer.from_pretrained(root / "llm")


def test_readers_count_missing_audio(setup) -> None:
    _, _, _, formats, _ = setup
    for kind, (path, split, _) in formats.items():
        result = read_dataset(kind, path, split)
        n_items = 6 if kind == "synth" else 3
        assert len(result.items) == n_items, kind
        assert result.missing_audio == 1, kind
        assert all(it.audio_path.is_file() for it in result.items)
        assert "missing audio" in result.report()
    assert len(read_dataset("musiccaps", formats["musiccaps"][0], "train").items) == 1
    assert read_dataset("musicinstruct", formats["musicinstruct"][0], "test").items == []
    items = read_dataset("musicqa", formats["musicqa"][0], "train").items
    assert items[0].question == "What instrument leads?" and items[0].answer == "The piano."


def test_feature_cache(setup) -> None:
    _, _, profile, formats, caches = setup
    cache = FeatureCache.open(caches["musiccaps"], profile)
    assert len(cache) == 3 and cache.dim == LITE_DIM
    tokens = cache.get(cache.keys()[0])
    assert tokens.shape == (1, LITE_DIM)  # 2 s -> 149 frames -> 1 token of 325 frames
    assert (caches["musiccaps"] / profile.version("encoder") / "index.json").is_file()
    other = load_profile(setup[1], pool_window=100)
    with pytest.raises(Exception, match="encoder version"):
        FeatureCache.open(caches["musiccaps"], other)


def _config(setup, kind: str, tmp: Path, **kw) -> TrainConfig:
    _, profile_path, _, formats, caches = setup
    path, split, stage = formats[kind]
    base = dict(stage=stage, profile=str(profile_path), datasets=[{"kind": kind, "root": str(path), "split": split,
                                                                    "cache": str(caches[kind])}],
                lr=1e-1, min_lr=3e-2, warmup_lr=1e-1, warmup_steps=0, iters_per_epoch=8, epochs=1, batch_size=3,
                grad_accum=1, mixed_precision="no", normalise_inputs=True, log_every=100, checkpoint_every=0,
                output=str(tmp / "adapter.safetensors"), checkpoint_dir=str(tmp / "ckpt"), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _mean_loss(llm, tok, cfg: TrainConfig, adapter_path: str) -> float:
    from training.train import build_model, load_training_items

    cfg = TrainConfig(**{**cfg.__dict__, "init_adapter": adapter_path})
    model, profile = build_model(cfg, "cpu", llm, tok)
    items, tokens, _ = load_training_items(cfg, profile)
    with torch.no_grad():
        q = [it.question for it in items] if cfg.stage != "pretrain" else None
        return float(model.loss([tokens[it.audio_key] for it in items], [it.answer for it in items], q))


@pytest.mark.parametrize("kind", ["lp-musiccaps-msd", "musiccaps", "musicinstruct", "musicqa", "synth"])
def test_steps_lower_the_loss_and_only_the_adapter_changes(setup, kind, tmp_path) -> None:
    from model.checkpoints import save_adapter

    llm, tok = _llm(setup)
    before = {k: v.clone() for k, v in llm.state_dict().items()}
    torch.manual_seed(0)
    init = torch.nn.Linear(LITE_DIM, llm.config.hidden_size)
    save_adapter(init, tmp_path / "init.safetensors")
    cfg = _config(setup, kind, tmp_path, init_adapter=str(tmp_path / "init.safetensors"))
    summary = train(cfg, llm=llm, tokenizer=tok, log=lambda m: None)
    after = llm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the frozen LLM changed"
    assert not torch.allclose(summary["adapter"].weight, init.weight)
    loss0 = _mean_loss(llm, tok, cfg, str(tmp_path / "init.safetensors"))
    loss1 = _mean_loss(llm, tok, cfg, cfg.output)
    assert loss1 < loss0 - 0.005, (kind, loss0, loss1)  # deterministic; the random tiny LLM barely reacts to 1 token
    linear, meta = load_adapter(Path(cfg.output), LITE_DIM, llm.config.hidden_size)
    assert meta["stage"] == cfg.stage and meta["steps"] == 8 and meta["pool_window"] == 325


def test_bias_lr_scale_moves_the_bias_at_its_own_rate(setup, tmp_path) -> None:
    from model.checkpoints import save_adapter

    llm, tok = _llm(setup)
    torch.manual_seed(0)
    init = torch.nn.Linear(LITE_DIM, llm.config.hidden_size)
    save_adapter(init, tmp_path / "init.safetensors")
    moved = {}
    for scale in (0.0, 1.0):
        cfg = _config(setup, "synth", tmp_path / str(scale), init_adapter=str(tmp_path / "init.safetensors"),
                      normalise_inputs=False, bias_lr_scale=scale)
        adapter = train(cfg, llm=llm, tokenizer=tok, log=lambda m: None)["adapter"]
        assert not torch.allclose(adapter.weight, init.weight)
        moved[scale] = (adapter.bias - init.bias).abs().max().item()
    assert moved[0.0] == 0.0 and moved[1.0] > 1e-3


def test_summary_captions_and_the_profile_instruction(setup, tmp_path) -> None:
    from training.train import load_training_items

    profile = setup[2]
    cfg = _config(setup, "synth", tmp_path, caption_target="summary", include_qa=False, caption_repeat=2)
    items, _, _ = load_training_items(cfg, profile)
    assert len(items) == 6  # 3 clips with audio, each caption twice, no QA pairs
    assert {it.answer for it in items} == {"A slow piano piece in a major key."}
    assert {it.question for it in items} == {profile.caption_instruction}
    with_qa, _, _ = load_training_items(_config(setup, "synth", tmp_path, caption_instruction="Describe it."), profile)
    assert sorted(it.question for it in with_qa)[0] == "Describe it." and len(with_qa) == 6
    assert {it.answer for it in with_qa if it.question == "Describe it."} == set(CAPS)
    other, _, _ = load_training_items(_config(setup, "synth", tmp_path, qa_attributes=["tempo_class"]), profile)
    assert len(other) == 3 and all(it.question == profile.caption_instruction for it in other)
    with pytest.raises(SystemExit, match="needs synthetic labels"):
        load_training_items(_config(setup, "musiccaps", tmp_path, caption_target="summary"), profile)
    with pytest.raises(SystemExit, match="caption_target"):
        load_training_items(_config(setup, "synth", tmp_path, caption_target="short"), profile)


def test_label_word_init_points_audio_tokens_at_the_label_words(setup, tmp_path) -> None:
    from training.train import StandardisedLinear, label_word_init, load_training_items

    llm, tok = _llm(setup)
    table = llm.get_input_embeddings().weight
    items, tokens, _ = load_training_items(_config(setup, "synth", tmp_path), setup[2])
    rows = torch.cat([tokens[k] for k in {it.audio_key for it in items}])
    adapter = StandardisedLinear.from_raw(torch.nn.Linear(LITE_DIM, table.shape[1]), rows.mean(0), rows.std(0))
    fit = label_word_init(adapter, items, tokens, ["instrument_family", "tempo_class", "mode"], tok, table)
    assert math.isnan(fit)  # every clip has the same labels: nothing to explain, R^2 undefined
    target = sum(table[tok(" " + w, add_special_tokens=False).input_ids].mean(0) for w in ("piano", "slow", "major"))
    with torch.no_grad():
        cos = torch.nn.functional.cosine_similarity(adapter(rows), target.expand(len(rows), -1), dim=1)
    assert cos.min() > 0.99  # every clip is a slow piano piece in a major key
    with pytest.raises(SystemExit, match="init_label_words"):
        label_word_init(adapter, items, tokens, ["style"], tok, table)


def test_build_model_finds_the_profile_in_the_settings_data_dir(setup, tmp_path) -> None:
    from model.settings import Settings
    from training.train import build_model

    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "tiny-lite.toml").write_text(setup[1].read_text())
    cfg = _config(setup, "synth", tmp_path, profile="tiny-lite")
    model, profile = build_model(cfg, "cpu", settings=Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache"))
    assert profile.name == "tiny-lite" and model.d_llm == 64 and model.adapter.in_features == LITE_DIM


def test_resume_reproduces_an_uninterrupted_run(setup, tmp_path) -> None:
    whole = _config(setup, "synth", tmp_path / "a", checkpoint_every=3)
    llm, tok = _llm(setup)
    full = train(whole, llm=llm, tokenizer=tok, log=lambda m: None)["adapter"]
    part = _config(setup, "synth", tmp_path / "b", checkpoint_every=3)
    llm, tok = _llm(setup)
    first = train(part, stop_after=5, llm=llm, tokenizer=tok, log=lambda m: None)
    assert first["steps"] == 5 and "output" not in first
    assert sorted(p.name for p in (tmp_path / "b" / "ckpt").glob("step-*")) == ["step-0000003", "step-0000005"]
    llm, tok = _llm(setup)
    logs = []
    resumed = train(part, llm=llm, tokenizer=tok, log=logs.append)
    assert any("resumed from" in line and "step 5" in line for line in logs)
    assert resumed["steps"] == 8
    torch.testing.assert_close(resumed["adapter"].weight, full.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(resumed["adapter"].bias, full.bias, rtol=0, atol=1e-6)
    blob = torch.load(tmp_path / "b" / "ckpt" / "step-0000008" / "optimizer.pt", weights_only=True)
    assert "optimizer" in blob


def test_standardisation_folds_into_a_plain_linear() -> None:
    torch.manual_seed(0)
    raw = torch.nn.Linear(5, 3)
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    x = torch.randn(4, 5) * std + mean
    wrapped = StandardisedLinear.from_raw(raw, mean, std)
    torch.testing.assert_close(wrapped(x), raw(x), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        wrapped.linear.weight.add_(0.1)
    folded = wrapped.folded()
    assert type(folded) is torch.nn.Linear
    torch.testing.assert_close(folded(x), wrapped(x), atol=1e-5, rtol=1e-5)


def test_fresh_adapter_starts_at_the_word_embedding_norm() -> None:
    torch.manual_seed(0)
    rows = torch.randn(300, LITE_DIM) * 3 + 1
    adapter = StandardisedLinear.from_raw(torch.nn.Linear(LITE_DIM, 64), rows.mean(0), rows.std(0))
    words = torch.randn(1000, 64) * 0.1
    before = adapter(rows).norm(dim=1).mean()
    scale = match_embedding_norm(adapter, rows, words)
    after = adapter(rows).norm(dim=1).mean()
    assert scale < 0.5  # the default init is several times larger than these words
    torch.testing.assert_close(after, words.norm(dim=1).mean(), rtol=1e-4, atol=0)
    torch.testing.assert_close(after, before * scale, rtol=1e-4, atol=0)


def test_eval_reports_metrics_and_the_no_audio_baseline(setup, tmp_path, capsys) -> None:
    from model.checkpoints import save_adapter
    from training.cli import main

    _, profile_path, _, formats, caches = setup
    torch.manual_seed(0)
    save_adapter(torch.nn.Linear(LITE_DIM, 64), tmp_path / "a.safetensors")
    assert main(["eval", "--dataset", "synth", "--root", str(formats["synth"][0]), "--split", "all",
                 "--cache", str(caches["synth"]), "--profile", str(profile_path), "--adapter", str(tmp_path / "a.safetensors"),
                 "--device", "cpu", "--data-dir", str(tmp_path), "--limit", "2", "--qa-attributes", "mode",
                 "--batch", "4", "--max-new-tokens", "6", "--qa-max-new-tokens", "4", "--baseline", "--shuffled",
                 "--forced-choice", "--samples", str(tmp_path / "s.jsonl"), "--json", "--out", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["items"] == 4 and report["clips"] == 2
    for run in ("audio", "no_audio", "shuffled_audio"):
        assert set(report[run]["caption_attribute_accuracy"]) <= {"instrument_family", "tempo_class", "mode"}
        assert report[run]["qa_accuracy"]["n"] == 2
        assert "bleu4_corpus" in report[run]["captioning"]["standard"]
        assert "rougeL_recall_mean" in report[run]["qa"]["published"]
    for run in ("audio", "shuffled_audio"):
        assert set(report[run]["caption_forced_choice"]) == {"instrument_family", "tempo_class", "mode"}
        assert all(v["n"] == 2 for v in report[run]["caption_forced_choice"].values())
    assert "caption_forced_choice" not in report["no_audio"]
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert len(lines) == 12
    base = [json.loads(x) for x in lines if json.loads(x)["run"] == "no_audio"]
    assert len({b["generated"] for b in base if b["question"] is None}) == 1  # same prompt, same greedy text


def test_shuffled_tokens_give_every_clip_another_clips_audio() -> None:
    from training.datasets import Item
    from training.evaluate import shuffled_tokens

    items = [Item(f"c{i}#{k}", None, None, "a", f"c{i}") for i in range(3) for k in range(2)]
    tokens = {f"c{i}": torch.full((2, 4), float(i)) for i in range(3)}
    swapped = shuffled_tokens(items, tokens)
    assert set(swapped) == set(tokens)
    assert all(not torch.equal(swapped[k], tokens[k]) for k in tokens)  # nobody keeps its own audio
    assert sorted(float(v[0, 0]) for v in swapped.values()) == [0.0, 1.0, 2.0]  # each clip's audio used once
    with pytest.raises(ValueError, match="two clips"):
        shuffled_tokens(items[:2], tokens)
