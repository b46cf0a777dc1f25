"""Stage `prepare`: the dataset named by `data.name` → data/{train,val,test}.pt + data/meta.json."""

import time

from mambaprune import paths
from mambaprune.cli import stage_main
from mambaprune.config import load_params
from mambaprune.data import prepare_data
from mambaprune.records import publish_metrics
from mambaprune.tracking import stage_run


def main() -> None:
    params = load_params()
    start = time.time()
    with stage_run("prepare", {"data": params.data.__dict__, "seed": params.seed}) as run:
        meta = prepare_data(params.data, params.seed, paths.DATA_DIR)
        metrics = {"sizes": meta["sizes"], "num_classes": meta["num_classes"], "img_size": meta["img_size"],
                   "source": meta["source"], "wall_time_s": time.time() - start}
        publish_metrics(run, "prepare", metrics)
    print(f"prepared {meta['source']}: {meta['sizes']} images, {meta['num_classes']} classes")


if __name__ == "__main__":
    stage_main(main)
