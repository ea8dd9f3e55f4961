"""Make a tokenizer-training start folder whose encoder is a pretrained Whisper's, as GLM-4-Voice starts from Whisper.

    python recipes/whisper_init.py WHISPER_DIR --config recipes/configs/tokenizer_whisper.json \
        --out runs/whisper_init
    python recipes/train_tokenizer.py --config recipes/configs/tokenizer_whisper.json ...  # train.init_from there

WHISPER_DIR is a Hugging Face Whisper folder (`config.json` + `model*.safetensors`, e.g. a snapshot of
`openai/whisper-base`) or a CTranslate2 one (`model.bin`, the faster-whisper form). The config's `model.tokenizer`
must have Whisper's widths (`d_model`, heads, `encoder_ffn_dim`, mel bins) and at most its number of layers
(`quantize_position`). The convs, positions and the layers below the quantiser come from Whisper, and so do the
`post_layers` above it as far as Whisper has more layers (GLM-4-Voice quantises mid-encoder); the codebook (set from
the first batch's encoder outputs when training starts), any further post layers and the CTC heads are fresh, drawn
from `train.seed`. The folder holds `config.json` + `model.safetensors` and `whisper_init.json` (source and dims).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as `python recipes/whisper_init.py`: make `recipes` importable, as `-m` would
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.semantic_training import TokenizerTrainer, TokenizerTrainingConfig


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Start a semantic tokenizer from a pretrained Whisper encoder")
    parser.add_argument("whisper", type=Path, help="Hugging Face or CTranslate2 Whisper folder")
    parser.add_argument("--config", type=Path, required=True, help="the tokenizer training config (JSON)")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (train.init_from reads it)")
    args = parser.parse_args(argv)
    config_file = json.loads(args.config.read_text())
    seed = int(config_file.get("train", {}).get("seed", 0))
    torch.manual_seed(seed)
    model = TokenizerTrainer(TokenizerTrainingConfig.from_dict(config_file["model"]))
    dims = model.load_whisper_encoder(args.whisper)
    model.save_pretrained(args.out)
    record = {"whisper": str(args.whisper), "config": str(args.config), "seed": seed, "dims": dims}
    (args.out / "whisper_init.json").write_text(json.dumps(record, indent=2) + "\n")
    below = model.tokenizer.config.quantize_position
    above = min(len(model.post), dims["encoder_layers"] - below)
    print(f"{args.out}: from {args.whisper} (d_model {dims['d_model']}, {dims['encoder_layers']} layers): "
          f"{below} below the quantiser, {above} of the {len(model.post)} post layers above it")
    return args.out


if __name__ == "__main__":
    main()
