#!/usr/bin/env bash
# The exact command sequence that produced model/weights/lite-adapter.safetensors (see docs/benchmarks.md,
# "Training the lite adapter"). CPU only; run from the repository root. Each step resumes or skips work
# already done, so the script can be re-run after an interruption.
set -euo pipefail
PY=${PY:-.venv/bin/python}
export PYTHONPATH=. HF_HUB_OFFLINE=1
RUN=data/runs/lite9

# 1. Synthetic corpus: 1500 training clips (seed 101) and 200 held-out clips (seed 202), 10 s each.
$PY -m training.synth --out data/synth/train --n 1500 --seed 101 --seconds 10 --workers 2
$PY -m training.synth --out data/synth/heldout --n 200 --seed 202 --seconds 10 --workers 2

# 2. Lite features (front-end + 325-frame pooling) cached once per clip.
$PY -m training cache-features --dataset synth --root data/synth/train --out data/features/synth-train --profile lite
$PY -m training cache-features --dataset synth --root data/synth/heldout --out data/features/synth-heldout --profile lite

# 3. The adapter: a closed-form start (least squares onto the label words) then stage 2 (the profile's
#    captioning instruction with summary captions, plus questions on the same attributes). The lite
#    recipe has no back-propagated stage 1: on SmolLM2-135M it never beat zero audio tokens.
mkdir -p $RUN
$PY -m training finetune --config training/configs/lite_finetune.toml > $RUN/stage2.log 2>&1

# 4. Held-out evaluation with the no-audio baseline and the shuffled-audio control: captions as the profile
#    makes them (the likeliest sentence of its caption template), answers greedy; then free greedy
#    captions and the forced choice of each attribute (what the adapter conveys, apart from decoding).
EVAL="$PY -m training eval --dataset synth --root data/synth/heldout --cache data/features/synth-heldout --profile lite
    --adapter $RUN/stage2-adapter.safetensors --limit ${EVAL_CLIPS:-40} --baseline --shuffled --batch 20 --max-new-tokens 48"
$EVAL --qa-attributes instrument_family,tempo_class,mode --qa-max-new-tokens 24 --samples $RUN/eval-samples.jsonl --out $RUN/eval.json
$EVAL --qa-attributes none --free-captions --forced-choice --out $RUN/eval-free.json

# 5. Ship the adapter only if it beats the no-audio baseline on held-out attribute accuracy.
RUN=$RUN $PY - <<'PYEOF'
import json, os, shutil, sys
run = os.environ["RUN"]
rep = json.load(open(f"{run}/eval.json"))
def mean_acc(run):
    acc = rep[run]["caption_attribute_accuracy"]
    return sum(v["accuracy"] for v in acc.values()) / len(acc)
audio, base = mean_acc("audio"), mean_acc("no_audio")
print(f"held-out caption attribute accuracy: audio {audio:.3f} vs no-audio baseline {base:.3f}")
if audio < base + 0.05:  # a margin, so that one lucky clip of 40 does not count as a gain
    if not os.environ.get("FORCE_SHIP"):
        sys.exit("not shipped: the adapter does not clearly beat the no-audio baseline (FORCE_SHIP=1 ships anyway)")
    print("below the bar, shipped anyway (FORCE_SHIP=1): see docs/benchmarks.md")
for ext in ("safetensors", "json"):
    shutil.copy(f"{run}/stage2-adapter.{ext}", f"model/weights/lite-adapter.{ext}")
print("shipped model/weights/lite-adapter.safetensors")
PYEOF
