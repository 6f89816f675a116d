"""The instruction template (seed 002, Alpaca): the one definition the preprocess step trains on and the
scoring script prompts with (the UI's Instruction mode asks the scoring script for it), so the model is
always asked in exactly the form it learnt.

    ### Instruction:\\n{instruction}\\n\\n[### Input:\\n{input}\\n\\n]### Response:\\n{response}<|endoftext|>
"""

from __future__ import annotations

from pipeline_contracts.document_kinds import END_OF_TEXT

RESPONSE_HEADER = "### Response:\n"
# A generated section header means the model has moved past the response (e.g. into another record).
SECTION_START = "\n### "


def instruction_prompt(instruction: str, input_text: str = "") -> str:
    """Everything before the response: what the model is given to answer."""
    body = f"### Instruction:\n{instruction}\n\n"
    if input_text:
        body += f"### Input:\n{input_text}\n\n"
    return body + RESPONSE_HEADER


def training_example(instruction: str, input_text: str, response: str) -> str:
    """One record as training text: the prompt, the response, then end-of-text."""
    return instruction_prompt(instruction, input_text) + response + END_OF_TEXT


def response_only(generated: str) -> str:
    """The response in generated text: up to end-of-text or the start of another section."""
    return generated.split(END_OF_TEXT, 1)[0].split(SECTION_START, 1)[0].strip()
