#!/usr/bin/env python3
"""Writes the small seed corpus of valid files for the fuzz targets (Fuzz/Seeds/TARGET/).
libFuzzer mutates these; the committed corrupt corpus (Tests/LFPDataTests/Corpus) is added
by scripts/fuzz.sh as well."""
import gzip, json, os, struct

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "Seeds")

def write(target, name, data):
    os.makedirs(os.path.join(root, target), exist_ok=True)
    with open(os.path.join(root, target, name), "wb") as f:
        f.write(data)

def idx(dims, payload):
    return struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + payload

images = idx([2, 3, 3], bytes(range(18)))
labels = idx([2], bytes([1, 7]))
write("idx", "images", images)
write("idx", "images.gz", gzip.compress(images, mtime=0))
write("idx", "pair", images + b"@LBL" + labels)
write("idx", "pair.gz", gzip.compress(images, mtime=0) + b"@LBL" + gzip.compress(labels, mtime=0))
write("idx", "rank4", idx([1, 1, 2, 2], bytes(4)))

write("gzip", "idx.gz", gzip.compress(images, mtime=0))
write("gzip", "two-members.gz", gzip.compress(b"ab", mtime=0) + gzip.compress(b"cd", mtime=0))
write("gzip", "padded.gz", gzip.compress(b"hello", mtime=0) + bytes(8))
write("gzip", "stored.gz", gzip.compress(b"x" * 40, compresslevel=0, mtime=0))
write("gzip", "text.gz", gzip.compress(b"0,1.5,2\n1,3,4\n" * 20, compresslevel=9, mtime=0))

record = lambda label: bytes([label]) + bytes((i * 7) % 256 for i in range(3072))
write("cifar10", "one.bin", record(3))
write("cifar10", "two.bin", record(0) + record(9))
write("cifar10", "pair.bin", record(1) + b"@BIN" + record(2))
write("cifar10", "one.bin.gz", gzip.compress(record(5), mtime=0))

# First byte: options (bits 0-1 label column 0/-1/1/2, bits 2-3 header auto/yes/no/auto, bits 4-5 , ; tab space).
write("csv", "plain", b"\x00" + b"0,1.5,2\n1,-3e2,4\n")
write("csv", "header", b"\x00" + b"label,x,y\r\n2,0.5,1\r\n0,1,2\r\n")
write("csv", "quoted", b"\x01" + b"\"a\",\"b \"\"q\"\"\",c\n\" 1.5\",2,1\n")
write("csv", "semicolon", b"\x10" + b"1;2;3\n\n0;4;5\n")
write("csv", "tab", b"\x22" + b"1\t2\t3\n0\t4\t5\n")
write("csv", "gzip", b"\x00" + gzip.compress(b"0,1,2\n1,3,4\n", mtime=0))

def safetensors(tensors, metadata=None, dtype="F32", pad=True):
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    fmt, size = {"F32": ("<f", 4), "F64": ("<d", 8), "F16": ("<e", 2), "BF16": (None, 2)}[dtype]
    for name, shape, values in tensors:
        if fmt:
            raw = b"".join(struct.pack(fmt, v) for v in values)
        else:
            raw = b"".join(struct.pack("<f", v)[2:] for v in values)
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data

small = [("w", [2, 2], [1.0, -2.0, 0.5, 3.0]), ("b", [2], [0.0, 1.0]), ("s", [], [7.0]), ("e", [0], [])]
write("safetensors", "f32", safetensors(small, {"epoch": "3"}))
write("safetensors", "f64", safetensors(small, dtype="F64"))
write("safetensors", "f16", safetensors(small, dtype="F16", pad=False))
write("safetensors", "bf16", safetensors(small, dtype="BF16"))
write("safetensors", "empty", safetensors([]))

write("json", "run.json", json.dumps(["--model", "mlp", "--epochs", "3", "--data-dir", "/tmp/d\u00e9j\u00e0 \\ \"x\""]).encode())
write("json", "escapes", b'["\\u00e9\\ud83d\\ude00\\n\\t\\/", "a\\"b"]')
write("json", "header", b'{"__metadata__":{"k":"v"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}')
write("json", "numbers", b'[0, -1, 1.5e-3, 12345678901234567890, true, false, null, {}, []]')

# The tiny model of the checkpoint target: Linear(4, 3), ReLU, Linear(3, 2, bias: false).
run_state = json.dumps({
    "epoch": 2, "progress": {"nextBatch": 3, "objectiveSum": 1.5, "correct": 4, "seen": 8},
    "history": [{"epoch": 1, "trainObjective": 0.5, "trainAccuracy": 0.25, "testAccuracy": 0.5, "seconds": 1.0,
                 "samplesPerSecond": 10.0, "signChangeFraction": 0.1, "meanSquaredChange": 0.01,
                 "medianAbsWeight": 0.2, "learningRate": 0.003}],
    "secondsSoFar": 3.5, "epochSecondsSoFar": 1.0, "normalizationMean": [0.5], "normalizationStd": [0.25]})
params = [("layers.0.weight", [3, 4], [0.1 * i for i in range(12)]), ("layers.0.bias", [3], [0.0, 0.5, -0.5]),
          ("layers.2.weight", [2, 3], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0])]
write("checkpoint", "state.safetensors", safetensors(params, {"lfp.run_state": run_state}))
write("checkpoint", "pytorch-names", safetensors([(n[len("layers."):], s, v) for n, s, v in params]))
write("checkpoint", "wrong-shape", safetensors([("layers.0.weight", [4, 3], [0.0] * 12)] + params[1:]))
