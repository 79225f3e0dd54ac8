#!/usr/bin/env bash
# Install what is missing, then run the whole test suite. With Open MPI installed the build
# includes data-parallel training (`--traits MPI`) and its mpirun tests run too.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
traits=()
if pkg-config --exists ompi-c 2>/dev/null && command -v mpirun >/dev/null 2>&1; then traits=(--traits MPI); fi
swift build --build-tests "${traits[@]}"
swift test --skip-build "${traits[@]}" "$@"
