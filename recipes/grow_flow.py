"""Deepen a trained second stage without changing what it computes, so a longer run can start from it.

Training a deeper second stage from scratch on a CPU would cost every step the shallower one's weights already paid
for. Each new block is a pre-norm residual block whose two output projections (`out`, `down`) are zero: it adds
nothing to the stream until training moves them, so the grown model's logits equal the old one's.
The new blocks sit evenly between the old ones (6 -> 9 puts one after every two).

    python recipes/grow_flow.py tts/default_model/flow --num-layers 9 --out runs/default/flow_9layers_init

Then train it with a config whose model section says the same `num_layers` (`--init-from` the output folder).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from flow.model import AcousticFlow


def old_block_positions(old_layers: int, new_layers: int) -> list[int]:
    """Where each old block goes among `new_layers`: spread evenly, order kept (6 -> 9: 0 1 3 4 6 7)."""
    if new_layers < old_layers:
        raise ValueError(f"--num-layers {new_layers} is fewer than the model's {old_layers}: this only adds layers")
    return [i * new_layers // old_layers for i in range(old_layers)]


def grow(model: AcousticFlow, num_layers: int, *, seed: int = 0) -> AcousticFlow:
    """A copy of `model` with `num_layers` blocks; the added ones start as the identity."""
    old_at = {new: i for i, new in enumerate(old_block_positions(model.config.num_layers, num_layers))}
    with torch.random.fork_rng(devices=[]):  # the new blocks' input projections: the model's own init, seeded here
        torch.manual_seed(seed)
        grown = AcousticFlow(replace(model.config, num_layers=num_layers))
    old, state = model.state_dict(), grown.state_dict()
    for name in state:
        if not name.startswith("blocks."):
            state[name] = old[name].clone()
            continue
        _, index, part = name.split(".", 2)
        if int(index) in old_at:
            state[name] = old[f"blocks.{old_at[int(index)]}.{part}"].clone()
        elif part in ("out.weight", "down.weight"):
            state[name] = torch.zeros_like(state[name])
    grown.load_state_dict(state, strict=True)
    return grown.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Add identity blocks to a second-stage model folder (same outputs).")
    parser.add_argument("model", type=Path, help="a flow model folder (config.json + model.safetensors)")
    parser.add_argument("--num-layers", type=int, required=True, help="layers of the grown model")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the grown model to")
    parser.add_argument("--seed", type=int, default=0, help="seed of the new blocks' input projections")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise SystemExit(f"{args.out} already exists: choose another --out or remove it")
    model = AcousticFlow.from_pretrained(args.model)
    grown = grow(model, args.num_layers, seed=args.seed)
    grown.save_pretrained(args.out)
    print(f"{args.model} ({model.config.num_layers} layers) -> {args.out} ({args.num_layers} layers, "
          f"{sum(p.numel() for p in grown.parameters()) / 1e6:.2f} M parameters)")


if __name__ == "__main__":
    main()
