"""Speaking-rate change that keeps the pitch: WSOLA (waveform-similarity overlap-add)."""

from __future__ import annotations

import numpy as np


def time_stretch(audio: np.ndarray, speed: float, sample_rate: int) -> np.ndarray:
    """audio [samples] -> about len / speed samples, same pitch. speed > 1 is faster speech.

    Frames of 30 ms are overlap-added at a fixed output hop; each input frame is taken from near its nominal
    position, shifted by up to 10 ms to best continue the previous frame (maximum cross-correlation), which is what
    keeps voiced speech free of phasing artefacts.
    """
    if speed == 1.0 or len(audio) == 0:
        return audio.astype(np.float32, copy=False)
    frame, tolerance = int(0.03 * sample_rate), int(0.01 * sample_rate)
    hop_out = frame // 2
    window = np.hanning(frame).astype(np.float64)
    out_len = int(round(len(audio) / speed))
    padded = np.concatenate([np.zeros(tolerance), audio.astype(np.float64), np.zeros(frame + tolerance + hop_out)])
    out = np.zeros(out_len + frame)
    weight = np.zeros(out_len + frame)
    previous = None  # start (in padded) of the previous input frame
    for k, out_pos in enumerate(range(0, out_len, hop_out)):
        nominal = tolerance + int(round(k * hop_out * speed))
        start = nominal
        if previous is not None:
            natural = padded[previous + hop_out: previous + hop_out + frame]  # what would continue seamlessly
            region = padded[nominal - tolerance: nominal + tolerance + frame]
            scores = np.correlate(region, natural, mode="valid")  # 2·tolerance + 1 candidates
            start = nominal - tolerance + int(np.argmax(scores))
        out[out_pos: out_pos + frame] += padded[start: start + frame] * window
        weight[out_pos: out_pos + frame] += window
        previous = start
    return (out / np.maximum(weight, 1e-3))[:out_len].astype(np.float32)
