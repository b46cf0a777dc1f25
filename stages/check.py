"""Stage `check` (first): every params section validated and the data source found, before any real work.

DVC deletes a stage's outputs just before it runs the stage, so a bad value that only failed inside `prepare` or
`prune@r1` would cost those outputs. This stage tracks every params section and runs first (prepare depends on
its output), so a bad `-S` value stops here with everything else in place. Its output, metrics/check.json, has
the same content for every valid state: a valid change reruns this stage (a second or two) and nothing more.
"""

from mambaprune import paths
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.data import check_source
from mambaprune.records import write_json

CHECKED = {"params.yaml": "valid", "data source": "found"}  # constant on purpose (module docstring)


def main() -> None:
    params = load_params()
    check_source(params.data)
    write_json(paths.metrics_file("check"), CHECKED)


if __name__ == "__main__":
    stage_main(main)
