#!/usr/bin/env python3
"""Merges bench.json (loraplex_gpu_bench --json) and the HF + PEFT JSON lines into one markdown
section for docs/benchmarks.md."""
import json
import sys


def main():
    bench = json.load(open(sys.argv[1]))
    hf_runs, hf_meta = {}, {}
    try:
        for line in open(sys.argv[2]):
            line = line.strip()
            if not line.startswith("{"):
                continue
            obj = json.loads(line)
            # The meta line, one line per finished batch size, then everything again with "runs"
            # (missing when the run was stopped by its time limit).
            if "adapters" in obj:
                hf_runs[obj["adapters"]] = obj
            elif "device" in obj:
                hf_meta = obj
            for r in obj.get("runs", []):
                hf_runs[r["adapters"]] = r
    except OSError:
        pass
    print(bench["markdown"])
    print("\n### loraplex vs Hugging Face transformers + PEFT, mixed-adapter decode (batch = adapters, rank 16, all modules)\n")
    if not hf_runs:
        print("HF transformers + PEFT were not available on this machine.")
        return
    partial = "" if "runs" in hf_meta else " (partial: stopped by its time limit)"
    print(f"HF{partial}: torch {hf_meta.get('torch', '?')}, {hf_meta.get('device', '?')}, prompt {hf_meta.get('ctx')} tokens, greedy.\n")
    print("| adapters = batch | loraplex tok/s | HF + PEFT tok/s | speed-up (goal >= 20x) | HF base-only tok/s |")
    print("|---|---|---|---|---|")
    for b, ms in zip(bench["batches"], bench["lora_decode_ms"]):
        r = hf_runs.get(b)
        if not r:
            continue
        ours = b / ms * 1e3
        print(f"| {b} | {ours:.0f} | {r['lora_tok_s']:.1f} | {ours / r['lora_tok_s']:.1f}x | {r['base_tok_s']:.1f} |")


if __name__ == "__main__":
    main()
