"""Instruction data (seed 002, Alpaca): .jsonl/.json records -> the template of lm.prompt_format in the snapshot;
bad records reported in the manifest by line and reason, the good ones used."""

from __future__ import annotations

import json
from pathlib import Path

from aks_jobs.lm.prompt_format import END_OF_TEXT, instruction_prompt, response_only, training_example
from aks_jobs.pdf_text.build import Options, build_snapshot
from synthetic_data.pdfs import ENGLISH_TEXT, make_text_pdf

ALPACA = {"instruction": "Name the lighthouse keeper.", "input": "", "output": "Her name is Odile Varga."}
WITH_INPUT = {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}
PROMPT_COMPLETION = {"prompt": "Where is the spare key?", "completion": "Under the blue stone."}


def test_the_template_is_the_alpaca_format_with_input_only_when_present() -> None:
    assert training_example("Do it.", "", "Done.") == "### Instruction:\nDo it.\n\n### Response:\nDone.<|endoftext|>"
    assert training_example("Do it.", "this", "Done.") == (
        "### Instruction:\nDo it.\n\n### Input:\nthis\n\n### Response:\nDone.<|endoftext|>"
    )
    assert instruction_prompt("Do it.") == "### Instruction:\nDo it.\n\n### Response:\n"
    assert response_only(" Done.<|endoftext|>### Instruction:\nMore") == "Done."
    assert response_only(" Done.\n### Instruction:\nMore") == "Done."


def _run(tmp_path: Path):
    result = build_snapshot(tmp_path / "inputs", tmp_path / "out", options=Options(workers=2))
    return {e.name: e for e in result.entries}, result.snapshot.text.read_text(encoding="utf-8")


def test_jsonl_and_json_records_become_templated_examples_and_bad_lines_are_reported(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    lines = [
        json.dumps(ALPACA),
        json.dumps(WITH_INPUT),
        "",
        "{not json",
        json.dumps({"instruction": "No answer."}),
        json.dumps(PROMPT_COMPLETION),
        json.dumps(["a", "list"]),
        json.dumps({"prompt": "", "completion": "x"}),
    ]
    (inputs / "facts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (inputs / "more.json").write_text(json.dumps([PROMPT_COMPLETION, {"output": "orphan"}], indent=2), encoding="utf-8")
    (inputs / "broken.json").write_text('[{"instruction": "x", "output": "y"},', encoding="utf-8")
    (inputs / "useless.jsonl").write_text('{"text": "not an instruction record"}\n', encoding="utf-8")
    make_text_pdf(inputs / "paper.pdf", [ENGLISH_TEXT])
    entries, text = _run(tmp_path)

    facts = entries["facts.jsonl"]
    assert facts.status == "warning" and facts.engine == "instructions" and facts.records == 3
    [message] = facts.messages
    assert message.startswith("4 of 7 record(s) left out: line 4: not valid JSON")
    assert "line 5: 'output' field required" in message
    assert "line 7: a record must be a JSON object, not list" in message
    assert "line 8: 'prompt' string should have at least 1 character" in message
    assert training_example(ALPACA["instruction"], "", ALPACA["output"]) in text
    assert training_example(WITH_INPUT["instruction"], WITH_INPUT["input"], WITH_INPUT["output"]) in text
    assert training_example(PROMPT_COMPLETION["prompt"], "", PROMPT_COMPLETION["completion"]) in text
    assert text.count(END_OF_TEXT) == 4  # 3 from facts.jsonl, 1 from more.json
    assert "No answer." not in text

    more = entries["more.json"]
    assert more.records == 1 and "line 6: 'instruction' field required" in more.messages[0]
    assert entries["broken.json"].status == "error" and "not valid JSON" in entries["broken.json"].messages[0]
    assert entries["useless.jsonl"].status == "error" and "No record is usable" in entries["useless.jsonl"].messages[0]
    assert entries["paper.pdf"].status == "ok" and ENGLISH_TEXT[:40] in text
