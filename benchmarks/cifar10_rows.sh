#!/usr/bin/env bash
# CIFAR-10 (JPEG) rows for the README table, on one GPU, with the pipeline's own stage scripts run in DVC's
# order (the GPU machine has no dvc; the same settings as `dvc exp run -S ...` are applied with
# benchmarks/set_params.py). Needs .cache/cifar10-jpg.tar.gz. Writes results/<row>/*.json (and, with
# ARCHIVE=file.tgz, a tarball of them after each row).
#
#   ROWS="dense refill rsst magnitude-l1 random mlp50" bash benchmarks/cifar10_rows.sh
#   EXTRA="train.compile=true" ROWS="dense refill" bash benchmarks/cifar10_rows.sh # other settings on top of the base
#   RECIPE=recipes/cifar10.yaml RESULTS=results/cifar10-jpg-recipe ROWS="rsst refill magnitude-l1" bash benchmarks/cifar10_rows.sh
#   SEED=1 RESULTS=results/cifar10-jpg-seed1 bash benchmarks/cifar10_rows.sh     # another seed, for mean ± spread:
#   python benchmarks/results_table.py results/cifar10-jpg results/cifar10-jpg-seed1
#
# Every pruned row starts from the same dense model (models/pretrained.pt, made by the `dense` row; a later
# call on the same machine can skip `dense`) and gets the same budget: 2 rounds x ROUND_EPOCHS + FINETUNE_EPOCHS.
set -euo pipefail
export MAMBAPRUNE_TRACKING=${MAMBAPRUNE_TRACKING:-0} MAMBAPRUNE_NO_PROGRESS=1 PYTHONPATH=src PYTHONUNBUFFERED=1
RESULTS=${RESULTS:-results}; SEED=${SEED:-0}
ROWS=${ROWS:-"dense refill rsst magnitude-l1 random mlp50"}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-22}; ROUND_EPOCHS=${ROUND_EPOCHS:-3}; FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-3}
[ -d .cache/cifar10-jpg ] || tar xzf .cache/cifar10-jpg.tar.gz -C .cache
# params.yaml is rewritten for every row (set_params.py, which drops comments): keep the user's copy and put it
# back on any exit. A params.yaml with comments is the user's; one without is a killed run's, and the copy saved
# by that run stays the original.
if grep -q '^#' params.yaml || [ ! -f .cache/params.orig.yaml ]; then cp params.yaml .cache/params.orig.yaml; fi
trap 'cp .cache/params.orig.yaml params.yaml' EXIT
cp .cache/params.orig.yaml params.yaml
if [ -n "${RECIPE:-}" ]; then  # a recipe file (recipes/cifar10.yaml) instead of the base settings below
  python -m mambaprune.recipes "$RECIPE" --apply params.yaml
  python benchmarks/set_params.py seed=$SEED train.device=cuda ${EXTRA:-}
else
python benchmarks/set_params.py seed=$SEED data.name=imagefolder data.root=.cache/cifar10-jpg data.img_size=32 \
  model.name=mamba_small model.embed_dim=null model.depth=null model.d_state=null \
  train.batch_size=512 train.lr=0.001 train.warmup_epochs=2 train.label_smoothing=0.1 train.crop_padding=4 \
  train.hflip=true train.device=cuda pretrain.epochs=$PRETRAIN_EPOCHS prune.epochs=$ROUND_EPOCHS \
  finetune.epochs=$FINETUNE_EPOCHS evaluate.batch_size=1024 evaluate.throughput_batch=1024 \
  evaluate.throughput_iters=10 ${EXTRA:-}
fi
cp params.yaml .cache/params.base.yaml
timed() { local t0=$SECONDS; "$@"; echo "  [$*: $((SECONDS - t0)) s]"; }
archive() { [ -z "${ARCHIVE:-}" ] || tar czf "$ARCHIVE" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"; }
row_params() {  # the -S settings of a pruned row (on top of the base above)
  case $1 in
    refill) echo prune.target=both prune.ratio=0.7 prune.method=refill prune.importance=l1 ;;
    rsst) echo prune.target=both prune.ratio=0.7 prune.method=rsst prune.importance=l1 ;;  # decoupled, F 1e4
    magnitude-l1) echo prune.target=both prune.ratio=0.7 prune.method=magnitude prune.importance=l1 ;;
    random) echo prune.target=both prune.ratio=0.7 prune.method=magnitude prune.importance=random ;;
    mlp50) echo prune.target=mlp prune.ratio=0.5 prune.method=magnitude prune.importance=l1 ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}
for name in $ROWS; do
  t0=$SECONDS
  cp .cache/params.base.yaml params.yaml
  if [ "$name" = dense ]; then
    timed python stages/prepare.py
    timed python stages/pretrain.py
    mkdir -p "$RESULTS/dense" && cp metrics/prepare.json metrics/pretrain.json params.yaml "$RESULTS/dense/"
  else
    [ -f models/pretrained.pt ] || { echo "row $name needs models/pretrained.pt: run the dense row first" >&2; exit 2; }
    python benchmarks/set_params.py $(row_params "$name")
    timed python stages/prune.py r1
    timed python stages/prune.py r2
    timed python stages/finetune.py
    timed python stages/evaluate.py
    mkdir -p "$RESULTS/$name" && cp metrics/prune_r1.json metrics/prune_r2.json metrics/finetune.json \
      metrics/evaluate.json params.yaml "$RESULTS/$name/"
  fi
  archive
  echo "$name: $((SECONDS - t0)) s"
done
