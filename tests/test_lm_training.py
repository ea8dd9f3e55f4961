"""The LM training recipe on a synthetic corpus: tiny, CPU-only, offline.

Each word of a small list stands for a fixed short sequence of semantic ids, and an utterance's semantic tokens are
its words' sequences in order, so the corpus is learnable and a trained model can be checked exactly.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from lm.config import LMConfig
from lm.generate import Request, SamplingConfig, generate
from lm.model import SemanticLM, build_example
from lm.text import TextTokenizer
from recipes.data import LengthBucketBatchSampler, ManifestError, padded_tokens
from recipes.lm_data import SemanticLMDataset, read_manifest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "configs" / "lm_tiny.json"
WORDS = ["red", "green", "blue", "seven", "river", "stone", "light", "cloud"]
WORD_TOKENS = {word: [10 + 3 * i, 11 + 3 * i, 12 + 3 * i] for i, word in enumerate(WORDS)}


@pytest.fixture
def train_lm():
    """The recipe module; each training run in this process starts from accelerate's defaults, as a new process
    would."""
    pytest.importorskip("accelerate", reason="training needs the [train] extra: pip install -e '.[train]'")
    from accelerate.state import AcceleratorState, GradientState

    from recipes import train_lm

    yield train_lm
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def write_corpus(folder: pathlib.Path, n: int = 20, speakers: int = 4) -> pathlib.Path:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(2, 5)))]
        semantic = [t for w in words for t in WORD_TOKENS[w]]
        rows.append({"id": f"utt{i:02d}", "text": " ".join(words), "speaker": f"spk{i % speakers}",
                     "semantic": semantic})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return manifest


def write_config(folder: pathlib.Path, manifest: pathlib.Path, **train) -> pathlib.Path:
    config = json.loads(TINY.read_text())
    config["data"].update(train_manifest=str(manifest), eval_fraction=0.0)
    config["train"].update(train)
    path = folder / "lm.json"
    path.write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_tiny_model_overfits_and_regenerates_a_training_target(tmp_path, train_lm):
    manifest = write_corpus(tmp_path)
    config = write_config(tmp_path, manifest, max_steps=120, save_every=1000, log_every=40, eval_every=60)
    result = train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "run"),
                            "--eval-manifest", str(manifest)])
    assert result.losses[1] > 5 and result.losses[120] < 0.2, result.losses  # ~0.03 when it works
    # it has learnt to read: random text of the same length costs it more than a nat per token (~1.3), while
    # 2 of each word's 3 tokens still follow from the first whatever the text
    end = result.evals[120]
    assert end["text_gain"] > 1 and end["loss_random_text"] > 10 * end["loss"], result.evals

    final = tmp_path / "run" / "final"
    lm = SemanticLM.from_pretrained(final)
    tokenizer = TextTokenizer.from_pretrained(final)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    # the text's BPE pieces may outnumber its semantic tokens, so no lower bound on the length
    sampling = SamplingConfig(temperature=0, min_tokens_per_text_token=0)
    generated = generate(lm, [Request(tokenizer.encode(row["text"])) for row in rows], sampling, seed=0)
    assert generated == [row["semantic"] for row in rows]


class Killed(Exception):
    pass


def test_killed_and_resumed_training_equals_uninterrupted(tmp_path, train_lm):
    manifest = write_corpus(tmp_path)
    # small batches and accumulation so the kill lands mid-epoch, with prompts, eval and the LR schedule in play
    config = write_config(tmp_path, manifest, max_steps=8, save_every=3, eval_every=4, log_every=1, warmup_steps=2,
                          grad_accum=2, keep_last=5)
    overrides = ["--max-tokens", "96", "--prompt-prob", "0.5", "--eval-fraction", "0.2"]
    whole = train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "whole"), *overrides])

    def kill_after_step_6(step: int) -> None:
        if step == 6:
            raise Killed
    with pytest.raises(Killed):
        train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "cut"), *overrides],
                      on_step=kill_after_step_6)
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000003", "step_000006"]
    assert json.loads((checkpoints / "step_000006" / "train_state" / "position.json").read_text())["batches_done"]
    (checkpoints / "step_000009.tmp").mkdir()  # a save cut short by the kill: never a resume candidate

    resumed = train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "cut"), "--resume", "auto",
                             *overrides])
    assert resumed.losses == {step: whole.losses[step] for step in (7, 8)}
    assert resumed.eval_losses == {8: whole.eval_losses[8]}
    a = SemanticLM.from_pretrained(tmp_path / "whole" / "final").state_dict()
    b = SemanticLM.from_pretrained(tmp_path / "cut" / "final").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (checkpoints / "step_000009.tmp").exists()
    best = [json.loads((run / "best" / "best.json").read_text()) for run in (tmp_path / "whole", tmp_path / "cut")]
    assert best[0] == best[1]  # the resumed run kept the best of its first part


def test_best_folder_holds_the_weights_of_the_lowest_eval_loss(tmp_path, train_lm):
    manifest = write_corpus(tmp_path)
    # a high flat LR over a tiny eval set: the eval loss does not fall at every eval
    config = write_config(tmp_path, manifest, max_steps=12, save_every=2, eval_every=2, log_every=2, warmup_steps=1,
                          lr=0.05, min_lr_ratio=1.0, keep_last=10)
    result = train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "run"), "--max-tokens", "96",
                            "--eval-fraction", "0.2"])
    step = min(result.eval_losses, key=result.eval_losses.get)
    assert json.loads((tmp_path / "run" / "best" / "best.json").read_text()) == {
        "step": step, "eval_loss": result.eval_losses[step]}
    best = SemanticLM.from_pretrained(tmp_path / "run" / "best").state_dict()
    at_step = SemanticLM.from_pretrained(tmp_path / "run" / "checkpoints" / f"step_{step:06d}").state_dict()
    assert all(torch.equal(best[k], at_step[k]) for k in best)
    assert TextTokenizer.from_pretrained(tmp_path / "run" / "best").vocab_size > 0  # a whole model folder
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    evals = [row for row in logged if "eval/loss" in row]
    assert [row["step"] for row in evals] == sorted(result.eval_losses)
    for row in evals:
        assert row["eval/text_gain"] == pytest.approx(row["eval/loss_random_text"] - row["eval/loss"])


def test_text_check_swaps_every_text_id_and_nothing_else(train_lm):
    config = LMConfig(text_vocab_size=20, semantic_vocab_size=50, hidden_size=16, intermediate_size=32,
                      num_layers=1, num_heads=2, num_kv_heads=1)
    input_ids, _ = build_example(config, [3, 4, 5, 6], [7, 8, 9], prompt_text_ids=[1, 2],
                                 prompt_semantic_ids=[10, 11])
    input_ids = torch.tensor([input_ids] * 64)  # [B, T]
    is_text = (input_ids >= config.text_offset) & (input_ids < config.semantic_offset)
    swapped = train_lm.randomize_text(input_ids, config, seed=5)
    assert torch.equal(swapped, train_lm.randomize_text(input_ids, config, seed=5))  # a function of the seed
    assert torch.equal(swapped[~is_text], input_ids[~is_text])  # specials and semantic ids stay
    new = swapped[is_text]
    assert ((new >= config.text_offset) & (new < config.semantic_offset)).all()
    assert (new != input_ids[is_text]).float().mean() > 0.8  # 19 of 20 draws differ


def test_input_noise_swaps_only_semantic_inputs_and_never_the_targets_or_the_eval(tmp_path, train_lm):
    config = LMConfig(text_vocab_size=20, semantic_vocab_size=50, hidden_size=16, intermediate_size=32,
                      num_layers=1, num_heads=2, num_kv_heads=1)
    text = torch.randint(config.text_offset, config.semantic_offset, (4, 50))
    semantic = torch.randint(config.semantic_offset, config.vocab_size, (4, 450))
    input_ids = torch.cat([text, semantic], dim=1)
    noisy = train_lm.corrupt_semantic(input_ids, config, 0.2, seed=3)
    assert torch.equal(noisy, train_lm.corrupt_semantic(input_ids, config, 0.2, seed=3))  # a function of the seed
    assert torch.equal(noisy[:, :50], text)
    assert (noisy[:, 50:] >= config.semantic_offset).all() and (noisy < config.vocab_size).all()
    changed = (noisy != input_ids).float().mean().item() * 500 / 450
    assert 0.15 < changed < 0.2  # a swap may draw the same id (1 in 50)

    manifest = write_corpus(tmp_path)
    config_file = write_config(tmp_path, manifest, max_steps=1, save_every=100, eval_every=1, log_every=1)
    args = ["--config", str(config_file), "--eval-fraction", "0.2", "--lr", "0"]  # lr 0: the same weights at eval
    clean = train_lm.main([*args, "--output-dir", str(tmp_path / "clean")])
    noisy_run = train_lm.main([*args, "--output-dir", str(tmp_path / "noisy"), "--input-noise", "0.5"])
    assert noisy_run.losses[1] > clean.losses[1]  # training read noisy inputs
    assert noisy_run.eval_losses == clean.eval_losses  # the eval read clean ones
    with pytest.raises(ValueError, match="input_noise"):
        train_lm.main([*args, "--output-dir", str(tmp_path / "bad"), "--input-noise", "1.0"])


def test_time_budget_checkpoints_and_the_resumed_run_equals_the_uninterrupted_one(tmp_path, train_lm):
    manifest = write_corpus(tmp_path)
    config = write_config(tmp_path, manifest, max_steps=6, save_every=100, log_every=2, warmup_steps=2)
    args = ["--config", str(config), "--max-tokens", "96"]
    whole = train_lm.main([*args, "--output-dir", str(tmp_path / "whole")])
    cut = train_lm.main([*args, "--output-dir", str(tmp_path / "cut"), "--max-minutes", "1e-9"])
    assert sorted(cut.losses) == [1, 2]  # the budget is checked at log steps
    assert (tmp_path / "cut" / "checkpoints" / "step_000002").is_dir() and (tmp_path / "cut" / "final").is_dir()
    resumed = train_lm.main([*args, "--output-dir", str(tmp_path / "cut"), "--resume", "auto"])
    assert resumed.losses == {step: whole.losses[step] for step in range(3, 7)}


def test_init_from_starts_a_fresh_run_from_given_weights_and_their_text_tokenizer(tmp_path, train_lm):
    config = write_config(tmp_path, write_corpus(tmp_path), max_steps=4, save_every=100, warmup_steps=1)
    base = train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "base")])
    other = tmp_path / "other"
    other.mkdir()
    other_manifest = write_corpus(other, n=12, speakers=2)  # other texts: a tokenizer trained on them would differ
    args = ["--config", str(config), "--train-manifest", str(other_manifest), "--max-steps", "1"]
    fresh = train_lm.main([*args, "--output-dir", str(tmp_path / "fresh")])
    tuned = train_lm.main([*args, "--output-dir", str(tmp_path / "tuned"), "--init-from", str(base.output_dir / "final"),
                           "--lr", "0"])
    assert tuned.losses[1] < fresh.losses[1]  # it starts where the base run ended
    a = SemanticLM.from_pretrained(base.output_dir / "final").state_dict()
    b = SemanticLM.from_pretrained(tmp_path / "tuned" / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)  # lr 0: nothing moved
    spm = "text_tokenizer.model"
    assert (tmp_path / "tuned" / "final" / spm).read_bytes() == (base.output_dir / "final" / spm).read_bytes()
    assert (tmp_path / "fresh" / "final" / spm).read_bytes() != (base.output_dir / "final" / spm).read_bytes()

    bigger = json.loads(config.read_text())
    bigger["model"]["hidden_size"] *= 2
    (tmp_path / "bigger.json").write_text(json.dumps(bigger))
    with pytest.raises(ValueError, match="does not fit this model"):
        train_lm.main(["--config", str(tmp_path / "bigger.json"), "--output-dir", str(tmp_path / "bad"),
                       "--init-from", str(base.output_dir / "final")])


@pytest.mark.slow
def test_two_processes_match_one_process_accumulating_their_batches(tmp_path, train_lm):
    """Rank r takes batches r, r + 2, ..., so 2 ranks x 1 micro-batch see what 1 rank x 2 micro-batches sees: the
    token-weighted loss and update must agree across processes (gloo on CPU, via torchrun)."""
    manifest = write_corpus(tmp_path)
    config = write_config(tmp_path, manifest, max_steps=4, save_every=2, log_every=1, warmup_steps=2)
    args = ["--config", str(config), "--max-tokens", "96", "--prompt-prob", "0.5"]
    train_lm.main([*args, "--output-dir", str(tmp_path / "one"), "--grad-accum", "2"])
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              str(ROOT / "recipes" / "train_lm.py"), *args, "--output-dir", str(tmp_path / "two"), "--grad-accum", "1"]
    done = subprocess.run(launch, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = {run: [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("one", "two")}
    for key in ("train/loss", "train/grad_norm"):  # Adam hides a wrong gradient scale, the gradient norm does not
        assert [row[key] for row in logs["two"]] == pytest.approx([row[key] for row in logs["one"]], rel=1e-5), key
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints" / "step_000004" / "train_state").iterdir()) == [
        "optimizer.bin", "position.json", "random_states_0.pkl", "random_states_1.pkl", "scheduler.bin"]
    a = SemanticLM.from_pretrained(tmp_path / "one" / "final").state_dict()
    b = SemanticLM.from_pretrained(tmp_path / "two" / "final").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_manifest_errors_name_the_line(tmp_path):
    good = {"id": "a", "text": "red", "semantic": [1, 2]}
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({"id": "b", "semantic": [1]}), "'text' must be a non-empty string"),
        (json.dumps({"id": "b", "text": "red"}), "exactly one of 'semantic'"),
        (json.dumps({"id": "b", "text": "red", "semantic": [1, "x"]}), "list of integer ids"),
        (json.dumps({"id": "b", "text": "red", "semantic_path": "missing.npy"}), "does not exist"),
        (json.dumps({"id": "b", "text": "red", "semantic": [1, 99999]}), "must lie in [0, 16383]"),
        (json.dumps(good), "duplicate id 'a' (first on line 1)"),
    ]
    for line, message in cases:
        manifest = tmp_path / "bad.jsonl"
        manifest.write_text(json.dumps(good) + "\n\n" + line + "\n")
        with pytest.raises(ManifestError) as error:
            read_manifest(manifest, semantic_vocab_size=16384)
        assert str(error.value).startswith(f"{manifest}:3: "), str(error.value)
        assert message in str(error.value)


def test_interleaved_token_files_give_every_semantic_token(tmp_path):
    semantic = np.array([5, 6, 7])
    for k in (2, 4):
        acoustic = 100 + np.arange(3 * k).reshape(3, k)
        np.save(tmp_path / f"k{k}.npy", np.concatenate([semantic[:, None], acoustic], axis=1).reshape(-1))
    np.save(tmp_path / "plain.npy", semantic.astype(np.int16))
    rows = [{"id": "k2", "text": "red", "semantic_path": "k2.npy", "interleaved_k": 2},
            {"id": "k4", "text": "red", "semantic_path": "k4.npy", "interleaved_k": 4},
            {"id": "plain", "text": "red", "semantic_path": "plain.npy"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for utterance in read_manifest(tmp_path / "m.jsonl"):
        assert utterance.semantic.tolist() == [5, 6, 7], utterance.id

    (tmp_path / "m.jsonl").write_text(json.dumps({**rows[0], "interleaved_k": 4}) + "\n")
    with pytest.raises(ManifestError, match=r"m.jsonl:1: 9 interleaved tokens is not a whole number of groups of 5"):
        read_manifest(tmp_path / "m.jsonl")


def test_length_buckets_respect_max_tokens_and_resume_mid_epoch(tmp_path):
    utterances = read_manifest(write_corpus(tmp_path, n=40))
    config = LMConfig(text_vocab_size=64, semantic_vocab_size=64, hidden_size=8, intermediate_size=8,
                               num_layers=1, num_heads=1, num_kv_heads=1)
    dataset = SemanticLMDataset(utterances, lambda text: [len(w) for w in text.split()], config, prompt_prob=0.5,
                                seed=0, max_length=60)
    sampler = LengthBucketBatchSampler(dataset, max_tokens=120, seed=0)
    batches = sampler.epoch_batches(3)
    assert sorted(k[0] for b in batches for k in b) == dataset.usable  # each utterance once per epoch
    assert all(padded_tokens(b, dataset) <= 120 for b in batches)
    assert any(k[1] >= 0 for b in batches for k in b) and batches != sampler.epoch_batches(4)
    sampler.set_epoch(3, skip=2)
    assert list(sampler) == batches[2:]
    ranks = [LengthBucketBatchSampler(dataset, 120, seed=0, rank=r, num_replicas=3).rank_batches(3) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and sum(map(len, ranks)) == len(batches) // 3 * 3


def test_train_manifest_takes_several_manifests_on_the_command_line(tmp_path, train_lm):
    first = write_corpus(tmp_path)
    second = tmp_path / "second.jsonl"
    second.write_text(first.read_text().replace('"id": "utt', '"id": "more'))
    config = write_config(tmp_path, first, max_steps=1, save_every=100, log_every=1)
    run = tmp_path / "run"
    train_lm.main(["--config", str(config), "--output-dir", str(run), "--train-manifest", str(first), str(second)])
    data = json.loads((run / "train_config.json").read_text())["data"]
    assert data["train_manifest"] == [str(first), str(second)]
    with pytest.raises(ManifestError, match="is in both"):  # both were read
        train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "twice"), "--train-manifest",
                       str(first), str(first)])
    train_lm.main(["--config", str(config), "--output-dir", str(tmp_path / "one"), "--train-manifest", str(first)])
    assert json.loads((tmp_path / "one" / "train_config.json").read_text())["data"]["train_manifest"] == str(first)
