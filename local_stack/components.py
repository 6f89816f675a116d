"""Turn an AML command component YAML (aks_jobs/components/*.yml) into the argv to run locally.

The local backend runs the very `command:` line AML runs: `${{inputs.x}}` / `${{outputs.y}}` become
local values and paths, and each optional `$[[ ... ]]` part is kept only when every input it names
is set (AML's rule). Nothing about the steps is restated here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

COMPONENTS_DIR = Path(__file__).resolve().parents[1] / "aks_jobs" / "components"
_REF = re.compile(r"\$\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)


class ComponentError(ValueError):
    """The component YAML or the values given for it are wrong; the message says which and how."""


@dataclass(frozen=True)
class Component:
    name: str
    path: Path
    command: str
    code_dir: Path  # the `code:` folder, the step's working directory (AML uploads and runs from it)
    inputs: dict[str, dict]
    outputs: dict[str, dict]

    def argv(self, inputs: dict[str, object], outputs: dict[str, Path | str]) -> list[str]:
        """The command with every reference bound; `inputs` left out or None take the YAML default."""
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise ComponentError(
                f"{self.path.name}: no input named {', '.join(unknown)}; it has {', '.join(self.inputs)}"
            )
        missing_out = sorted(set(self.outputs) - set(outputs))
        if missing_out:
            raise ComponentError(f"{self.path.name}: give a path for output(s) {', '.join(missing_out)}")
        values: dict[str, dict[str, str]] = {"inputs": {}, "outputs": {k: str(v) for k, v in outputs.items()}}
        for name, spec in self.inputs.items():
            value = inputs.get(name)
            if value is None:
                value = spec.get("default")
            if value is None:
                if not spec.get("optional", False):
                    raise ComponentError(f"{self.path.name}: input '{name}' is required and has no default; set it")
                continue
            if "enum" in spec and value not in spec["enum"]:
                raise ComponentError(f"{self.path.name}: input '{name}'={value!r} is not one of {spec['enum']}")
            values["inputs"][name] = str(value)

        def bind(match: re.Match) -> str:
            kind, name = match.group(1), match.group(2)
            declared = self.inputs if kind == "inputs" else self.outputs
            if name not in declared:
                raise ComponentError(
                    f"{self.path.name}: command uses {kind}.{name}, which the component does not declare"
                )
            return shlex.quote(values[kind][name])

        def optional_part(match: re.Match) -> str:
            part = match.group(1)
            refs = _REF.findall(part)
            if all(name in values[kind] for kind, name in refs):
                return _REF.sub(bind, part)
            return ""

        command = _OPTIONAL.sub(optional_part, self.command)
        return shlex.split(_REF.sub(bind, command))


def load(name: str, directory: Path = COMPONENTS_DIR) -> Component:
    """Load `<directory>/<name>.yml` (e.g. load("train"))."""
    path = directory / f"{name}.yml"
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ComponentError(f"component file {path} not found") from None
    if not isinstance(spec, dict) or spec.get("type") != "command" or not spec.get("command"):
        raise ComponentError(f"{path} is not an AML command component (type: command with a command:)")
    return Component(
        name=spec.get("name", name),
        path=path,
        command=spec["command"],
        code_dir=(path.parent / spec.get("code", ".")).resolve(),
        inputs=spec.get("inputs") or {},
        outputs=spec.get("outputs") or {},
    )
