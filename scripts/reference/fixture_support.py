"""What the fixture generators share (resnet_fixtures.py, vit_fixtures.py, vit_attnlrp_fixtures.py):
the command line, the tensors as the files store them, and the comparisons they print. No lfprop
import here, so any generator may use it before its own imports."""
import pathlib
import sys

import torch


def output_dir(doc):
    """The output folder named on the command line (exits with the usage line of `doc` when it is
    missing), created; torch on one thread, so that runs are reproducible."""
    if len(sys.argv) != 2:
        sys.exit(doc.split("\n\n")[1])
    outdir = pathlib.Path(sys.argv[1])
    outdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    return outdir


def file_tensors(t):
    """The tensors as a fixture file stores them: detached, float32 or int64, contiguous."""
    return {k: (v.detach().to(torch.float32) if v.is_floating_point() else v.detach().to(torch.int64)).contiguous()
            for k, v in t.items()}


def max_rel(a, b):
    """max over matching keys of max|a - b| / max|b| (per tensor) for two dicts of tensors."""
    worst, where = 0.0, ""
    for k in b:
        e = ((a[k] - b[k]).abs().max() / b[k].abs().max()).item()
        if e > worst:
            worst, where = e, k
    return worst, where


def float32_worst(r32, tensors, skip=("state.",), unit_floor=True):
    """The float32 noise floor: over the computed tensors of a file (floating point, not `input`,
    no key starting with a prefix in `skip`), the worst max|r32 - ref| / max(1, max|ref|)
    (`unit_floor`) or / max|ref|. Returns (worst, key)."""
    worst, where = 0.0, ""
    for k, v in tensors.items():
        if v.is_floating_point() and not k.startswith(skip) and k != "input":
            scale = max(1.0, v.abs().max().item()) if unit_floor else v.abs().max().clamp_min(1e-30)
            e = ((r32[k] - v).abs().max() / scale).item()
            if e > worst:
                worst, where = e, k
    return worst, where
