#!/usr/bin/env bash
# LeNet on Fashion-MNIST with every activation, 5 epochs, 2 seeds: LFP with the activation's recipe
# (`lfp train --activation X` defaults, docs/MATH-ACTIVATIONS.md), plain LFP-epsilon where the recipe
# differs (step, sigmoid) and gradient descent at its defaults. Runs `lfp experiment activations --full`
# (about 45 minutes on 2 cores) and copies its per-epoch results to benchmarks/activations.csv and the
# feedback growth at initialisation to benchmarks/activations-feedback-growth.csv.
# Usage: bash benchmarks/activations.sh [output directory, default runs/activations-full]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/activations-full}
lfp=${LFP:-.build/release/lfp}
[ -n "${LFP:-}" ] || swift build -c release --product lfp >/dev/null
"$lfp" experiment activations --full --output "$out"
cp "$out/results.csv" benchmarks/activations.csv
cp "$out/feedback-growth.csv" benchmarks/activations-feedback-growth.csv
echo "wrote benchmarks/activations.csv and benchmarks/activations-feedback-growth.csv; report: $out/report.md"
