#!/usr/bin/env bash
# Learning-rate x feedback-function sweep for LFP-epsilon on LeNet / Fashion-MNIST
# (batch 32, SGD momentum 0.9, 3 epochs, seed 1), plus the gradient-descent baseline.
# Writes benchmarks/sweep.csv. Usage: bash benchmarks/sweep.sh [epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}
swift build -c release --product lfp >/dev/null
out=benchmarks/sweep.csv
echo "method,feedback,lr,batch,schedule,epoch,test_accuracy,seconds" > "$out"
run() {  # method feedback lr batch schedule
  dir=$(mktemp -d)
  .build/release/lfp train --method "$1" --feedback "$2" --lr "$3" --batch-size "$4" --schedule "$5" \
      --epochs "$epochs" --output "$dir" --quiet >/dev/null
  tail -n +2 "$dir/metrics.csv" | while IFS=, read -r epoch obj tracc teacc secs rest; do
    echo "$1,$2,$3,$4,$5,$epoch,$teacc,$secs" >> "$out"
  done
  rm -rf "$dir"
}
for fb in sigmoid softmax; do
  for lr in 0.001 0.003 0.01; do run lfp "$fb" "$lr" 32 constant; done
done
run lfp sigmoid 0.003 32 cosine
run lfp sigmoid 0.01 128 constant
run gradient sigmoid 0.01 32 constant
cat "$out"
