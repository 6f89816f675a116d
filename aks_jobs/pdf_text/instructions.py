"""Instruction data (.jsonl / .json): Alpaca records (instruction, input, output) or prompt/completion
records -> training text in the template of lm.prompt_format; bad records reported by line, good ones kept."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aks_jobs.lm.prompt_format import training_example
from aks_jobs.pdf_text.clean import drop_control_characters, normalize_newlines, normalize_unicode

INSTRUCTION_SUFFIXES = (".jsonl", ".json")
# Bad records listed by line in the manifest; the rest are counted.
MAX_LISTED_RECORDS = 20


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)


class AlpacaRecord(_Record):
    instruction: str = Field(min_length=1)
    input: str = ""
    output: str = Field(min_length=1)


class PromptRecord(_Record):
    prompt: str = Field(min_length=1)
    completion: str = Field(min_length=1)


@dataclass
class InstructionSet:
    examples: list[str] = field(default_factory=list)  # training text of each good record
    bad: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, reason)


def is_instruction_name(name: str) -> bool:
    return name.lower().endswith(INSTRUCTION_SUFFIXES)


def _tidy(text: str) -> str:
    # Unicode and control characters as in PDF text; whitespace kept (responses may hold code).
    return drop_control_characters(normalize_unicode(normalize_newlines(text))).strip()


def _example(record: object) -> str:
    """The training text of one record; raises ValueError with the reason it cannot be used."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be a JSON object, not {type(record).__name__}")
    shape = AlpacaRecord if "instruction" in record or "output" in record else PromptRecord
    try:
        parsed = shape.model_validate(record)
    except ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(map(str, error['loc']))}' {error['msg'].lower()}" for error in exc.errors())
        raise ValueError(
            f"{problems} (an instruction record has 'instruction', optional 'input' and 'output', "
            "or 'prompt' and 'completion')"
        ) from None
    if isinstance(parsed, AlpacaRecord):
        return training_example(_tidy(parsed.instruction), _tidy(parsed.input), _tidy(parsed.output))
    return training_example(_tidy(parsed.prompt), "", _tidy(parsed.completion))


def _json_records(text: str) -> list[tuple[int, object]]:
    """(line, record) of a .json file: a list of records, or one record; lines located by a decoder scan."""
    data = json.loads(text)
    if not isinstance(data, list):
        return [(1, data)]
    # Line of each element: where its text starts, found by decoding element by element.
    decoder, index, found = json.JSONDecoder(), text.index("[") + 1, []
    for item in data:
        while text[index] in " \t\r\n,":
            index += 1
        found.append((text.count("\n", 0, index) + 1, item))
        _, index = decoder.raw_decode(text, index)
    return found


def parse_instructions(text: str, json_lines: bool) -> InstructionSet:
    """Records of a .jsonl (one per line) or .json (a list) file; raises ValueError if the file is not JSON."""
    result = InstructionSet()
    if json_lines:
        records: list[tuple[int, object]] = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                result.bad.append((number, f"not valid JSON ({exc.msg} at column {exc.colno})"))
    else:
        records = _json_records(text)
    for number, record in records:
        try:
            result.examples.append(_example(record))
        except ValueError as exc:
            result.bad.append((number, str(exc)))
    result.bad.sort()
    return result
