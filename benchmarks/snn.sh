#!/usr/bin/env bash
# Spiking MLP (in-1000-1000-10, LIF beta 0.9, T = 15) on Fashion-MNIST: LFP-epsilon vs the
# surrogate-gradient baseline (atan) vs the true, zero derivative of the spike (heaviside),
# same budget: Adam lr 0.001, batch 128, 3 epochs, seed 1. Writes benchmarks/snn.csv.
# Usage: bash benchmarks/snn.sh [epochs] [extra lfp train options]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs=${1:-3}; shift || true
lfp=${LFP:-.build/release/lfp}
[ -n "${LFP:-}" ] || swift build -c release --product lfp >/dev/null
out=benchmarks/snn.csv
echo "method,surrogate,epoch,test_accuracy,train_accuracy,firing_rates,seconds" > "$out"
run() {  # name, options...
  name=$1; shift
  dir=$(mktemp -d)
  "$lfp" train --model snn-mlp --timesteps 15 --beta 0.9 --batch-size 128 --epochs "$epochs" \
      --optimizer adam --lr 0.001 --output "$dir" --quiet "$@" >/dev/null
  tail -n +2 "$dir/metrics.csv" | while IFS=, read -r epoch obj tracc teacc secs sps sign msq med lr rates; do
    echo "$name,$epoch,$teacc,$tracc,$rates,$secs" >> "$out"
  done
  rm -rf "$dir"
}
run "lfp-epsilon,-" --backward-normalization --agc 0.1 "$@"
run "gradient,atan" --method gradient --surrogate atan "$@"
run "gradient,heaviside" --method gradient --surrogate heaviside "$@"
cat "$out"
