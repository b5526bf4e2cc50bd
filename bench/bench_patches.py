"""How many musicnn patches a track needs: tags and caption words from a few patches against every patch.

    python bench/bench_patches.py [--counts 2 3 4 5 6 10] FILE...

For each audio file (real recordings you have; none are committed), the tags of both taggers averaged
over every non-overlapping 3-s patch of the track are the reference; `model.musicnn.patch_starts` then
picks N patches spread over the track, as `Analyzer` does with `MAX_PATCHES`. Per N, the mean over files
of: the mean absolute tag-probability error, the share of the reference's top-5 tags among N's top 5,
and the Jaccard overlap of the words model/describe.py would say (instruments, genres, moods, vocals).
Not a test.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.analysis import Analyzer, TrackAnalysis  # noqa: E402
from model.audio import decode_audio  # noqa: E402
from model.musicnn import PATCH_FRAMES, SAMPLE_RATE, log_mel, patch_starts  # noqa: E402
from model.settings import load_settings  # noqa: E402


def heard(analyzer: Analyzer, mel: np.ndarray, starts: list[int]) -> tuple[np.ndarray, set]:
    """Both taggers' tags averaged over the patches at `starts`, and the words the track's description
    (`TrackAnalysis.describe`, the instrument head included) says of them."""
    batch = torch.from_numpy(np.stack([mel[s:s + PATCH_FRAMES] for s in starts]))
    probabilities, embeds = {}, []
    with torch.inference_mode():
        for name, model in analyzer.models.items():
            outs = [model(batch[i:i + 1]) for i in range(len(batch))]
            probabilities[name] = torch.cat([o.probabilities for o in outs]).numpy()
            embeds.append(torch.cat([o.penultimate for o in outs]).mean(0).numpy())
    analysis = TrackAnalysis(0.0, [], {n: m.labels for n, m in analyzer.models.items()}, probabilities,
                             np.concatenate(embeds), 0.0, "", "", analyzer.version)
    said = analysis.describe()
    words = {w for w, _ in said.instruments + said.genres + said.moods} | {said.vocals}
    return np.concatenate([list(analysis.tags(name).values()) for name in analyzer.models]), words


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 3, 4, 5, 6, 10])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    analyzer = Analyzer(load_settings().models_dir)
    scores: dict[int, dict[str, list[float]]] = {n: {"error": [], "top5": [], "words": []} for n in args.counts}
    for name in args.files:
        mel = log_mel(decode_audio(name, SAMPLE_RATE, 600.0))
        every, words = heard(analyzer, mel, list(range(0, len(mel) - PATCH_FRAMES + 1, PATCH_FRAMES)))
        top = set(np.argsort(-every)[:5])
        for n in args.counts:
            probs, said = heard(analyzer, mel, patch_starts(len(mel), n))
            scores[n]["error"].append(float(np.abs(probs - every).mean()))
            scores[n]["top5"].append(len(top & set(np.argsort(-probs)[:5])) / 5)
            scores[n]["words"].append(len(said & words) / max(1, len(said | words)))
    print(f"{len(args.files)} files\n\n| patches | mean tag error | top-5 tags shared | caption words shared |")
    print("|---:|---:|---:|---:|")
    for n, s in scores.items():
        print(f"| {n} | {np.mean(s['error']):.4f} | {np.mean(s['top5']):.2f} | {np.mean(s['words']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
