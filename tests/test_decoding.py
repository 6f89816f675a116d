"""The batched decode loop: greedy equals plain generate(), per-row settings follow HF's logits processors,
and a seeded request's text does not depend on what shares its batch."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from tiny_model import make_tiny_model
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from aks_jobs.lm.decoding import PREFILL_TOKENS, ContinuousDecoder, Row, Settings, draw, penalize, prefill_groups, warp
from aks_jobs.lm.generation import Completion, generate
from aks_jobs.lm.kv_forward import Gpt2CachedForward
from aks_jobs.lm.scoring_request import RequestError, parse_request
from aks_jobs.lm.serving_model import ServingModel, load_serving_model

# Different lengths, so the batch is left-padded; the last one is a single token.
PROMPTS = ["Diogo is", "The quick brown fox jumps over the", "Declaration: the documents describe a", "x"]


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> ServingModel:
    folder = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")  # context of 128 tokens
    return load_serving_model({"AZUREML_MODEL_DIR": str(folder)})


def request(prompt: str | list[str], **settings) -> object:
    return parse_request(json.dumps({"prompt": prompt, **settings}))


def plain_generate(served: ServingModel, prompt: str, **options) -> str:
    """Hugging Face's generate() on the prompt alone: no padding, nothing else in the batch."""
    encoded = served.tokenizer(prompt, return_tensors="pt")
    output = served.model.generate(**encoded, pad_token_id=served.tokenizer.pad_token_id, **options)
    return served.tokenizer.decode(output[0, encoded["input_ids"].shape[1] :], skip_special_tokens=True)


def texts(answers: list[Completion | RequestError]) -> list[list[list[str]]]:
    assert all(isinstance(answer, Completion) for answer in answers), answers
    return [answer.generations for answer in answers]


@pytest.mark.parametrize("penalty", [1.0, 1.3, 0.7])
def test_greedy_batch_equals_plain_generate(served, penalty):
    # One decode loop for all prompts, each with its own max_new_tokens.
    lengths = [30, 12, 25, 40]
    answers = generate(
        served.model,
        served.tokenizer,
        [
            request(prompt, do_sample=False, max_new_tokens=length, repetition_penalty=penalty)
            for prompt, length in zip(PROMPTS, lengths)
        ],
    )
    for prompt, length, answer in zip(PROMPTS, lengths, answers):
        assert answer.generations == [
            [plain_generate(served, prompt, max_new_tokens=length, do_sample=False, repetition_penalty=penalty)]
        ]
        assert answer.completion_tokens == length  # no EOS from this model on these prompts


def test_rows_stop_at_eos_like_generate(served, monkeypatch):
    ids = served.tokenizer(PROMPTS[0])["input_ids"]
    greedy = served.model.generate(
        torch.tensor([ids]), max_new_tokens=10, do_sample=False, pad_token_id=served.tokenizer.pad_token_id
    )[0, len(ids) :].tolist()
    monkeypatch.setattr(served.model.generation_config, "eos_token_id", greedy[4])  # the 5th new token stops it
    answers = generate(
        served.model, served.tokenizer, [request(prompt, do_sample=False, max_new_tokens=20) for prompt in PROMPTS]
    )
    assert answers[0].completion_tokens == greedy.index(greedy[4]) + 1
    for prompt, answer in zip(PROMPTS, answers):
        assert answer.generations == [[plain_generate(served, prompt, max_new_tokens=20, do_sample=False)]]


def test_rows_may_outlast_a_finished_row_that_filled_the_context(served):
    # The long prompt fills the context after 4 tokens while the short one runs 100: the finished row is fed
    # padding far past the context, and must neither fail nor disturb the other.
    long_prompt = "fox " * 41  # 124 tokens
    room = served.model.config.n_positions - len(served.tokenizer(long_prompt)["input_ids"])
    answers = generate(
        served.model,
        served.tokenizer,
        [
            request(long_prompt, do_sample=False, max_new_tokens=room),
            request("Diogo is", do_sample=False, max_new_tokens=100),
        ],
    )
    assert answers[0].generations == [[plain_generate(served, long_prompt, max_new_tokens=room, do_sample=False)]]
    assert answers[1].generations == [[plain_generate(served, "Diogo is", max_new_tokens=100, do_sample=False)]]


