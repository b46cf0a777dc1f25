#!/usr/bin/env bash
# CIFAR-10 (JPEG) rows for the README table, on one GPU, with the pipeline's own stage scripts run in DVC's
# order (the GPU machine has no dvc; the same settings as `dvc exp run -S ...` are applied with
# benchmarks/set_params.py). Needs .cache/cifar10-jpg.tar.gz. Writes results/<row>/*.json (and, with
# ARCHIVE=file.tgz, a tarball of them after each row).
# Rows: dense, then 70 % SSM + 70 % MLP with refill, rsst and magnitude (l1), each from the same dense model.
set -euo pipefail
export MAMBAPRUNE_TRACKING=${MAMBAPRUNE_TRACKING:-0} MAMBAPRUNE_NO_PROGRESS=1 PYTHONPATH=src PYTHONUNBUFFERED=1
RESULTS=${RESULTS:-results}
PRETRAIN_EPOCHS=${PRETRAIN_EPOCHS:-15}; ROUND_EPOCHS=${ROUND_EPOCHS:-3}; FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-3}
[ -d .cache/cifar10-jpg ] || tar xzf .cache/cifar10-jpg.tar.gz -C .cache
cp params.yaml .cache/params.orig.yaml
python benchmarks/set_params.py data.name=imagefolder data.root=.cache/cifar10-jpg data.img_size=32 \
  model.name=mamba_small model.embed_dim=null model.depth=null model.d_state=null \
  train.batch_size=512 train.lr=0.001 train.warmup_epochs=2 train.label_smoothing=0.1 train.crop_padding=4 \
  train.hflip=true train.device=cuda pretrain.epochs=$PRETRAIN_EPOCHS prune.epochs=$ROUND_EPOCHS \
  prune.target=both prune.ratio=0.7 finetune.epochs=$FINETUNE_EPOCHS evaluate.batch_size=1024 \
  evaluate.throughput_batch=1024 evaluate.throughput_iters=10
timed() { local t0=$SECONDS; "$@"; echo "  [$*: $((SECONDS - t0)) s]"; }
archive() { [ -z "${ARCHIVE:-}" ] || tar czf "$ARCHIVE" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"; }
timed python stages/prepare.py
timed python stages/pretrain.py
mkdir -p "$RESULTS/dense" && cp metrics/prepare.json metrics/pretrain.json params.yaml "$RESULTS/dense/" && archive
for row in "refill prune.method=refill" "rsst prune.method=rsst prune.rsst_strength=1.0" \
           "magnitude-l1 prune.method=magnitude prune.importance=l1"; do
  set -- $row; name=$1; shift
  python benchmarks/set_params.py prune.importance=l1 "$@"
  t0=$SECONDS
  timed python stages/prune.py r1
  timed python stages/prune.py r2
  timed python stages/finetune.py
  timed python stages/evaluate.py
  mkdir -p "$RESULTS/$name" && cp metrics/prune_r1.json metrics/prune_r2.json metrics/finetune.json \
    metrics/evaluate.json params.yaml "$RESULTS/$name/" && archive
  echo "$name: $((SECONDS - t0)) s for the pruned stages"
done
cp .cache/params.orig.yaml params.yaml
