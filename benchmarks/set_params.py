"""Set params.yaml keys like `dvc exp run -S` does, for machines without dvc: set_params.py a.b=1 c.d=x ..."""

import sys

import yaml


def set_keys(params: dict, assignments: list[str]) -> dict:
    """Apply `dotted.key=yaml-value` assignments to the nested ``params`` in place (as `-S` does)."""
    for arg in assignments:
        key, value = arg.split("=", 1)
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node[p]
        node[leaf] = yaml.safe_load(value)
    return params


if __name__ == "__main__":
    path = "params.yaml"
    params = set_keys(yaml.safe_load(open(path)), sys.argv[1:])
    with open(path, "w") as f:
        yaml.safe_dump(params, f, sort_keys=False)