def test_top_k_1_sampling_is_greedy(served):
    sampled, greedy = generate(
        served.model,
        served.tokenizer,
        [
            request(PROMPTS, do_sample=True, top_k=1, temperature=1.7, max_new_tokens=20),
            request(PROMPTS, do_sample=False, max_new_tokens=20),
        ],
    )
    assert sampled.generations == greedy.generations


def test_seeded_request_gives_the_same_text_alone_or_in_a_batch(served):
    seeded = request(
        PROMPTS[:2],
        seed=7,
        num_return_sequences=3,
        max_new_tokens=25,
        temperature=1.2,
        top_k=0,
        top_p=0.9,
        repetition_penalty=1.2,
    )
    alone = texts(generate(served.model, served.tokenizer, [seeded]))[0]
    # Neighbours change the padding, the batch size and the rows' positions, and sample too.
    neighbours = [
        request("The quick brown fox jumps over the lazy dog. " * 2, seed=1, max_new_tokens=40),
        request("x", do_sample=False, max_new_tokens=5),
        request(PROMPTS, seed=2, num_return_sequences=2, top_k=5),
    ]
    together = texts(generate(served.model, served.tokenizer, [neighbours[0], seeded, *neighbours[1:]]))[1]
    assert together == alone
    assert len({text for per_prompt in alone for text in per_prompt}) == 6  # every sequence draws its own

    other_seed = texts(
        generate(served.model, served.tokenizer, [request(PROMPTS[:2], **{**seeded.parameters(), "seed": 8})])
    )[0]
    assert other_seed != alone


def test_a_request_that_does_not_fit_fails_alone(served):
    good, too_long, also_good = generate(
        served.model,
        served.tokenizer,
        [
            request("Diogo is", seed=3, max_new_tokens=5),
            request(["fine", "fox " * 200], max_new_tokens=5),
            request(PROMPTS, do_sample=False, max_new_tokens=5),
        ],
    )
    assert isinstance(too_long, RequestError) and too_long.field == "prompt[1]"
    assert len(good.generations) == 1 and len(also_good.generations) == len(PROMPTS)
    assert generate(served.model, served.tokenizer, [request("fox " * 200)])[0].field == "prompt"


def hf_processed(logits: torch.Tensor, seen_ids: list[list[int]], rows: list[Row]) -> torch.Tensor:
    """Each row through Hugging Face's own processors with that row's settings, in generate()'s order."""
    out = []
    for scores, ids, row in zip(logits, seen_ids, rows):
        scores, ids = scores[None].clone(), torch.tensor([ids])
        processors = [RepetitionPenaltyLogitsProcessor(row.repetition_penalty)] if row.repetition_penalty != 1 else []
        if row.do_sample:
            if row.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(row.temperature))
            if row.top_k:
                processors.append(TopKLogitsWarper(row.top_k))
            if row.top_p < 1.0:
                processors.append(TopPLogitsWarper(row.top_p))
        for processor in processors:
            scores = processor(ids, scores)
        out.append(scores[0])
    return torch.stack(out)


def warped_like_hugging_face(rows: list[Row], logits: torch.Tensor) -> torch.Tensor:
    """Our penalize + warp on a batch, checked against HF's processors row by row; returns our scores."""
    seen_ids = [torch.randint(logits.shape[1], (12,)).tolist() for _ in rows]
    seen = torch.zeros(logits.shape, dtype=torch.bool)
    for i, ids in enumerate(seen_ids):
        seen[i, ids] = True
    settings = Settings(rows, logits.shape[1], torch.device("cpu"))
    values, ids = warp(penalize(logits, seen, settings.penalty), settings)
    ours = torch.full_like(logits, float("-inf")).scatter(1, ids, values)
    theirs = hf_processed(logits, seen_ids, rows)
    assert torch.equal(torch.isinf(ours), torch.isinf(theirs))
    assert torch.allclose(ours[~torch.isinf(ours)], theirs[~torch.isinf(theirs)])
    return ours


