"""The second-stage (flow) training recipe on a synthetic token corpus: tiny, CPU-only, offline.

Each of four speakers maps (semantic id, place of the frame in its k-group) to acoustic ids through a table of its
own, plus 5 % noise, so an utterance's acoustic tokens depend on both its content and its speaker: only the voice
prompt tells a model which table a held-out utterance uses.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from flow.config import FlowConfig
from flow.model import AcousticFlow
from flow.sampling import FlowRequest, FlowSamplingConfig, generate
from recipes.data import LengthBucketBatchSampler, ManifestError, padded_tokens
from recipes.flow_data import DataConfig, FlowDataset, Utterance, collate, read_manifest

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "configs" / "flow_tiny.json"
SPEAKERS, PER_SPEAKER, K = 4, 10, 2
SEMANTIC_IDS, ACOUSTIC_IDS = 12, 48  # ids the corpus uses; the test model's vocabularies are 16 and 64
NOISE = 0.05


@pytest.fixture
def train_flow():
    """The recipe module; each run in this process starts from accelerate's defaults, as a new process would. One
    thread: these models are too small to gain from two, and a busy machine makes two threads crawl."""
    pytest.importorskip("accelerate", reason="training needs the [train] extra: pip install -e '.[train]'")
    from accelerate.state import AcceleratorState, GradientState

    from recipes import train_flow

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train_flow
    torch.set_num_threads(threads)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def make_corpus() -> list[dict]:
    """SPEAKERS x PER_SPEAKER manifest rows of 20-39 semantic tokens; speaker s's utterance u is row s·10 + u."""
    tables = [np.random.default_rng(100 + s).integers(0, ACOUSTIC_IDS, size=(SEMANTIC_IDS, K)) for s in range(SPEAKERS)]
    rng = np.random.default_rng(0)
    rows = []
    for s in range(SPEAKERS):
        for u in range(PER_SPEAKER):
            semantic = rng.integers(0, SEMANTIC_IDS, size=int(rng.integers(20, 40)))
            acoustic = tables[s][semantic].reshape(-1)  # k ids per semantic id: s0's, s1's, ...
            noisy = rng.random(len(acoustic)) < NOISE  # drawn before the noise ids, as the tests were tuned
            acoustic = np.where(noisy, rng.integers(0, ACOUSTIC_IDS, len(acoustic)), acoustic)
            rows.append({"id": f"s{s}u{u}", "speaker": f"spk{s}", "semantic": semantic.tolist(),
                         "acoustic": acoustic.tolist()})
    return rows


