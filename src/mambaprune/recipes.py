"""Recipes: named sets of params.yaml settings (``recipes/*.yaml``, flat ``section.key: value``) applied in one go.

    dvc exp run -n c10-dense $(python -m mambaprune.recipes recipes/cifar10.yaml)   # as `-S` flags for DVC
    python -m mambaprune.recipes recipes/cifar10.yaml --apply params.yaml           # rewrite params.yaml (no dvc)

Every key is checked against the params schema before anything is printed or written, so a typo in a recipe
fails here, not half-way into an experiment.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import sys
from pathlib import Path

import yaml

from .config import ConfigError, load_params, parse_params
from .records import atomic_write

__all__ = ["load_recipe", "apply_recipe", "dvc_set_args"]


def load_recipe(path: str | Path) -> dict[str, object]:
    """The recipe's ``{dotted key: value}`` settings, in file order."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} not found (recipes live in recipes/*.yaml)")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or any(not isinstance(k, str) for k in raw):
        raise ConfigError(f"recipe {path} must map dotted params keys to values, e.g. 'train.lr: 0.002'")
    return raw


def apply_recipe(params: dict, settings: dict[str, object]) -> dict:
    """A copy of the nested ``params`` with the recipe's settings applied and the result validated."""
    out = copy.deepcopy(params)
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"recipe key {key!r}: {p!r} is not a params section")
            node = node[p]
        node[leaf] = value
    parse_params(out)  # unknown keys, types and ranges: the same checks as params.yaml gets
    return out


def dvc_set_args(settings: dict[str, object]) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run`` (values in YAML syntax, as -S parses them)."""
    args = []
    for key, value in settings.items():
        text = "null" if value is None else yaml.safe_dump(value, default_flow_style=True).strip()
        text = text.removesuffix("\n...").strip()
        args += ["-S", f"{key}={text}"]
    return args


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("--apply", metavar="PARAMS", help="rewrite this params.yaml instead of printing -S flags")
    parser.add_argument("--params", default="params.yaml", help="the params.yaml the recipe is checked against")
    args = parser.parse_args(argv)
    try:
        settings = load_recipe(args.recipe)
        base = yaml.safe_load(Path(args.apply or args.params).read_text())
        load_params(args.apply or args.params)
        new = apply_recipe(base, settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.apply:
        atomic_write(args.apply, lambda f: f.write(yaml.safe_dump(new, sort_keys=False).encode()))
    else:
        print(" ".join(shlex.quote(a) for a in dvc_set_args(settings)))


if __name__ == "__main__":
    main()
