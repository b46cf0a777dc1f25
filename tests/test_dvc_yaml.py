"""dvc.yaml's deps cover what each stage computes with: every package module a stage script imports is a dep
(logging and path-naming modules excepted, as dvc.yaml's header says), so changing that code reruns the stage."""

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NOT_COMPUTING = {"tracking", "plots", "paths", "records", "cli", "errors"}  # logs, plots, names, formats, messages


def imported_modules(script: Path) -> set[str]:
    """Top-level ``mambaprune`` submodules that ``script`` imports (``mambaprune.pruning.rounds`` -> ``pruning``)."""
    found = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mambaprune":
            parts = node.module.split(".")
            found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
    return found


def module_path(name: str) -> str:
    package = ROOT / "src" / "mambaprune" / name
    return f"src/mambaprune/{name}" if package.is_dir() else f"src/mambaprune/{name}.py"


def test_every_computing_module_a_stage_imports_is_a_dep():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    missing = {}
    for name, stage in stages.items():
        if stage.get("always_changed"):
            continue  # summary reruns every time anyway
        stage = stage.get("do", stage)  # foreach stages keep their body under `do`
        script = ROOT / stage["cmd"].split()[1]
        deps = set(stage["deps"])
        need = {module_path(m) for m in imported_modules(script) - NOT_COMPUTING}
        if need - deps:
            missing[name] = sorted(need - deps)
    assert not missing, f"add these to the stages' deps in dvc.yaml: {missing}"
