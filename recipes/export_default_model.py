"""Assemble the shipped default TTS model folder from the trained stages, in fp16, small enough to live in git.

    python recipes/export_default_model.py --tokenizer runs/tokenizer/final/semantic_tokenizer \
        --codec runs/codec/final/ema --lm runs/lm/final --flow runs/flow/final --out tts/default_model \
        [--dtype float16] [--max-file-mib 16] [--max-total-mb 60] [--tts-config my_tts_config.json]

Inputs: --tokenizer a SemanticTokenizer folder in the released layout (a tokenizer run's model folder holding
`semantic_tokenizer/` is accepted too); --codec a SAC model folder (checkpoints/step_N/ema or final/ema of the codec
recipe; a released `.pt` with --codec-config also works); --lm the LM recipe's final/ (SemanticLM + text tokenizer);
--flow the flow recipe's final/. A part may also come from an earlier export (its `codec/`, `lm/`, `flow/`) to ship
a retrained stage beside the others: that export's record of the part is copied into the new export.json.

Output (what `TTS.from_pretrained` reads):
    OUT/tts_config.json            TTSConfig defaults, or --tts-config
    OUT/codec/                     SAC without the training-only heads (semantic_decoder, speaker_predictor)
    OUT/codec/semantic_tokenizer/  the tokenizer (where `SpeechCodec.from_pretrained` looks for it)
    OUT/lm/                        SemanticLM + its text tokenizer
    OUT/flow/                      AcousticFlow
    OUT/export.json                the sources as given, their train_config.json, sha256 + size of every file

Floating tensors are stored in --dtype (integer buffers are kept); the loaders cast to the runtime dtype they are
asked for (float32 by default). The parts must fit together (same semantic codebook as the tokenizer, matching
vocabularies and frame ratio), every file must stay under --max-file-mib and the folder under --max-total-mb, and
the result must load strictly with `TTS.from_pretrained` and give back the exported weights bit for bit; otherwise
nothing in OUT changes. The folder is built beside OUT and moved in at the end; files of OUT that the export does
not write (a README.md model card) are kept.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

if __package__ in (None, ""):  # run as `python recipes/export_default_model.py`: make the packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.checkpoint import load_sac
from codec.model import SAC
from codec.semantic_tokenizer import SemanticTokenizer
from flow import AcousticFlow
from lm import SemanticLM
from lm.text import load_text_tokenizer
from recipes.shards import sha256_file
from tts.config import CONFIG_NAME as TTS_CONFIG_NAME
from tts.config import TTSConfig

EXPORT_NAME = "export.json"
TOKENIZER_SUBDIR = "semantic_tokenizer"  # SpeechCodec.from_pretrained looks for codec/semantic_tokenizer/
WRITTEN = ("codec", "lm", "flow", TTS_CONFIG_NAME, EXPORT_NAME)  # what an export owns inside OUT
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
STEP_DIR = re.compile(r"step_(\d+)")
INTERPOLATION_NAME = "interpolation.json"  # written by recipes/interpolate_weights.py
MIB, MB = 2**20, 10**6


class ExportError(ValueError):
    """Stage outputs that cannot make a shippable default model (mismatched parts, too large, not loadable)."""


# ---- reading the stages -----------------------------------------------------------------------------------------
def tokenizer_folder(path: Path) -> Path:
    """The released-layout tokenizer folder: `path` itself, or `path/semantic_tokenizer` (a tokenizer run's
    model folder, or a codec folder that carries one)."""
    if all((path / name).is_file() for name in ("config.json", "preprocessor_config.json")):
        return path
    if (path / TOKENIZER_SUBDIR).is_dir():
        return path / TOKENIZER_SUBDIR
    raise ExportError(f"--tokenizer {path} is not a semantic tokenizer folder (config.json, "
                      f"preprocessor_config.json, model*.safetensors) and has no {TOKENIZER_SUBDIR}/")


def nearest_json(path: Path, name: str, levels: int) -> tuple[Path, Any] | None:
    """The nearest file `name` in `path` or up to `levels` folders above it, parsed: (file, data)."""
    folder = path if path.is_dir() else path.parent
    for candidate in [folder, *folder.parents][: levels + 1]:
        file = candidate / name
        if file.is_file():
            try:
                return file, json.loads(file.read_text())
            except json.JSONDecodeError as exc:
                raise ExportError(f"{file} is not valid JSON: {exc}") from exc
    return None


def find_train_config(path: Path, levels: int = 3) -> tuple[Path, Any] | None:
    """The nearest train_config.json in `path` or up to `levels` folders above it (training.py recipes write it
    into every model folder; the codec recipe only at the top of its output folder)."""
    return nearest_json(path, "train_config.json", levels)


def find_export_record(path: Path, part: str, levels: int = 2) -> dict[str, Any] | None:
    """When `path` is a part of an earlier export (a new LM shipped beside the old codec), that export's record of
    the part, so that its provenance is not lost: {"export": file, "git_commit": ..., "source": record}."""
    found = nearest_json(path, EXPORT_NAME, levels)
    if found is None:
        return None
    file, earlier = found
    source = earlier.get("sources", {}).get(part)
    if source is None:
        raise ExportError(f"{file} records no source for the {part}; export from its training run instead")
    if "exported_before" in source:  # carried once already: point at the export that trained it
        return source["exported_before"]
    return {"export": str(file), "git_commit": earlier.get("git_commit"), "source": source}


def source_record(given: str, used: Path, part: str) -> dict[str, Any]:
    record: dict[str, Any] = {"path": given}
    if str(used) != given:
        record["resolved"] = str(used)
    steps = [int(m.group(1)) for name in Path(given).parts if (m := STEP_DIR.fullmatch(name))]
    if steps:
        record["checkpoint_step"] = steps[-1]
    mixed = nearest_json(used, INTERPOLATION_NAME, 0)
    if mixed is not None:  # two trained folders mixed by recipes/interpolate_weights.py: its record is the source
        record["interpolation"] = mixed[1]
    found = find_train_config(used)
    if found is not None:
        record["train_config_path"], record["train_config"] = str(found[0]), found[1]
    elif (earlier := find_export_record(used, part)) is not None:
        record["exported_before"] = earlier
    return record


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


# ---- checks -------------------------------------------------------------------------------------------------------
def check_parts_fit(tokenizer: SemanticTokenizer, codec: SAC, lm: SemanticLM, text_tokenizer, flow: AcousticFlow
                    ) -> None:
    """Every mismatch that would make the assembled TTS wrong (ids meaning different things) or unloadable."""
    c, problems = codec.config, []
    ours, theirs = codec.semantic_encoder.codebook.weight.detach(), tokenizer.codebook.weight.detach()
    if ours.shape != theirs.shape:
        problems.append(f"the codec's semantic codebook is {tuple(ours.shape)} but the tokenizer's is "
                        f"{tuple(theirs.shape)}")
    elif not torch.allclose(ours.double().cpu(), theirs.double().cpu(), atol=1e-5):
        diff = (ours.double().cpu() - theirs.double().cpu()).abs().max().item()
        problems.append(f"the codec's semantic codebook differs from the tokenizer's (max |diff| {diff:.3g}): the "
                        "codec was not trained on this tokenizer's ids")
    if tokenizer.hop_samples != c.semantic_hop_samples or tokenizer.sample_rate != c.sample_rate:
        problems.append(f"the tokenizer makes one id per {tokenizer.hop_samples} samples at {tokenizer.sample_rate} "
                        f"Hz but the codec expects {c.semantic_hop_samples} at {c.sample_rate} Hz")
    for name, got, want in (
            ("LM semantic_vocab_size", lm.config.semantic_vocab_size, c.semantic_vocab_size),
            ("flow semantic_vocab_size", flow.config.semantic_vocab_size, c.semantic_vocab_size),
            ("flow acoustic_vocab_size", flow.config.acoustic_vocab_size, c.codebook_size),
            ("flow acoustic_per_semantic", flow.config.acoustic_per_semantic, c.acoustic_per_semantic)):
        if got != want:
            problems.append(f"{name} is {got} but the codec's is {want}")
    if text_tokenizer.vocab_size > lm.config.text_vocab_size:
        problems.append(f"the text tokenizer has {text_tokenizer.vocab_size} ids but the LM only "
                        f"{lm.config.text_vocab_size} (text_vocab_size): this LM was not trained with it")
    if problems:
        raise ExportError("the stage outputs do not fit together:\n  " + "\n  ".join(problems))


def weight_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("model*.safetensors*"))


def keep_earlier_bytes(written: Path, earlier: Path) -> bool:
    """Copy an earlier export's weight files over `written` when they hold the same tensors, so that a part shipped
    again unchanged stays the same bytes in git (older exports wrote other safetensors metadata)."""
    names = weight_files(written)
    if names != weight_files(earlier):
        return False
    for name in (n for n in names if n.endswith(".safetensors")):
        new, old = load_file(str(written / name)), load_file(str(earlier / name))
        if new.keys() != old.keys() or any(new[k].dtype != old[k].dtype or not torch.equal(new[k], old[k])
                                           for k in new):
            return False
    for name in names:
        shutil.copyfile(earlier / name, written / name)
    return True


def cast(model: nn.Module, dtype: torch.dtype, part: str) -> nn.Module:
    """Floating parameters and buffers to `dtype` (integer buffers kept); refuses values the dtype cannot hold."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            converted = tensor.detach().to(dtype)
            if not torch.isfinite(converted).all() and torch.isfinite(tensor).all():
                raise ExportError(f"{part}: {name} does not fit in {dtype} (max |x| = "
                                  f"{tensor.detach().abs().max().item():.4g}); export with --dtype bfloat16 or float32")
    return model.to(dtype)


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def check_sizes(written: dict[str, int], kept: dict[str, int], max_file_mib: float, max_total_mb: float) -> None:
    too_big = [f"{name} is {size / MIB:.2f} MiB" for name, size in written.items() if size > max_file_mib * MIB]
    if too_big:
        raise ExportError(f"over the {max_file_mib:g} MiB per-file limit (--max-file-mib): " + "; ".join(too_big)
                          + ". Train a smaller model or raise the limit (the codec and the tokenizer are split into "
                          "shards under the limit; the LM and flow are stored as one file each).")
    total = sum(written.values()) + sum(kept.values())
    if total > max_total_mb * MB:
        largest = sorted({**written, **kept}.items(), key=lambda kv: -kv[1])[:5]
        raise ExportError(f"the model folder would hold {total / MB:.2f} MB, over the {max_total_mb:g} MB limit "
                          "(--max-total-mb); largest files: "
                          + ", ".join(f"{name} {size / MB:.2f} MB" for name, size in largest))


