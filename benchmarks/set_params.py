"""Set params.yaml keys like `dvc exp run -S` does, for machines without dvc: set_params.py a.b=1 c.d=x ..."""

import sys

import yaml

path = "params.yaml"
params = yaml.safe_load(open(path))
for arg in sys.argv[1:]:
    key, value = arg.split("=", 1)
    *parents, leaf = key.split(".")
    node = params
    for p in parents:
        node = node[p]
    node[leaf] = yaml.safe_load(value)
with open(path, "w") as f:
    yaml.safe_dump(params, f, sort_keys=False)
