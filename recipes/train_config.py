"""Recipe settings: `TrainConfig` (the train section every recipe shares) and the command line that overrides a
config file's data.* and train.* settings, one flag each."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    seed: int = 0
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at max_steps
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 2000
    max_steps: int = 200_000
    grad_accum: int = 1
    clip_norm: float = 1.0  # 0 = no clipping (the norm is still logged)
    eval_every: int = 1000
    save_every: int = 1000
    log_every: int = 10
    keep_last: int = 3
    mixed_precision: str = "auto"  # auto = bf16 on a GPU that has it, else no
    output_dir: str | None = None  # default runs/<config file stem>
    max_minutes: float = 0.0  # wall-time budget of this invocation: stop, checkpoint and write final/ (0 = none)
    init_from: str | None = None  # a model folder (final/ or a checkpoint) whose weights a fresh run starts from

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise ValueError(f"train.mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")
        for name in ("max_steps", "grad_accum", "eval_every", "save_every", "log_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.max_minutes < 0:
            raise ValueError(f"train.max_minutes must be 0 (no budget) or positive, got {self.max_minutes}")


def parse_bool(text: str) -> bool:
    """A boolean setting's command-line value: argparse's `type=bool` would read "false" as True."""
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return words[text.lower()]


def value_type(kind: type) -> Callable[[str], Any]:
    return parse_bool if kind is bool else kind


def flag_shape(f: Field) -> dict[str, Any]:
    """argparse's nargs/type for one config field, from its default."""
    default = f.default_factory() if f.default is MISSING else f.default
    if f.metadata.get("sources"):  # one path or several
        return {"nargs": "+", "type": str}
    if isinstance(default, list):
        return {"nargs": "*", "type": str}
    if isinstance(default, tuple):
        return {"nargs": 2, "type": float}
    return {"type": value_type(type(default) if default is not None else str)}


def parse_args(argv: list[str] | None, description: str, data_cls: type,
               train_cls: type = TrainConfig) -> argparse.Namespace:
    """--config, --resume and one flag per data.* and train.* setting (dashes for underscores)."""
    parser = argparse.ArgumentParser(description=f"{description}; every data.* and train.* setting of the config can "
                                     "be overridden on the command line.")
    parser.add_argument("--config", type=Path, required=True, help="JSON with model, data and train sections")
    parser.add_argument("--resume", help="'auto': the newest checkpoint in OUTPUT_DIR/checkpoints (a fresh start "
                        "when there is none), or a checkpoint folder")
    for section, cls in (("data", data_cls), ("train", train_cls)):
        for f in fields(cls):
            dest = f"{section}.{f.name}"
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=dest, help=dest, **flag_shape(f))
    return parser.parse_args(argv)


def build_section(cls: type, name: str, values: dict) -> Any:
    unknown = sorted(set(values) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {name} settings {unknown}; known: {sorted(f.name for f in fields(cls))}")
    return cls(**values)


def load_config(args: argparse.Namespace, data_cls: type, train_cls: type = TrainConfig) -> tuple[dict, Any, Any]:
    """(model section as written, data_cls, train_cls): the JSON file, then command-line overrides."""
    raw = json.loads(args.config.read_text())
    unknown = sorted(set(raw) - {"model", "data", "train"})
    if unknown:
        raise ValueError(f"{args.config}: unknown sections {unknown}; expected model, data and train")
    sections = {name: dict(raw.get(name, {})) for name in ("data", "train")}
    single_paths = {f"data.{f.name}" for f in fields(data_cls) if f.metadata.get("sources")}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, name = dest.split(".")
            if dest in single_paths and len(value) == 1:  # a single path stays a string in train_config.json
                value = value[0]
            sections[section][name] = value
    return (dict(raw.get("model", {})), build_section(data_cls, "data", sections["data"]),
            build_section(train_cls, "train", sections["train"]))
