#!/usr/bin/env bash
# Installs the system packages swift-lfp needs on Debian/Ubuntu (skips what is present):
# OpenBLAS (BLAS), zlib (gzip), pkg-config (to find both), Fashion-MNIST (the default dataset),
# and Open MPI (optional: data-parallel training and its tests).
set -euo pipefail

need=()
pkg-config --exists openblas 2>/dev/null || need+=(libopenblas-dev)
pkg-config --exists zlib 2>/dev/null || need+=(zlib1g-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
# Optional: Open MPI for data-parallel training (`--traits MPI`); set LFP_NO_MPI=1 to skip it.
if [ -z "${LFP_NO_MPI:-}" ]; then
  pkg-config --exists ompi-c 2>/dev/null || need+=(libopenmpi-dev)
  command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "swift-lfp needs: ${need[*]} (OpenBLAS, zlib, pkg-config, Fashion-MNIST); install them with your package manager." >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "swift-lfp needs the Debian packages: ${need[*]}. Run as root (or install sudo): apt-get install ${need[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
echo "installing ${need[*]} ..." >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
