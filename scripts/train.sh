#!/usr/bin/env bash
# The main job: install what is missing, build, and train the default model
# (LeNet on Fashion-MNIST with LFP-epsilon). Extra arguments go to `lfp train`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
swift build -c release --product lfp
exec .build/release/lfp train "$@"
