#!/usr/bin/env bash
# LeNet on Fashion-MNIST with every activation, 5 epochs, 2 seeds: LFP with the activation's recipe
# (`lfp train --activation X` defaults, docs/MATH-ACTIVATIONS.md), plain LFP-epsilon where the recipe
# differs (step, sigmoid) and gradient descent at its defaults. Runs `lfp experiment activations --full`
# (about an hour on 2 cores) and writes, from its log, one row per run and epoch to
# benchmarks/activations.csv (also when the run is stopped early: the runs finished so far), and the
# feedback growth at initialisation to benchmarks/activations-feedback-growth.csv.
# Usage: bash benchmarks/activations.sh [output directory, default runs/activations-full]   (THREADS=N: BLAS threads)
#        bash benchmarks/activations.sh --convert DIR   (only rewrite the CSVs from DIR/experiment.log)
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
if [ "${1:-}" = --convert ]; then
  out=$2
else
  out=${1:-runs/activations-full}
  lfp=${LFP:-.build/release/lfp}
  [ -n "${LFP:-}" ] || swift build -c release --product lfp >/dev/null || exit 1
  mkdir -p "$out"
  "$lfp" experiment activations --full ${THREADS:+--threads "$THREADS"} --output "$out" 2>&1 | tee "$out/experiment.log"
  status=${PIPESTATUS[0]}
fi
{
  echo "activation,method,seed,epoch,test_accuracy,settings"
  # Lines such as "[ 709s] step lfp-recipe seed 1: 0.809 0.815 0.831 0.830 0.833 (106 s) | --composite ...": the
  # accuracies after each epoch, then the settings (options of `lfp train`) after the bar.
  grep -E '^\[ *[0-9]+s\] [a-z-]+ (lfp-recipe|lfp-epsilon|gradient) seed [0-9]+:' "$out/experiment.log" | sed 's/^\[ *[0-9]*s\] //' |
  while IFS= read -r line; do
    settings=${line#*| }
    [ "$settings" = "$line" ] && settings=""
    read -r activation method _ seed rest <<< "${line%%|*}"
    epoch=0
    for accuracy in $rest; do
      case "$accuracy" in \(*) break ;; esac
      epoch=$((epoch + 1))
      echo "$activation,$method,${seed%:},$epoch,$accuracy,\"$settings\""
    done
  done
} > benchmarks/activations.csv
[ -f "$out/feedback-growth.csv" ] && cp "$out/feedback-growth.csv" benchmarks/activations-feedback-growth.csv
echo "wrote benchmarks/activations.csv ($(($(wc -l < benchmarks/activations.csv) - 1)) rows); report: $out/report.md" >&2
exit "$status"
