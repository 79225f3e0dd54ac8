"""Merges the JSON lines of benchmarks/bench.sh (ours: `lfp bench step --json`; PyTorch and the reference:
benchmarks/torch_step.py) into the speed table: medians over every timed step of every round. Prints the
Markdown table; writes CSV and an SVG bar chart. Standard library only."""
import argparse
import csv
import json
import statistics
from collections import defaultdict

METHODS = [("lfp", "our LFP"), ("gradient", "our gradient"), ("torch-gradient", "PyTorch gradient"), ("reference-lfp", "reference LFP")]
COLOURS = {"lfp": "#1f77b4", "gradient": "#aec7e8", "torch-gradient": "#ff7f0e", "reference-lfp": "#d62728"}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("--csv", required=True)
    p.add_argument("--svg", required=True)
    args = p.parse_args()
    times, rss, growth, configs = defaultdict(list), defaultdict(float), defaultdict(float), []
    with open(args.raw) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            key = (r["model"], r["batch"])
            if key not in configs:
                configs.append(key)
            times[key + (r["method"],)] += r["times_ms"]
            if "peak_rss_mb" in r:
                rss[key] = max(rss[key], r["peak_rss_mb"])
                growth[key] = max(growth[key], r.get("rss_growth_mb", 0))

    def median(key):
        values = times.get(key)
        return statistics.median(values) if values else None

    rows = []
    for model, batch in configs:
        m = {name: median((model, batch, name)) for name, _ in METHODS}
        ratio = lambda a, b: round(a / b, 2) if a and b else None  # noqa: E731
        rows.append({
            "model": model, "batch": batch,
            **{f"{name}_ms": (round(m[name], 2) if m[name] else None) for name, _ in METHODS},
            "lfp_over_gradient": ratio(m["lfp"], m["gradient"]),
            "torch_gradient_over_lfp": ratio(m["torch-gradient"], m["lfp"]),
            "reference_over_lfp": ratio(m["reference-lfp"], m["lfp"]),
            "lfp_samples_per_s": round(batch / m["lfp"] * 1000) if m["lfp"] else None,
            "peak_rss_mb": rss[(model, batch)], "rss_growth_mb": growth[(model, batch)],
        })
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)

    fmt = lambda v: "–" if v is None else str(v)  # noqa: E731
    print("| model | batch | our LFP | our gradient | PyTorch gradient | reference LFP | LFP / gradient | PyTorch grad / our LFP | reference / our LFP | LFP samples/s | peak RSS MB (growth after warm-up) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['batch']} | {fmt(r['lfp_ms'])} | {fmt(r['gradient_ms'])} | {fmt(r['torch-gradient_ms'])} | "
              f"{fmt(r['reference-lfp_ms'])} | {fmt(r['lfp_over_gradient'])} | {fmt(r['torch_gradient_over_lfp'])}x | "
              f"{fmt(r['reference_over_lfp'])}x | {fmt(r['lfp_samples_per_s'])} | {r['peak_rss_mb']} ({r['rss_growth_mb']}) |")

    # SVG: per configuration, one bar per implementation, normalised to our LFP step (= 1).
    width, height, left, top, bottom = 760, 360, 60, 40, 70
    group = (width - left - 20) / max(1, len(rows))
    bar = group / (len(METHODS) + 1)
    top_value = max([r[f"{n}_ms"] / r["lfp_ms"] for r in rows for n, _ in METHODS if r[f"{n}_ms"] and r["lfp_ms"]] + [1])
    scale = (height - top - bottom) / top_value
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<text x="{left}" y="20" font-size="13">Training-step time relative to our LFP step (lower is faster)</text>']
    base = height - bottom
    for i, r in enumerate(rows):
        x0 = left + i * group
        for j, (name, _) in enumerate(METHODS):
            v = r[f"{name}_ms"]
            if not v or not r["lfp_ms"]:
                continue
            h = v / r["lfp_ms"] * scale
            parts.append(f'<rect x="{x0 + j * bar:.1f}" y="{base - h:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" fill="{COLOURS[name]}">'
                         f'<title>{name}: {v} ms</title></rect>')
        parts.append(f'<text x="{x0 + group / 2 - bar / 2:.1f}" y="{base + 15}" text-anchor="middle">{r["model"]}</text>')
        parts.append(f'<text x="{x0 + group / 2 - bar / 2:.1f}" y="{base + 28}" text-anchor="middle">batch {r["batch"]}</text>')
    y1 = base - scale
    parts.append(f'<line x1="{left}" y1="{y1:.1f}" x2="{width - 20}" y2="{y1:.1f}" stroke="#444" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{left - 5}" y="{y1 + 4:.1f}" text-anchor="end">1.0</text>')
    parts.append(f'<line x1="{left}" y1="{base}" x2="{width - 20}" y2="{base}" stroke="#000"/>')
    for j, (name, label) in enumerate(METHODS):
        parts.append(f'<rect x="{left + j * 170}" y="{height - 25}" width="12" height="12" fill="{COLOURS[name]}"/>')
        parts.append(f'<text x="{left + j * 170 + 16}" y="{height - 15}">{label}</text>')
    parts.append("</svg>")
    with open(args.svg, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
