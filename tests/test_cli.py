"""The four command lines share one runner (model/cli.py): one error path, one config path, one pattern.

User errors run as a user runs them, `python -m X ...` in a subprocess, and must end in one line
`error: ...` on stderr (or {"ok": false, "error": ...} on stdout with --json) and exit status 2, never a
traceback; no case loads a model. --help is checked in-process for every subcommand.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from model.runtime import profile_of, settings_and_profile, settings_of
from model.settings import ConfigError, load_settings
from tests.harness import tiny_llama_folder, tiny_mert_folder, tone

REPO = Path(__file__).resolve().parents[1]


def cli(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSILINGO_")}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def assert_user_error(done: subprocess.CompletedProcess, as_json: bool, says: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "Traceback" not in output
    if as_json:
        assert len(done.stdout.splitlines()) == 1 and done.stderr == "", output
        found = json.loads(done.stdout)
        assert set(found) == {"ok", "error"} and found["ok"] is False and says in found["error"]
    else:
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], output


CASES = [  # (argv, what the message says, --json); each CLI in both forms, where a case is cheap
    (["model", "caption", "missing.wav", "--profile", "musilingo"], "not found", False),
    (["model", "caption", "missing.wav", "--profile", "musilingo"], "not found", True),
    (["model", "caption", "x.wav", "--profile", "nosuch"], "unknown profile 'nosuch'; known: lite", False),
    (["model", "tags"], "the following arguments are required: files", True),
    (["search", "x"], "no catalog at", False),
    (["search", "--bpm", "abc", "x"], "--bpm abc", True),
    (["training", "eval", "--dataset", "nosuch", "--root", "/nonexistent"], "unknown dataset kind 'nosuch'", False),
    (["training", "pretrain", "--config", "/nonexistent.toml"], "nonexistent.toml", True),
    (["indexer", "status"], "unknown keys: decode_worker; known: data_dir", False),
    (["indexer", "status"], "unknown keys: decode_worker; known: data_dir", True),
]


@pytest.mark.parametrize("argv,says,as_json", CASES, ids=[f"{c[0][0]}-{i}" for i, c in enumerate(CASES)])
def test_user_errors_are_one_line_and_status_2(argv: list[str], says: str, as_json: bool, tmp_path: Path) -> None:
    if argv[0] == "indexer":
        (tmp_path / "config.toml").write_text("decode_worker = 4\n")
    done = cli(*argv, "--data-dir", str(tmp_path), *(["--json"] if as_json else []))
    assert_user_error(done, as_json, says)


@pytest.mark.parametrize("package,commands", [
    ("model", ["caption", "ask", "tags", "prepare", "profiles"]),
    ("indexer", ["scan", "status", "forget", "verify"]),
    ("search", ["find", "like", "track", "stats", "facets"]),
    ("training", ["cache-features", "pretrain", "finetune", "export", "eval"]),
])
def test_help_works_for_every_subcommand(package: str, commands: list[str], capsys) -> None:
    main = __import__(f"{package}.cli", fromlist=["main"]).main
    for argv in (["--help"], *([name, "--help"] for name in commands)):
        with pytest.raises(SystemExit) as done:
            main(argv)
        out = capsys.readouterr().out
        assert done.value.code == 0 and out.startswith(f"usage: python -m {package}"), argv
        assert all(name in out for name in commands) if argv == ["--help"] else "--data-dir" in out


def test_settings_reject_unknown_keys_and_know_the_ui_table(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('decode_workers = 2\n[ui]\npage_size = 10\n')
    settings = load_settings(data_dir=tmp_path)
    assert settings.decode_workers == 2 and settings.ui == {"page_size": 10}
    (tmp_path / "config.toml").write_text('profile = "lite"\nmax_uplod_mb = 5\n')
    with pytest.raises(ConfigError, match="unknown keys: max_uplod_mb; known: .*max_upload_mb"):
        load_settings(data_dir=tmp_path)
    (tmp_path / "config.toml").write_text("encode_batch_size = 'four'\n")
    with pytest.raises(ConfigError, match="encode_batch_size = 'four'"):
        load_settings(data_dir=tmp_path)


def test_cli_options_override_settings(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MUSILINGO_PROFILE", raising=False)
    monkeypatch.delenv("MUSILINGO_DEVICE", raising=False)
    (tmp_path / "config.toml").write_text('profile = "musilingo"\ndevice = "cuda:1"\n')
    settings, profile = settings_and_profile(argparse.Namespace(data_dir=str(tmp_path)))
    assert (settings.profile, settings.device, profile.name) == ("musilingo", "cuda:1", "musilingo")
    args = argparse.Namespace(data_dir=str(tmp_path), profile="lite", device="cpu")
    assert (settings_of(args).profile, settings_of(args).device) == ("lite", "cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return tiny_mert_folder(root / "mert"), tiny_llama_folder(root / "llm")


def test_a_mert_checkpoint_on_lite_runs_the_musilingo_profile(tiny, tmp_path: Path) -> None:
    mert, llm = tiny
    settings = load_settings(data_dir=tmp_path, profile="lite")
    given = argparse.Namespace(encoder=str(mert), llm=str(llm), adapter="")
    profile = profile_of(given, settings)
    published = profile_of(argparse.Namespace(), load_settings(data_dir=tmp_path, profile="musilingo"))
    assert profile.name == "musilingo" and (profile.encoder, profile.encoder_path, profile.llm, profile.adapter) == \
        ("mert", str(mert), str(llm), "")
    for field in ("prompt", "caption_instruction", "caption_template", "caption_source", "ground_chat",
                  "max_new_tokens", "repetition_penalty", "temperature", "top_p"):
        assert getattr(profile, field) == getattr(published, field), field
    assert profile.caption_source == "model" and profile.caption_template == "" and not profile.ground_chat
    # --llm and --adapter alone keep the chosen profile
    kept = profile_of(argparse.Namespace(llm=str(llm), adapter=""), settings)
    assert kept.name == "lite" and kept.caption_source == "analysis" and kept.llm == str(llm)


def test_caption_with_a_mert_checkpoint_says_which_profile_ran(tiny, tmp_path: Path, capsys) -> None:
    from model.cli import main

    mert, llm = tiny
    clip = tmp_path / "clip.wav"
    with wave.open(str(clip), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(24000)
        w.writeframes((tone(5.0) * 32767).astype("<i2").tobytes())
    assert main(["caption", str(clip), "--encoder", str(mert), "--llm", str(llm), "--adapter", "", "--json",
                 "--greedy", "--max-new-tokens", "3", "--device", "cpu", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr()
    row = json.loads(out.out)
    assert row["profile"] == "musilingo" and "caption_source" not in row and row["decoding"] == "greedy"
    assert "Loading weights" not in out.err


def test_search_flags_and_subcommands_print_the_same(library, capsys) -> None:
    from search.cli import main

    data, rows = library[0], library[1]
    track = str(rows[0]["id"])
    pairs = [(["--stats"], ["stats"]), (["--facets", "--mode", "minor"], ["facets", "--mode", "minor"]),
             (["--track", track], ["track", track]), (["piano", "--bpm", "60-160"], ["find", "piano", "--bpm", "60-160"]),
             (["--like", "/nowhere.mp3"], ["like", "/nowhere.mp3"])]  # the library has no audio index: an error
    for flags, subcommand in pairs:
        outputs = []
        for argv in (flags, subcommand):
            assert main([*argv, "--json", "--data-dir", str(data)]) == (2 if "--like" in flags else 0), argv
            outputs.append(capsys.readouterr())
        assert outputs[0].out == outputs[1].out and outputs[0].err == outputs[1].err, flags
        assert outputs[0].out.strip(), flags