def write_manifest(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_config(folder: pathlib.Path, train_manifest: pathlib.Path, data: dict, **train) -> pathlib.Path:
    config = json.loads(TINY.read_text())
    config["model"].update(semantic_vocab_size=16, acoustic_vocab_size=64)  # what the corpus needs: fast on CPU
    config["data"].update({"train_manifest": str(train_manifest), "eval_fraction": 0.0, **data})
    config["train"].update(train)
    path = folder / "flow.json"
    path.write_text(json.dumps(config))
    return path


def prompted_batch(targets: list[dict], prompts: list[dict]) -> dict[str, torch.Tensor]:
    """[prompt | target] manifest rows, collated as the recipe collates its examples."""
    return collate([{"acoustic": np.array(prompt["acoustic"] + target["acoustic"]),
                     "semantic": np.array(prompt["semantic"] + target["semantic"]),
                     "prompt_frames": len(prompt["acoustic"])} for target, prompt in zip(targets, prompts)])


def test_tiny_flow_beats_unigram_baseline_on_held_out_tokens(tmp_path, train_flow):
    rows = make_corpus()
    held = [row for row in rows if row["id"].endswith(f"u{PER_SPEAKER - 1}")]  # one unseen utterance per speaker
    train_rows = [row for row in rows if row not in held]
    config = write_config(tmp_path, write_manifest(tmp_path / "train.jsonl", train_rows),
                          {"eval_manifest": str(write_manifest(tmp_path / "held.jsonl", held)), "max_tokens": 512},
                          max_steps=300, eval_every=150, save_every=1000, log_every=50)
    result = train_flow.main(["--config", str(config), "--output-dir", str(tmp_path / "run")])
    assert set(result.evals[300]) == {"loss", "loss_50", "accuracy_50"}
    assert result.losses[300] < 0.5 * result.losses[1], result.losses

    flow = AcousticFlow.from_pretrained(tmp_path / "run" / "final")
    unigram = np.bincount(np.concatenate([row["acoustic"] for row in train_rows])).argmax()
    prompts = [next(row for row in train_rows if row["speaker"] == target["speaker"]) for target in held]
    batch = prompted_batch(held, prompts)
    model_hits, unigram_hits, scored = 0, 0, 0
    for seed in range(4):  # several random halves of each target masked
        generator = torch.Generator().manual_seed(seed)
        masked = train_flow.fixed_ratio_mask(batch["prompt_frames"], batch["frames"], batch["acoustic"].shape[1],
                                             0.5, generator)
        inputs = torch.where(masked, flow.config.mask_id, batch["acoustic"])
        with torch.no_grad():
            logits = flow(inputs, batch["semantic"], torch.arange(inputs.shape[1])[None] < batch["frames"][:, None])
        truth = batch["acoustic"][masked]
        model_hits += int((logits[masked].argmax(-1) == truth).sum())
        unigram_hits += int((truth == unigram).sum())
        scored += len(truth)
    model_accuracy, unigram_accuracy = model_hits / scored, unigram_hits / scored
    print(f"held-out accuracy at 50 % masking: model {model_accuracy:.3f}, unigram {unigram_accuracy:.3f}")
    assert unigram_accuracy < 0.15 and model_accuracy > unigram_accuracy + 0.25
    assert result.evals[300]["accuracy_50"] > unigram_accuracy + 0.2  # the recipe's own eval (self-prompted) agrees

    # Whole targets from nothing but their semantic tokens and the prompt: the prompt must carry the speaker.
    sampling = FlowSamplingConfig(steps=4, temperature=0, choice_temperature=0)
    empty = torch.zeros(0, dtype=torch.long)
    truth = np.concatenate([target["acoustic"] for target in held])
    accuracy = {}
    for name, requests in (
            ("prompted", [FlowRequest(torch.tensor(t["semantic"]), torch.tensor(p["acoustic"]),
                                      torch.tensor(p["semantic"])) for t, p in zip(held, prompts)]),
            ("unprompted", [FlowRequest(torch.tensor(t["semantic"]), empty, empty) for t in held])):
        generated = torch.cat(generate(flow, requests, sampling, seed=0)).numpy()
        accuracy[name] = float((generated == truth).mean())
    print(f"generated held-out tokens: {accuracy}, unigram {float((truth == unigram).mean()):.3f}")
    assert accuracy["prompted"] > max(accuracy["unprompted"], float((truth == unigram).mean())) + 0.15


class Killed(Exception):
    pass


def test_killed_and_resumed_flow_training_equals_uninterrupted(tmp_path, train_flow):
    manifest = write_manifest(tmp_path / "train.jsonl", make_corpus())
    # small batches and accumulation so the kill lands mid-epoch, with prompts, eval and the LR schedule in play
    config = write_config(tmp_path, manifest, {"max_tokens": 256, "eval_fraction": 0.2}, max_steps=8, save_every=3,
                          eval_every=4, log_every=1, warmup_steps=2, grad_accum=2, keep_last=5)
    whole = train_flow.main(["--config", str(config), "--output-dir", str(tmp_path / "whole")])

    def kill_after_step_6(step: int) -> None:
        if step == 6:
            raise Killed
    with pytest.raises(Killed):
        train_flow.main(["--config", str(config), "--output-dir", str(tmp_path / "cut")], on_step=kill_after_step_6)
    checkpoints = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_000003", "step_000006"]
    assert json.loads((checkpoints / "step_000006" / "train_state" / "position.json").read_text())["batches_done"]

    resumed = train_flow.main(["--config", str(config), "--output-dir", str(tmp_path / "cut"), "--resume", "auto"])
    assert resumed.losses == {step: whole.losses[step] for step in (7, 8)}
    assert resumed.evals == {8: whole.evals[8]}
    a = AcousticFlow.from_pretrained(tmp_path / "whole" / "final").state_dict()
    b = AcousticFlow.from_pretrained(tmp_path / "cut" / "final").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_step_gradient_is_the_mean_over_the_masked_frames_of_all_its_micro_batches(tmp_path, train_flow):
    """How many frames the loss masks is known only after each forward; the step must still weigh every masked
    frame of all its micro-batches the same: the gradient of (sum of their losses) / (their count)."""
    from recipes.training import TRAIN_SEEDS, loss_seed

    manifest = write_manifest(tmp_path / "train.jsonl", make_corpus())
    config = write_config(tmp_path, manifest, {"max_tokens": 256}, max_steps=1, grad_accum=3, clip_norm=0.0)
    train_flow.main(["--config", str(config), "--output-dir", str(tmp_path / "run")])
    logged = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[0])

    settings = json.loads(config.read_text())
    flow_config = FlowConfig.from_dict(settings["model"])
    torch.manual_seed(0)  # the recipe's set_seed(train.seed) before it builds the model
    flow = AcousticFlow(flow_config)
    dataset = FlowDataset(read_manifest(manifest, flow_config), flow_config, DataConfig(**settings["data"]), seed=0)
    loss, scored = 0.0, 0
    for micro, keys in enumerate(LengthBucketBatchSampler(dataset, 256, seed=0).rank_batches(0)[:3]):
        generator = torch.Generator().manual_seed(loss_seed(0, TRAIN_SEEDS, 1, micro))
        loss_sum, n_scored = flow.masked_loss(**collate([dataset[key] for key in keys]), generator=generator)
        loss, scored = loss + loss_sum, scored + int(n_scored)
    (loss / scored).backward()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in flow.parameters()]))
    assert logged["train/loss"] == pytest.approx(loss.item() / scored, rel=1e-5)
    assert logged["train/grad_norm"] == pytest.approx(norm.item(), rel=1e-4)