@pytest.mark.parametrize("vocab", [300, 50257])
def test_logits_processing_matches_hugging_face_per_row(vocab):
    torch.manual_seed(0)
    with_top_k = [
        Row([1], 1, do_sample=True, temperature=0.7, top_k=50, top_p=0.95, repetition_penalty=1.3),
        Row([1], 1, do_sample=True, temperature=0.3, top_k=7, top_p=1.0, repetition_penalty=0.6),
        Row([1], 1, do_sample=True, temperature=2.0, top_k=3),
    ]
    whole_vocabulary = [
        Row([1], 1, do_sample=True, temperature=1.5, top_k=0, top_p=0.5),
        Row([1], 1, do_sample=True, top_k=vocab * 2, top_p=0.999),
        Row([1], 1, do_sample=True, top_p=1e-9),
    ]
    # Best-k candidates only, then every token of the vocabulary when a row filters none by top-k.
    warped_like_hugging_face(with_top_k, torch.randn(len(with_top_k), vocab) * 3)
    rows = with_top_k + whole_vocabulary
    ours = warped_like_hugging_face(rows, torch.randn(len(rows), vocab) * 3)
    assert (~torch.isinf(ours[-1])).sum() == 1  # the tiniest top_p still keeps the best token


def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.randn(2, 300)
    logits[0, 100:110] = 9.0  # ten best tokens tied: top_k=3 keeps all ten, beyond the 3 candidates looked at
    ours = warped_like_hugging_face(
        [Row([1], 1, do_sample=True, top_k=3), Row([1], 1, do_sample=True, top_k=2)], logits
    )
    assert (~torch.isinf(ours)).sum(-1).tolist() == [10, 2]


def test_draw_inverts_the_cumulative_distribution():
    values = torch.tensor([[0.5, 0.25, 0.25, 0.0]]).log()  # probabilities, best first; the last is filtered
    ids = torch.tensor([[7, 3, 9, 1]])
    picks = [draw(values, ids, torch.tensor([u])).item() for u in (0.0, 0.49, 0.5, 0.74, 0.75, 0.999999)]
    assert picks == [7, 7, 3, 3, 9, 9]


def test_a_sampled_row_draws_its_own_nth_uniform_at_its_nth_token(served):
    # The decoder keeps each row's token count on the device; this checks it against a plain loop that feeds
    # the whole sequence to the model and draws with uniforms[n] for token n.
    prompt = served.tokenizer(PROMPTS[1])["input_ids"]
    uniforms = torch.rand(12, generator=torch.Generator().manual_seed(5))
    row = Row(prompt, max_new_tokens=12, do_sample=True, temperature=1.5, top_k=40, top_p=0.9, uniforms=uniforms)
    late = Row(served.tokenizer(PROMPTS[0])["input_ids"], max_new_tokens=5, do_sample=True, uniforms=uniforms[:5])
    decoder = ContinuousDecoder(Gpt2CachedForward(served.model, 3), eos_token_ids=[])
    decoder.add([late])  # the row joins a step late, beside another one: its count is its own
    decoder.step()
    decoder.add([row])
    ours: list[int] = []
    while decoder.running:
        ours += [token for slot, token, _ in decoder.step() if slot == 1]

    settings, expected = Settings([row], served.model.config.vocab_size, torch.device("cpu")), []
    for n in range(12):
        with torch.no_grad():
            logits = served.model(torch.tensor([prompt + expected])).logits[:, -1].float()
        expected.append(int(draw(*warp(logits, settings), uniforms[n : n + 1])))
    assert ours == expected
    assert len(set(expected)) > 3  # the draws really vary


@given(st.lists(st.integers(1, 1024), max_size=64))
def test_prefill_groups_hold_every_prompt_once_within_the_token_bound(lengths):
    prompts = [(tuple(range(length)), slot) for slot, length in enumerate(lengths)]
    groups = prefill_groups(prompts)
    assert sorted(pair for group in groups for pair in group) == sorted(prompts)
    for group in groups:
        padded = max(len(prompt) for prompt, _ in group) * len(group)
        assert padded <= PREFILL_TOKENS or len(group) == 1
    if lengths and max(lengths) * len(lengths) <= PREFILL_TOKENS:
        assert len(groups) == 1  # what fits goes in one forward
