#!/usr/bin/env python3
"""Writes the committed corpus of corrupt data files (Tests/LFPDataTests/Corpus) that the
unit tests replay: every file must make its loader throw a DataError, never crash.
File names start with the loader they target: idx-, cifar-, safetensors-, csv-."""
import gzip, json, os, struct

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "LFPDataTests", "Corpus")
os.makedirs(out, exist_ok=True)

def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)

def idx_images(n=2, r=3, c=3, magic=0x00000803):
    return struct.pack(">IIII", magic, n, r, c) + bytes(range(n * r * c))

good = idx_images()
write("idx-empty", b"")
write("idx-bad-magic", b"\x12\x34" + good[2:])
write("idx-bad-typecode", b"\x00\x00\x0d\x03" + good[4:])      # float32 type code: unsupported
write("idx-zero-dims", b"\x00\x00\x08\x00")
write("idx-truncated-header", good[:10])
write("idx-truncated-payload", good[:-5])
write("idx-trailing-bytes", good + b"\x00\x01")
write("idx-huge-dims", struct.pack(">IIII", 0x803, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF) + b"\x00" * 8)
write("idx-gzip-truncated.gz", gzip.compress(good)[:-12])
write("idx-gzip-corrupt.gz", gzip.compress(good)[:10] + b"\xff" * 20)

rec = bytes([3]) + bytes(3072)
write("cifar-empty.bin", b"")
write("cifar-short-record.bin", rec[:-1])
write("cifar-bad-label.bin", bytes([11]) + bytes(3072))
write("cifar-extra-bytes.bin", rec + b"\x00" * 10)

def st(header, payload=b"", length=None):
    h = json.dumps(header).encode() if isinstance(header, dict) else header
    n = len(h) if length is None else length
    return struct.pack("<Q", n) + h + payload

f32 = struct.pack("<4f", 1, 2, 3, 4)
write("safetensors-empty", b"")
write("safetensors-short-length", b"\x05\x00\x00")
write("safetensors-length-too-large", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, f32, length=1 << 40))
write("safetensors-bad-json", st(b"{\"a\": {\"dtype\": \"F32\", ", f32))
write("safetensors-offsets-out-of-range", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 64]}}, f32))
write("safetensors-shape-size-mismatch", st({"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}, f32))
write("safetensors-overlapping", st({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                     "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, f32))
write("safetensors-unknown-dtype", st({"a": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 16]}}, f32))
write("safetensors-negative-shape", st({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, f32))
write("safetensors-not-an-object", st(b"[1, 2, 3]", f32))

write("csv-ragged.csv", b"0,1.0,2.0\n1,3.0\n")
write("csv-not-a-number.csv", b"0,1.0,2.0\n1,abc,3.0\n")
write("csv-negative-label.csv", b"-1,1.0\n")
write("csv-empty.csv", b"")
# Minimised inputs found by the coverage-guided fuzzers (scripts/fuzz.sh, docs/fuzzing.md).
# A tensor name with control characters (ESC, CR) must not reach the terminal raw.
write("safetensors-fuzz-control-chars", st(b'{"a\\u001b[2J\\r": 5}', f32))
# A finite double beyond the float range must not load as an infinite feature.
write("csv-fuzz-float-overflow.csv", b"0,1e300\n")

print("wrote", len(os.listdir(out)), "files to", os.path.normpath(out))