def check_out(out: Path) -> dict[str, int]:
    """Refuse to replace what is not a model folder's part (a typo'd --out must not delete a source package);
    returns the sizes of the files in OUT that the export keeps."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a folder")
    if not out.is_dir():
        return {}
    for name in ("codec", "lm", "flow"):
        part = out / name
        if part.exists() and not (part / "config.json").is_file():
            raise ExportError(f"{part} exists but is not a model folder (no config.json): refusing to replace it; "
                              "pick another --out")
    kept = {}
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if path.is_file() and rel.parts[0] not in WRITTEN:
            kept[rel.as_posix()] = path.stat().st_size
    return kept


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def verify_load(folder: Path, exported: dict[str, nn.Module]) -> dict[str, int]:
    """Load the folder as users will (float32, CPU): it must load strictly, come back in float32, and hold exactly
    the exported weights. Returns parameter counts per part."""
    from tts.pipeline import TTS

    try:
        tts = TTS.from_pretrained(folder)
    except Exception as exc:
        raise ExportError(f"the exported folder does not load with TTS.from_pretrained: {exc}") from exc
    loaded = {"tokenizer": tts.codec.tokenizer, "codec": tts.codec.model, "lm": tts.lm, "flow": tts.flow}
    for part, module in loaded.items():
        wrong = sorted({str(p.dtype) for p in module.parameters()} - {"torch.float32"})
        if wrong:
            raise ExportError(f"{part} loads with {wrong} parameters although float32 was asked for: its loader does "
                              "not cast the stored dtype")
        state, want = module.state_dict(), exported[part].state_dict()
        if set(state) != set(want):
            raise ExportError(f"{part} reloads with other tensors: {sorted(set(state) ^ set(want))[:10]}")
        for key, value in want.items():
            back = state[key].to(value.dtype) if value.is_floating_point() else state[key]
            if not torch.equal(back.cpu(), value.cpu()):
                raise ExportError(f"{part}: {key} differs after reloading the exported folder")
    return {part: parameter_count(module) for part, module in loaded.items()}


# ---- the export ---------------------------------------------------------------------------------------------------
def export(tokenizer: str | Path, codec: str | Path, lm: str | Path, flow: str | Path, out: str | Path, *,
           dtype: torch.dtype = torch.float16, max_file_mib: float = 16, max_total_mb: float = 60,
           tts_config: str | Path | None = None, codec_config: str | Path | None = None) -> dict[str, Any]:
    """Build the default model folder at `out`; returns the summary printed by the command line."""
    out = Path(out)
    given = {"tokenizer": str(tokenizer), "codec": str(codec), "lm": str(lm), "flow": str(flow)}
    kept = check_out(out)
    tokenizer_dir = tokenizer_folder(Path(tokenizer))
    for name, path in (("codec", Path(codec)), ("lm", Path(lm)), ("flow", Path(flow))):
        if not path.exists():
            raise ExportError(f"--{name} {path} does not exist")

    semantic_tokenizer = SemanticTokenizer.from_pretrained(tokenizer_dir)
    sac = load_sac(codec, config=codec_config, semantic_tokenizer=tokenizer_dir)
    semantic_lm = SemanticLM.from_pretrained(lm)
    text_tokenizer = load_text_tokenizer(lm)
    acoustic_flow = AcousticFlow.from_pretrained(flow)
    config = TTSConfig()
    if tts_config is not None:
        path = Path(tts_config)
        try:
            config = TTSConfig.load(path) if path.is_dir() else TTSConfig.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise ExportError(f"--tts-config {path}: {exc}") from exc
    check_parts_fit(semantic_tokenizer, sac, semantic_lm, text_tokenizer, acoustic_flow)

    dropped = [head for head in ("semantic_decoder", "speaker_predictor") if getattr(sac, head) is not None
               or getattr(sac.config, head) is not None]
    sac.config = sac.config.without_training_heads()
    sac.semantic_decoder = sac.speaker_predictor = None
    exported = {"tokenizer": cast(semantic_tokenizer, dtype, "tokenizer"), "codec": cast(sac, dtype, "codec"),
                "lm": cast(semantic_lm, dtype, "lm"), "flow": cast(acoustic_flow, dtype, "flow")}

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export.", dir=out.parent))
    try:
        # already in dtype; shards under the file limit, with room for each safetensors header
        max_shard_bytes = int(0.98 * max_file_mib * MIB)
        written = {"tokenizer": tmp / "codec" / TOKENIZER_SUBDIR, "codec": tmp / "codec", "lm": tmp / "lm",
                   "flow": tmp / "flow"}
        exported["codec"].save_pretrained(written["codec"], max_shard_bytes=max_shard_bytes)
        exported["tokenizer"].save_pretrained(written["tokenizer"], max_shard_bytes=max_shard_bytes)
        exported["lm"].save_pretrained(written["lm"])
        text_tokenizer.save(written["lm"])
        exported["flow"].save_pretrained(written["flow"])
        config.save(tmp)
        used = {"tokenizer": tokenizer_dir, "codec": Path(codec), "lm": Path(lm), "flow": Path(flow)}
        sources = {part: source_record(given[part], used[part], part) for part in used}
        for part, source in sources.items():
            if "exported_before" in source:
                source["bytes_kept"] = keep_earlier_bytes(written[part], used[part])

        sizes = file_sizes(tmp)
        record = {
            "format": "sac-tts default model export",
            "dtype": str(dtype).removeprefix("torch."),
            "git_commit": git_commit(),
            "sources": sources,
            "training_heads_dropped": dropped,
            "tts_config": config.to_dict(),
            "files": {name: {"bytes": size, "sha256": sha256_file(tmp / name)} for name, size in sizes.items()},
        }
        (tmp / EXPORT_NAME).write_text(json.dumps(record, indent=2) + "\n")
        sizes = file_sizes(tmp)
        check_sizes(sizes, kept, max_file_mib, max_total_mb)
        parameters = verify_load(tmp, exported)

        out.mkdir(parents=True, exist_ok=True)
        for name in WRITTEN:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
            (tmp / name).replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    return {
        "out": str(out),
        "dtype": record["dtype"],
        "files": sizes,
        "kept_files": kept,
        "total_bytes": sum(sizes.values()) + sum(kept.values()),
        "total_mb": round((sum(sizes.values()) + sum(kept.values())) / MB, 3),
        "largest_file_mib": round(max(sizes.values()) / MIB, 3),
        "parameters": {**parameters, "total": sum(parameters.values())},
        "training_heads_dropped": dropped,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Assemble the default TTS model folder (fp16) from trained stages.")
    parser.add_argument("--tokenizer", required=True, help="SemanticTokenizer folder (released layout)")
    parser.add_argument("--codec", required=True, help="SAC model folder, e.g. runs/codec/final/ema")
    parser.add_argument("--codec-config", default=None, help="released YAML, only when --codec is a released .pt")
    parser.add_argument("--lm", required=True, help="the LM recipe's final/ folder (SemanticLM + text tokenizer)")
    parser.add_argument("--flow", required=True, help="the flow recipe's final/ folder")
    parser.add_argument("--out", default="tts/default_model", help="output model folder (default: %(default)s)")
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES), help="storage dtype of the weights")
    parser.add_argument("--max-file-mib", type=float, default=16, help="largest allowed file, MiB (%(default)s)")
    parser.add_argument("--max-total-mb", type=float, default=60, help="largest allowed folder, MB (%(default)s)")
    parser.add_argument("--tts-config", default=None, help="a tts_config.json to ship (default: TTSConfig defaults)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    try:
        summary = export(args.tokenizer, args.codec, args.lm, args.flow, args.out, dtype=DTYPES[args.dtype],
                         max_file_mib=args.max_file_mib, max_total_mb=args.max_total_mb, tts_config=args.tts_config,
                         codec_config=args.codec_config)
    except (ValueError, FileNotFoundError) as exc:  # ExportError, and the loaders' own mismatch errors
        raise SystemExit(f"export failed: {exc}") from exc
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
