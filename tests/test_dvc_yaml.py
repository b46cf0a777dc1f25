"""dvc.yaml follows the package's modules exactly: each stage depends on every module its script computes with,
directly or through the modules those import, and on nothing else; and it declares every param key its script
reads. Logging, naming, writing and error-reporting modules are left out (dvc.yaml's header says why), so editing
a log line or an error message there reruns nothing."""

import ast
import dataclasses
import typing
from pathlib import Path

import yaml

from mambaprune.config import Params

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mambaprune"
NOT_COMPUTING = {"tracking", "plots", "paths", "records", "cli", "errors"}  # logs, plots, names, files, messages


def _file_of(module: str) -> Path | None:
    """``mambaprune.x.y`` -> src/mambaprune/x/y.py or src/mambaprune/x/y/__init__.py; None if no such module."""
    rel = Path(*module.split(".")[1:])
    if rel == Path():
        return PACKAGE / "__init__.py"
    for candidate in (PACKAGE / rel.with_suffix(".py"), PACKAGE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, module: str) -> set[str]:
    """The ``mambaprune`` modules the file ``path`` (of dotted ``module``) imports anywhere in it."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y, from ..x import y
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "mambaprune":
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names if _file_of(f"{target}.{a.name}")}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mambaprune"}
    return found


def computing_modules(script: Path) -> set[str]:
    """The package's top-level modules and subpackages (``train``, ``pruning``) a script uses, transitively,
    minus those that compute nothing (and what only they import). ``mambaprune/__init__`` (the public door, run
    by any import) is not followed: a stage uses what it names, not everything the door re-exports."""
    seen, todo = {"mambaprune"}, [(script, "stages.script")]
    while todo:
        path, module = todo.pop()
        for dep in _imports(path, module) - seen:
            if (file := _file_of(dep)) is not None:
                seen.add(dep)
                if dep.split(".")[1] not in NOT_COMPUTING:  # what cli.py imports serves cli.py
                    todo.append((file, dep))
    return {m.split(".")[1] for m in seen - {"mambaprune"}} - NOT_COMPUTING


def module_path(name: str) -> str:
    return f"src/mambaprune/{name}" if (PACKAGE / name).is_dir() else f"src/mambaprune/{name}.py"


def _stages():
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        if not stage.get("always_changed"):  # summary reruns every time anyway
            yield name, stage.get("do", stage)  # foreach stages keep their body under `do`


def test_each_stage_depends_on_exactly_the_modules_it_computes_with():
    wrong = {}
    for name, stage in _stages():
        need = {module_path(m) for m in computing_modules(ROOT / stage["cmd"].split()[1])}
        have = {d for d in stage["deps"] if d.startswith("src/")}
        if need != have:
            wrong[name] = {"missing": sorted(need - have), "extra": sorted(have - need)}
    assert not wrong, f"fix these stages' deps in dvc.yaml: {wrong}"


def _param_reads(script: Path) -> set[str]:
    """``params.<key>`` and ``params.<section>.<key>`` a script reads (keys of params.yaml only)."""
    sections = {name: {f.name for f in dataclasses.fields(t)} if dataclasses.is_dataclass(t) else None
                for name, t in typing.get_type_hints(Params).items()}
    reads = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params":
            if sections.get(node.attr, ()) is None:  # a top-level scalar such as params.seed
                reads.add(node.attr)
        elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
              and isinstance(node.value.value, ast.Name) and node.value.value.id == "params"
              and node.attr in (sections.get(node.value.attr) or ())):
            reads.add(f"{node.value.attr}.{node.attr}")
    return reads


def test_each_param_a_stage_script_reads_is_declared():
    """A key read as ``params.section.key`` must be declared (or its whole section); prune.rounds is dvc.yaml's
    ``foreach`` itself."""
    missing = {}
    for name, stage in _stages():
        declared = set(stage.get("params", [])) | {"prune.rounds"}
        reads = _param_reads(ROOT / stage["cmd"].split()[1])
        need = {key for key in reads if key not in declared and key.split(".")[0] not in declared}
        if need:
            missing[name] = sorted(need)
    assert not missing, f"declare these params in dvc.yaml: {missing}"
