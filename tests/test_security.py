"""Static checks: no code path unpickles untrusted data, no secrets in the repo, the MLflow UI stays local.

Loading a file must never run code from it: every ``torch.load`` passes ``weights_only=True`` (a literal,
so the scan can see it), and nothing calls ``pickle.load(s)`` or ``yaml.load`` without a safe loader.
"""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CODE_DIRS = ("src", "stages", "benchmarks")

# unsafe deserialisation, as source text (torch.load is checked on the syntax tree, below)
UNSAFE = {
    "pickle.load/loads": re.compile(r"\b(c?pickle|_pickle|dill|joblib)\s*\.\s*loads?\s*\(|\bfrom\s+(c?pickle|dill)\s+"
                                    r"import\s+[^\n]*\bloads?\b"),
    "yaml.load without SafeLoader": re.compile(r"\byaml\s*\.\s*load\s*\((?![^)]*\bLoader\s*=\s*(yaml\.)?C?SafeLoader)"),
    "yaml unsafe/full load": re.compile(r"\byaml\s*\.\s*(unsafe_load|full_load|load_all)\s*\("),
    "torch.load alias": re.compile(r"\bfrom\s+torch\s+import\s+[^\n]*\bload\b|\bload\s*=\s*torch\.load\b"),
}

SECRETS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key block": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY( BLOCK)?-----"),
    "password assignment": re.compile(r"""(?i)\b(password|passwd|pwd)\s*[:=]\s*["'][^"'\s]{4,}["']"""),
    "secret/token assignment": re.compile(r"""(?i)\b\w*(secret|api_?key|access_?token|auth_?token)\s*[:=]\s*["']"""
                                          r"""[A-Za-z0-9_\-/+=]{16,}["']"""),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
    "Slack token": re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    "OpenAI-style key": re.compile(r"\bsk-[A-Za-z0-9]{32,}\b"),
    "URL with credentials": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@[\w.-]+"),
}


def _code_files() -> list[Path]:
    return sorted(f for d in CODE_DIRS if (REPO / d).is_dir() for f in (REPO / d).rglob("*.py"))


def _torch_load_problems(source: str, name: str) -> list[str]:
    """``torch.load(...)`` calls whose ``weights_only`` is not the literal True, and any call passing
    ``weights_only`` something else (e.g. a False fallback)."""
    problems = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        safe = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
        f = node.func
        is_torch_load = isinstance(f, ast.Attribute) and f.attr == "load" and getattr(f.value, "id", None) == "torch"
        if not safe and (is_torch_load or "weights_only" in kw):
            problems.append(f"{name}:{node.lineno}: weights_only is not the literal True")
    return problems


def _code_only(source: str) -> str:
    """``source`` with strings and comments blanked (same line numbers): prose may mention unsafe calls."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))
    chars = list(source)
    blank = {tokenize.STRING, tokenize.COMMENT} | {getattr(tokenize, "FSTRING_MIDDLE", -1)}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type in blank:
            start = offsets[tok.start[0] - 1] + tok.start[1]
            end = offsets[tok.end[0] - 1] + tok.end[1]
            chars[start:end] = [c if c == "\n" else " " for c in chars[start:end]]
    return "".join(chars)


def _unsafe_problems(source: str, name: str) -> list[str]:
    problems = _torch_load_problems(source, name)
    code = _code_only(source)
    for what, pattern in UNSAFE.items():
        for m in pattern.finditer(code):
            problems.append(f"{name}:{code.count(chr(10), 0, m.start()) + 1}: {what}: {m.group(0)!r}")
    return problems


def test_the_scan_sees_the_code():
    files = {f.relative_to(REPO).as_posix() for f in _code_files()}
    assert {"src/mambaprune/checkpoint.py", "src/mambaprune/data.py", "src/mambaprune/train.py",
            "stages/prune.py"} <= files
    loads = sum(f.read_text().count("torch.load(") for f in _code_files())
    assert loads >= 3  # checkpoints, data splits, resume states: all checked below


def test_no_unsafe_deserialisation_in_src_and_stages():
    problems = [p for f in _code_files() for p in _unsafe_problems(f.read_text(), str(f.relative_to(REPO)))]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("snippet", [
    "torch.load(path)",
    "torch.load(path, map_location='cpu')",
    "torch.load(path, weights_only=False)",
    "torch.load(path, weights_only=flag)",
    "x = pickle.load(f)",
    "x = pickle.loads(b)",
    "from pickle import loads",
    "cfg = yaml.load(text)",
    "cfg = yaml.load(text, Loader=yaml.Loader)",
    "cfg = yaml.unsafe_load(text)",
    "from torch import load",
    "state = load_state(path, weights_only=False)",
])
def test_the_scan_flags_unsafe_code(snippet):
    assert _unsafe_problems(snippet + "\n", "snippet")


@pytest.mark.parametrize("snippet", [
    "torch.load(path, map_location='cpu', weights_only=True)",
    "cfg = yaml.safe_load(text)",
    "cfg = yaml.load(text, Loader=yaml.SafeLoader)",
    "try:\n    pass\nexcept pickle.UnpicklingError:\n    pass",
    "msg = 'never retries with weights_only=False or pickle.load(f)'  # nor yaml.load(x)",
])
def test_the_scan_passes_safe_code(snippet):
    assert not _unsafe_problems(snippet + "\n", "snippet")


def _repo_files() -> list[Path]:
    """What git tracks or would add (untracked, not ignored); every file when this is not a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                             capture_output=True, check=True, timeout=60).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        skip = {".git", ".venv", ".dvc", "data", "models", ".cache", "mlruns", "mlartifacts"}
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not skip & set(p.relative_to(REPO).parts)]
    return [REPO / n for n in names if (REPO / n).is_file()]


def test_no_secrets_in_the_repository():
    found = []
    for f in _repo_files():
        if f.stat().st_size > 2_000_000:
            continue
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # binary
        for what, pattern in SECRETS.items():
            for m in pattern.finditer(text):
                found.append(f"{f.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {what}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "AKIA" + "ABCDEFGHIJKLMNOP",
    "-----BEGIN RSA " + "PRIVATE KEY-----",
    "password" + " = 'hunter22'",
    "api_key" + ": 'abcdefghijklmnopqrstuv'",
    "https://user:" + "s3cret@example.com/repo",
])
def test_the_secret_scan_flags_secrets(snippet):
    assert any(p.search(snippet) for p in SECRETS.values())


def _ui_commands(text: str) -> list[str]:
    return [ln.strip() for ln in text.splitlines() if re.search(r"\bmlflow\s+(ui|server)\b", ln)]


def test_mlflow_ui_binds_localhost_only():
    commands = []
    for name in ("Makefile", "README.md"):
        text = (REPO / name).read_text()
        assert "0.0.0.0" not in text, f"{name} mentions 0.0.0.0: the MLflow UI must bind 127.0.0.1 only"
        commands += _ui_commands(text)
    assert commands, "no `mlflow ui` command found in the Makefile or README"
    for cmd in commands:
        assert re.search(r"(--host|-h)[ =](127\.0\.0\.1|localhost)\b", cmd), f"not bound to localhost: {cmd}"
    readme = (REPO / "README.md").read_text()
    assert "make ui" in readme and "127.0.0.1" in readme
