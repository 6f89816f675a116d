"""Document kinds in the model (seed 003): one special token per kind, one id each, kept by the saved tokenizer;
a model trained on a kind-tagged snapshot lists its kinds in its summary, its card and its scoring answers, and a
request's kind starts the prompt with the kind's token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from score_script import call, init_score
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config

from aks_jobs.lm.base_model import load_local, train_tokenizer
from aks_jobs.lm.kind_tokens import add_kind_tokens, model_kinds
from aks_jobs.lm.model_card import build_card, card_tags, markdown
from aks_jobs.lm.scoring_request import RequestError, is_info_request, parse_request
from aks_jobs.pdf_text.build import Options, build_snapshot
from pipeline_contracts.evaluation import Evaluation
from pipeline_contracts.scoring import INFO_REQUEST, ModelInfo
from synthetic_data.prose import prose
from tests import contract_samples
from ui.run_view import card_facts

REPO = Path(__file__).resolve().parents[1]
LETTER = "Note: the orchard behind the mill is in bloom and the bees are back."
MEMO = "Note: the budget of the harbour office is due on Friday at noon."


def _tiny(tmp_path: Path):
    tokenizer = train_tokenizer([prose(0, 40)], vocab_size=400)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=1, n_head=2)
    return tokenizer, AutoModelForCausalLM.from_config(config)


def test_each_kind_is_one_special_token_kept_by_the_saved_model(tmp_path: Path) -> None:
    tokenizer, model = _tiny(tmp_path)
    before = len(tokenizer)
    assert add_kind_tokens(tokenizer, model, ["letters", "memos"]) == ["letters", "memos"]
    assert len(tokenizer) == before + 2 and model.get_input_embeddings().num_embeddings == len(tokenizer)
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")

    # Read back as the next train step (a local base model) and the scoring server read it.
    base = load_local(tmp_path / "model", "--base-model")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "model")
    for tok in (base.tokenizer, reloaded):
        letters = tok.convert_tokens_to_ids("<|letters|>")
        assert letters >= before and tok("<|letters|>")["input_ids"] == [letters]  # one id, never split
        ids = tok("<|letters|> Dear Anna<|memos|>x")["input_ids"]
        assert ids[0] == letters and tok.convert_tokens_to_ids("<|memos|>") in ids
        assert model_kinds(tok) == ["letters", "memos"]
    assert base.model.get_input_embeddings().num_embeddings == len(reloaded)
    # Training again with one more kind keeps the earlier ones (same ids) and adds only the new one.
    kept = base.tokenizer.convert_tokens_to_ids("<|letters|>")
    assert add_kind_tokens(base.tokenizer, base.model, ["letters", "qa"]) == ["letters", "memos", "qa"]
    assert base.tokenizer.convert_tokens_to_ids("<|letters|>") == kept and len(base.tokenizer) == before + 3


def test_a_request_kind_must_be_one_the_model_knows() -> None:
    request = parse_request(json.dumps({"prompt": "Dear", "kind": "letters"}), kinds=("letters",))
    assert request.prompt_texts == ("<|letters|> Dear",) and request.parameters()["kind"] == "letters"
    instruction = parse_request(json.dumps({"prompt": "Hi", "kind": "qa", "format": "instruction"}), kinds=("qa",))
    assert instruction.prompt_texts[0].startswith("<|qa|> ### Instruction:\nHi")
    assert "kind" not in parse_request(json.dumps({"prompt": "Dear"})).parameters()
    with pytest.raises(RequestError, match="'kind' 'memos' is not a document kind of this model.*knows letters"):
        parse_request(json.dumps({"prompt": "Dear", "kind": "memos"}), kinds=("letters",))
    with pytest.raises(RequestError, match="trained without document kinds"):
        parse_request(json.dumps({"prompt": "Dear", "kind": "memos"}))
    # Only the exact info request asks what is served; anything else is a request for text, checked as such.
    assert is_info_request(json.dumps(INFO_REQUEST)) and is_info_request(b'{"info":true}')
    assert not any(map(is_info_request, ["{}", '{"info": false}', '{"info": true, "prompt": "x"}', "[]", "x"]))


@pytest.mark.slow
def test_a_model_trained_on_kind_folders_serves_its_kinds_and_each_kind_steers_the_text(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    for folder, line in (("letters", LETTER), ("memos", MEMO)):
        (inputs / folder).mkdir(parents=True)
        (inputs / folder / "a.txt").write_text(line + "\n", encoding="utf-8")
    snapshot = build_snapshot(inputs, tmp_path / "processed", options=Options(workers=1)).snapshot
    assert "<|letters|> " + LETTER + " <|endoftext|>" in snapshot.text.read_text()
    output = tmp_path / "model"
    result = subprocess.run(
        [sys.executable, str(REPO / "aks_jobs" / "train.py"), "--data", str(tmp_path / "processed")]
        + ["--output", str(output), "--base-model", "offline", "--preset", "memorize"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((output / "train_summary.json").read_text())["kinds"] == ["letters", "memos"]

    init_score(output)
    status, info = call(INFO_REQUEST)
    assert status == 200 and ModelInfo.model_validate(info).model.kinds == ["letters", "memos"]
    greedy = {"prompt": "Note:", "max_new_tokens": 12, "do_sample": False}
    answers = {}
    for kind in ("letters", "memos"):
        status, answer = call({**greedy, "kind": kind})
        assert status == 200 and answer["model"]["kinds"] == ["letters", "memos"], answer
        answers[kind] = answer["generations"][0][0]
    assert answers["letters"].startswith(" the orchard"), answers
    assert answers["memos"].startswith(" the budget"), answers
    status, refused = call({**greedy, "kind": "recipes"})
    assert status == 400 and refused["field"] == "kind" and "letters, memos" in refused["message"]


def test_the_model_card_lists_the_document_kinds() -> None:
    result = Evaluation.model_validate(contract_samples.evaluation())
    result.training.kinds = ["letters", "memos"]
    card = build_card(result, "gpt2-pdf", "7", "2026.11.30-3", datetime(2026, 11, 30, tzinfo=UTC), [])
    assert card.kinds == ["letters", "memos"] and card_tags(card)["kinds"] == "letters,memos"
    assert "`<|letters|>`, `<|memos|>`" in markdown(card, [])
    assert card_facts(card)["document kinds"] == "letters, memos"
    plain = build_card(Evaluation.model_validate(contract_samples.evaluation()), "m", "1", "r", datetime.now(UTC), [])
    assert plain.kinds == [] and "kinds" not in card_tags(plain) and "Document kinds" not in markdown(plain, [])