@pytest.mark.slow
def test_two_processes_match_one_process_accumulating_their_batches(tmp_path, train_flow):
    """Rank r takes batches r, r + 2, ... and micro-batch m of rank r masks with the seed of global micro-batch
    2m + r, so 2 ranks x 1 micro-batch compute what 1 rank x 2 micro-batches does, including the renormalisation
    by the randomly masked frame count (gloo on CPU, via torchrun)."""
    config = write_config(tmp_path, write_manifest(tmp_path / "train.jsonl", make_corpus()), {"max_tokens": 256},
                          max_steps=4, save_every=2, log_every=1, warmup_steps=2)
    one = train_flow.main(["--config", str(config), "--output-dir", str(tmp_path / "one"), "--grad-accum", "2"])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = [str(ROOT / "recipes" / "train_flow.py"), "--config", str(config), "--output-dir", str(tmp_path / "two")]
    done = subprocess.run([*torchrun, *script, "--grad-accum", "1"], env={**os.environ, "ACCELERATE_USE_CPU": "1"},
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    def logged(run: str, key: str) -> list[float]:
        return [json.loads(line)[key] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
    assert logged("two", "train/loss") == pytest.approx(list(one.losses.values()), rel=1e-5)
    # Adam hides a wrong gradient scale, the gradient norm does not
    assert logged("two", "train/grad_norm") == pytest.approx(logged("one", "train/grad_norm"), rel=1e-5)
    one_weights = AcousticFlow.from_pretrained(tmp_path / "one" / "final").state_dict()
    two_weights = AcousticFlow.from_pretrained(tmp_path / "two" / "final").state_dict()
    assert all(torch.allclose(one_weights[k], two_weights[k], atol=1e-5) for k in one_weights)


def test_manifest_errors_name_the_line(tmp_path):
    config = FlowConfig(semantic_vocab_size=16, acoustic_vocab_size=64, acoustic_per_semantic=2, dim=8, num_layers=1,
                        num_heads=1, intermediate_size=8)
    good = {"id": "a", "speaker": "x", "semantic": [1, 2], "acoustic": [3, 4, 5, 6]}
    cases = [
        ("{not json", "not valid JSON"),
        (json.dumps({**good, "id": ""}), "'id' must be a non-empty string"),
        (json.dumps({"id": "b", "semantic": [1]}), "give either 'semantic' and 'acoustic'"),
        (json.dumps({**good, "id": "b", "tokens_path": "t.npy"}), "found ['semantic', 'acoustic', 'tokens_path']"),
        (json.dumps({**good, "id": "b", "acoustic": [3, 4, 5]}),
         "3 acoustic ids for 2 semantic ids; expected exactly 2"),
        (json.dumps({**good, "id": "b", "semantic": [1, 16]}), "semantic ids must lie in [0, 15]"),
        (json.dumps({**good, "id": "b", "acoustic": [3, 4, 5, -1]}), "acoustic ids must lie in [0, 63]"),
        (json.dumps({**good, "id": "b", "semantic": [1, 2.5]}), "'semantic' must be a list of integer ids"),
        (json.dumps({**good, "id": "b", "speaker": ["x"]}), "'speaker' must be a string"),
        (json.dumps({"id": "b", "tokens_path": "missing.npy"}), "does not exist"),
        (json.dumps(good), "duplicate id 'a' (first on line 1)"),
    ]
    for line, message in cases:
        manifest = tmp_path / "bad.jsonl"
        manifest.write_text(json.dumps(good) + "\n\n" + line + "\n")
        with pytest.raises(ManifestError) as error:
            read_manifest(manifest, config)
        assert str(error.value).startswith(f"{manifest}:3: "), str(error.value)
        assert message in str(error.value), str(error.value)


def test_interleaved_token_files_match_token_lists(tmp_path):
    semantic = np.array([5, 6, 7])
    for k in (2, 4):
        acoustic = 100 + np.arange(3 * k)
        np.save(tmp_path / "tokens.npy", np.concatenate([semantic[:, None], acoustic.reshape(3, k)], axis=1).ravel())
        rows = [{"id": "file", "tokens_path": "tokens.npy"},
                {"id": "lists", "semantic": semantic.tolist(), "acoustic": acoustic.tolist()}]
        config = FlowConfig(semantic_vocab_size=16, acoustic_vocab_size=128, acoustic_per_semantic=k, dim=8,
                            num_layers=1, num_heads=1, intermediate_size=8)
        for utterance in read_manifest(write_manifest(tmp_path / "m.jsonl", rows), config):
            assert utterance.semantic.tolist() == [5, 6, 7] and utterance.acoustic.tolist() == acoustic.tolist()
    # the k = 4 file read with k = 2 splits into whole groups, but its acoustic ids land among the semantic ones
    config = FlowConfig(semantic_vocab_size=16, acoustic_vocab_size=128, acoustic_per_semantic=2, dim=8, num_layers=1,
                        num_heads=1, intermediate_size=8)
    with pytest.raises(ManifestError, match=r"m.jsonl:1: semantic ids .* does this file hold 2 acoustic tokens per"):
        read_manifest(write_manifest(tmp_path / "m.jsonl", rows[:1]), config)
    np.save(tmp_path / "tokens.npy", np.arange(10))  # 10 values: not whole groups of 1 + 2
    with pytest.raises(ManifestError, match=r"m.jsonl:1: 10 interleaved tokens is not a whole number of groups of 3"):
        read_manifest(tmp_path / "m.jsonl", config)

def test_examples_prompt_with_the_speaker_crop_to_the_context_and_batch_by_length():
    k, config = 2, FlowConfig(acoustic_per_semantic=2, max_frames=40, dim=8, num_layers=1, num_heads=1,
                              intermediate_size=8)
    utterances = [Utterance(f"u{i}", f"spk{i % 3}" if i < 12 else None, np.arange(n, dtype=np.int32) + 100 * i,
                            np.arange(k * n, dtype=np.int32) + 1000 * i)
                  for i, n in enumerate([3, 8, 12, 30, 5, 9, 17, 4, 6, 25, 2, 10, 7, 11])]
    dataset = FlowDataset(utterances, config, DataConfig(train_manifest="-"), seed=0)
    keys = dataset.plan_epoch(2)
    assert keys == dataset.plan_epoch(2) != dataset.plan_epoch(3)
    kinds = {"none": 0, "other": 0, "split": 0}
    for i, p, split in [key for epoch in range(6) for key in dataset.plan_epoch(epoch)]:
        example, n = dataset[(i, p, split)], len(utterances[i].semantic)
        acoustic, semantic, prompt = example["acoustic"], example["semantic"], example["prompt_frames"]
        assert len(acoustic) == k * len(semantic) == dataset.length((i, p, split)) <= 40
        if p < 0:
            kinds["none"] += 1
            prompt_tokens, start = 0, 0
        elif p == i:
            kinds["split"] += 1
            assert 0.15 * n - 1 <= split <= 0.5 * n + 1
            prompt_tokens, start = split, split
        else:
            kinds["other"] += 1
            assert utterances[p].speaker == utterances[i].speaker is not None
            assert set((acoustic[:prompt] // 1000).tolist()) <= {p}  # the end of the other utterance's frames
            prompt_tokens, start = len(utterances[p].semantic), 0
        target_tokens = min(n - start, 20)  # the target is cut only when it alone overflows the context
        assert prompt == k * min(prompt_tokens, 20 - target_tokens)  # the prompt gives way first
        assert acoustic[prompt:].tolist() == utterances[i].acoustic[k * start:k * (start + target_tokens)].tolist()
    assert min(kinds.values()) > 0, kinds
    crop = dataset[(9, 3, 0)]  # 30 prompt + 25 target semantic tokens in a 20-token context: target kept whole
    assert crop["prompt_frames"] == 0 and crop["acoustic"].tolist() == utterances[9].acoustic[:40].tolist()
    crop = dataset[(7, 1, 0)]  # prompt 8 + target 4 tokens fit; as would 16 of a 17-token prompt: its last 16
    assert crop["prompt_frames"] == 16 and dataset[(7, 6, 0)]["acoustic"][:32].tolist() == \
        utterances[6].acoustic[2:34].tolist()

    sampler = LengthBucketBatchSampler(dataset, max_tokens=80, seed=0)
    batches = sampler.epoch_batches(2)
    assert sorted(key[0] for batch in batches for key in batch) == list(range(len(utterances)))
    assert all(padded_tokens(batch, dataset) <= 80 for batch in batches)
    batch = collate([dataset[key] for key in batches[0]])
    assert batch["acoustic"].shape[1] == k * batch["semantic"].shape[1] == int(batch["frames"].max())
