"""Shared by the end-to-end tests that run the real pipeline in a temp repo."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def set_params(repo: Path, updates: dict) -> None:
    """Update params.yaml section by section, as `dvc exp run -S` would."""
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in updates.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
