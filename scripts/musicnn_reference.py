"""Write tests/fixtures/musicnn_reference.safetensors: the original TensorFlow musicnn on fixed inputs.

Run once, outside CI, in a throwaway venv (never in the project's):
    python3 -m venv /tmp/tfvenv
    /tmp/tfvenv/bin/pip install tensorflow-cpu tf-keras librosa safetensors
    /tmp/tfvenv/bin/pip install --no-deps musicnn
    TF_USE_LEGACY_KERAS=1 /tmp/tfvenv/bin/python scripts/musicnn_reference.py

Inputs: two 3-s excerpts of the demo library decoded by librosa at 16 kHz (the first one's samples are
kept, so the test can check our log-mel against librosa's), a loud full-scale patch (the original's
float16 cast overflows there; we feed the float32 log-mel both sides) and a quiet noise patch. The
checkpoint is restored explicitly: the package's extractor hides a failed restore behind a bare except
and then tags every input alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import librosa
import numpy as np
import tensorflow as tf
from musicnn import configuration, models
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "musicnn_reference.safetensors"
CLIPS = [  # (file in the demo library, offset in seconds)
    ("Mila Sorrento Quartet/Café Solstice/01 Solstice Bossa.flac", 10.0),
    ("Pixelheart/Night Circuit/03 Afterglow Protocol.ogg", 12.0),
]


def log_mel(audio: np.ndarray) -> np.ndarray:
    """musicnn's input as batch_data computes it, except in float32 (see model/musicnn.py)."""
    mel = librosa.feature.melspectrogram(y=audio, sr=configuration.SR, hop_length=configuration.FFT_HOP,
                                         n_fft=configuration.FFT_SIZE, n_mels=configuration.N_MELS,
                                         pad_mode="reflect").T
    return np.ascontiguousarray(np.log10(10000 * mel + 1), dtype=np.float32)  # safetensors writes C order


def inputs(n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2019)
    clips = []
    for name, offset in CLIPS:
        audio, _ = librosa.load(ROOT / "demo" / "library" / name, sr=configuration.SR, offset=offset, duration=3.0)
        clips.append(audio.astype(np.float32))
    t = np.arange(3 * configuration.SR) / configuration.SR
    loud = np.clip(np.sign(np.sin(2 * np.pi * 110 * t)) * 0.9 + 0.3 * rng.standard_normal(t.size), -1, 1)
    quiet = 0.001 * rng.standard_normal(t.size)
    patches = [log_mel(a)[:n_frames] for a in (*clips, loud.astype(np.float32), quiet.astype(np.float32))]
    return clips[0], np.ascontiguousarray(np.stack(patches))


def run_model(name: str, batch: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    tf.compat.v1.reset_default_graph()
    labels = configuration.MTT_LABELS if name.startswith("MTT") else configuration.MSD_LABELS
    with tf.name_scope("model"):
        x = tf.compat.v1.placeholder(tf.float32, [None, n_frames, configuration.N_MELS])
        is_training = tf.compat.v1.placeholder(tf.bool)
        y, _, _, _, _, _, mean_pool, max_pool, penultimate = models.define_model(x, is_training, name, len(labels))
        probabilities = tf.nn.sigmoid(y)
    with tf.compat.v1.Session() as sess:
        tf.compat.v1.train.Saver().restore(sess, os.path.join(os.path.dirname(models.__file__), name) + "/")
        got = sess.run([probabilities, penultimate, mean_pool, max_pool], feed_dict={x: batch, is_training: False})
    return {f"{name}.{key}": np.ascontiguousarray(v, dtype=np.float32)
            for key, v in zip(("probabilities", "penultimate", "mean_pool", "max_pool"), got, strict=True)}


def main() -> None:
    tf.compat.v1.disable_eager_execution()
    n_frames = int(librosa.time_to_frames(3, sr=configuration.SR, n_fft=configuration.FFT_SIZE,
                                          hop_length=configuration.FFT_HOP)) + 1
    audio, batch = inputs(n_frames)
    tensors = {"audio": audio, "patches": batch, "n_frames": np.array([n_frames], dtype=np.int64)}
    for name in ("MTT_musicnn", "MSD_musicnn"):
        tensors.update(run_model(name, batch, n_frames))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata={"tensorflow": tf.__version__, "librosa": librosa.__version__})
    mel16 = ((10.0 ** batch[2] - 1) / 10000).astype(np.float16)  # the loud patch's mel as the original casts it
    overflow = np.isinf(10000 * mel16).mean()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), n_frames={n_frames}")
    print(f"loud patch: {overflow:.1%} of its bins would be inf through the original's float16 cast")
    for name in ("MTT_musicnn", "MSD_musicnn"):
        top = np.argsort(-tensors[f"{name}.probabilities"], axis=1)[:, :4]
        labels = configuration.MTT_LABELS if name.startswith("MTT") else configuration.MSD_LABELS
        print(name, [[labels[i] for i in row] for row in top])


if __name__ == "__main__":
    main()
