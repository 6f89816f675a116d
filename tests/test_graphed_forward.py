"""The CUDA-graph decode step: bucket choice, padding to a bucket, the static (whole-context) step, the setting
that turns it off; on a CUDA machine, graph replays against eager steps."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from tiny_model import make_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from aks_jobs.lm.decoding import Row, decode
from aks_jobs.lm.graphed_forward import GraphedForward, bucket_for, row_buckets
from aks_jobs.lm.kv_forward import CachedForward, Gpt2CachedForward
from aks_jobs.lm.serving_limits import ServingLimits
from aks_jobs.lm.serving_model import ServingModel, cached_forward

PROMPTS = ["Diogo is", "The quick brown fox jumps over the", "Declaration: the documents describe a", "x", "The"]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> ServingModel:
    """The tiny model in float32 on the CPU, on any machine (load_serving_model would take a GPU when present)."""
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")  # context of 128 tokens
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    return ServingModel(
        model=model, tokenizer=AutoTokenizer.from_pretrained(folder), name="tiny", version="1", folder=folder
    )


def test_buckets_are_powers_of_two_up_to_the_slots():
    assert row_buckets(1) == (1,)
    assert row_buckets(6) == (1, 2, 4, 6)
    assert row_buckets(64) == (1, 2, 4, 8, 16, 32, 64)
    with pytest.raises(ValueError, match="0 slots"):
        row_buckets(0)
    with pytest.raises(ValueError, match="7 rows exceed the largest bucket"):
        bucket_for(7, row_buckets(6))


def test_a_batch_gets_the_smallest_bucket_that_holds_it():
    for slots in range(1, 300):  # every cache size and batch, exhaustively (plain Python, milliseconds)
        buckets = row_buckets(slots)
        for rows in range(1, slots + 1):
            bucket = bucket_for(rows, buckets)
            assert rows <= bucket <= slots
            assert all(smaller < rows for smaller in buckets if smaller < bucket)
            assert bucket < 2 * rows or bucket == 1  # padding at most doubles the rows


def positions_in_use(forward: Gpt2CachedForward, served: ServingModel) -> torch.Tensor:
    """Prefill a prompt per slot; return each slot's next position."""
    prompts = [torch.tensor(served.tokenizer(prompt)["input_ids"]) for prompt in PROMPTS[: forward.slots]]
    forward.prefill(range(len(prompts)), prompts)
    return torch.tensor([len(prompt) for prompt in prompts])


def test_the_static_step_gives_the_windowed_steps_logits(served):
    forward = Gpt2CachedForward(served.model, slots=4)
    positions = positions_in_use(forward, served)
    tokens = torch.tensor([5, 17, 3, 42])
    windowed = forward.step(tokens, positions)
    static = forward.step_static(tokens, positions)  # same cache writes: the same keys land in the same places
    assert static.shape == windowed.shape == (4, forward.vocab_size)
    torch.testing.assert_close(static, windowed, rtol=1e-5, atol=1e-5)


def test_padding_to_a_bucket_leaves_the_real_rows_logits_alone(served):
    forward = Gpt2CachedForward(served.model, slots=5)
    padded = GraphedForward(forward, capture=False)  # buckets 1, 2, 4, 5: three rows run as four
    positions = positions_in_use(forward, served)[:3]
    tokens = torch.tensor([7, 8, 9])
    reference = Gpt2CachedForward(served.model, slots=5)
    positions_in_use(reference, served)
    torch.testing.assert_close(padded.step(tokens, positions), reference.step(tokens, positions), rtol=1e-5, atol=1e-5)
    assert padded._tokens[3] == 0 and padded._positions[3] == 0  # the idle row fed token 0 at position 0


def decode_with(forward: CachedForward, served: ServingModel, rows: list[Row]) -> list[list[int]]:
    return decode(served.model, rows, eos_token_ids=[served.tokenizer.eos_token_id], forward=forward)


def rows_to_decode(served: ServingModel) -> list[Row]:
    """Greedy rows of different lengths (the batch shrinks through the buckets) and seeded sampled rows."""
    generator = torch.Generator().manual_seed(3)
    rows = [
        Row(served.tokenizer(prompt)["input_ids"], max_new_tokens=length, repetition_penalty=1.2)
        for prompt, length in zip(PROMPTS[:3], [20, 9, 14])
    ]
    rows += [
        Row(
            served.tokenizer(prompt)["input_ids"],
            max_new_tokens=16,
            do_sample=True,
            temperature=1.3,
            top_k=20,
            top_p=0.9,
            uniforms=torch.rand(16, generator=generator),
        )
        for prompt in PROMPTS[3:]
    ]
    return rows


def test_padded_static_decoding_matches_generate_and_the_eager_decoder(served):
    rows = rows_to_decode(served)
    padded = decode_with(GraphedForward(Gpt2CachedForward(served.model, 6), capture=False), served, rows)
    eager = decode_with(Gpt2CachedForward(served.model, 6), served, rows)
    assert padded == eager
    for row, tokens in zip(rows[:3], padded):
        expected = served.model.generate(
            torch.tensor([row.prompt]),
            max_new_tokens=row.max_new_tokens,
            do_sample=False,
            repetition_penalty=1.2,
            pad_token_id=served.tokenizer.eos_token_id,
        )
        assert tokens == expected[0, len(row.prompt) :].tolist()


def test_capture_needs_a_cuda_device(served):
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, not cpu"):
        GraphedForward(Gpt2CachedForward(served.model, 2))


def test_the_setting_turns_graphs_off_and_only_cuda_turns_them_on(served, monkeypatch):
    assert ServingLimits.for_device("cuda:0").use_cuda_graphs
    assert not ServingLimits.for_device("cpu").use_cuda_graphs
    cpu = ServingLimits.for_device("cpu")
    assert type(cached_forward(served, cpu.max_rows, cuda_graphs=cpu.use_cuda_graphs)) is Gpt2CachedForward
    monkeypatch.setenv("SCORING_CUDA_GRAPHS", "off")
    assert not ServingLimits.for_device("cuda").use_cuda_graphs
    monkeypatch.setenv("SCORING_CUDA_GRAPHS", "on")
    with pytest.raises(ValidationError, match="cuda_graphs"):
        ServingLimits.for_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs run on a CUDA device only (GPU machine)")
def test_graph_replays_give_the_eager_logits_on_cuda(served):
    model = AutoModelForCausalLM.from_pretrained(served.folder, attn_implementation="sdpa").to("cuda").eval()
    graphed = GraphedForward(Gpt2CachedForward(model, slots=5))
    eager = Gpt2CachedForward(model, slots=5)
    positions = positions_in_use(graphed.forward, served).cuda()
    positions_in_use(eager, served)
    # Largest first: a padded step feeds idle slots token 0 at position 0 (CachedForward.step lets idle slots take
    # anything), so after the 3-row step (bucket 4) slot 3 holds that padding; no later step here reads it.
    for rows in (5, 3, 1):  # buckets 5, 4 (padded) and 1
        tokens = torch.arange(rows, device="cuda") + 11
        expected = eager.step(tokens, positions[:rows])
        torch.testing.assert_close(graphed.step(tokens, positions[:rows]), expected, rtol=1e-4, atol=1e-4)
        positions[:rows] += 1
    rows = rows_to_decode(served)
    assert decode_with(GraphedForward(Gpt2CachedForward(model, 6)), served, rows) == decode_with(
        Gpt2CachedForward(model, 6), served, rows
    )
