#!/usr/bin/env bash
# Run the benchmark harness on a GPU or TPU machine and update BENCHMARKS.md.
#
#   bash benchmarks/accelerator.sh            # all sets below
#   DEPTHS=20,56 bash benchmarks/accelerator.sh
#
# Each set gets its own tag (<backend>-<dtype>-b<batch>) and table. On GPU and TPU the nets scan
# their blocks by default, so the "unrolled" variant shows what scanning costs or saves.
# On a GPU, PyTorch is timed on CUDA, which needs a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."

depths="${DEPTHS:-20,56,110,1202}"
python benchmarks/run.py --depths "$depths" --variants default,unrolled,remat,cached
python benchmarks/run.py --depths "$depths" --dtype bfloat16 --variants default,remat
python benchmarks/run.py --depths "$depths" --dtype bfloat16 --batch_size 1024 \
  --variants default,remat --torch no
