#!/usr/bin/env python3
"""The comparison point for bench.cc: the same mixed-adapter decode batch served by Hugging Face
transformers + PEFT on the same GPU.

A Llama-3-8B-shaped LlamaForCausalLM with random bfloat16 weights (initialised directly on the GPU),
n distinct rank-16 LoRA adapters on all seven projection modules, a batch of n sequences where
sequence i uses adapter i (PEFT's mixed-batch `adapter_names`), greedy decoding after a prompt of
--ctx tokens. Decode throughput = n / (time per generated token), with the prefill subtracted by
also timing a 1-token generate. Prints one JSON object.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def timed_generate(model, ids, mask, new_tokens, adapter_names):
    kwargs = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    if adapter_names is not None:
        kwargs["adapter_names"] = adapter_names
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(**kwargs)
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapters", type=int, nargs="+", default=[1, 8, 32, 64])
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--layers", type=int, default=32)
    args = ap.parse_args()

    cfg = LlamaConfig(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=args.layers, num_attention_heads=32,
                      num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    t0 = time.perf_counter()
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    model.eval()
    n_max = max(args.adapters)
    lcfg = LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False)
    peft = get_peft_model(model, lcfg, adapter_name="a0")
    for i in range(1, n_max):
        peft.add_adapter(f"a{i}", lcfg)
    peft.to(device="cuda", dtype=torch.bfloat16)
    peft.eval()
    load_s = time.perf_counter() - t0

    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "ctx": args.ctx, "new_tokens": args.new, "load_s": load_s, "runs": []}
    # One line now and one per finished batch size: a run stopped by its time limit keeps both.
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}), flush=True)
    g = torch.Generator(device="cuda").manual_seed(1)
    for n in args.adapters:
        ids = torch.randint(3, cfg.vocab_size, (n, args.ctx), device="cuda", generator=g)
        mask = torch.ones_like(ids)
        names = [f"a{i}" for i in range(n)]
        timed_generate(peft, ids, mask, 2, names)  # warm-up
        lora_full = timed_generate(peft, ids, mask, args.new, names)
        lora_pre = timed_generate(peft, ids, mask, 1, names)
        with peft.disable_adapter():
            timed_generate(peft, ids, mask, 2, None)
            base_full = timed_generate(peft, ids, mask, args.new, None)
            base_pre = timed_generate(peft, ids, mask, 1, None)
        lora_step = max(lora_full - lora_pre, 1e-9) / (args.new - 1)
        base_step = max(base_full - base_pre, 1e-9) / (args.new - 1)
        run = {"adapters": n, "batch": n, "lora_step_ms": lora_step * 1e3, "lora_tok_s": n / lora_step, "base_step_ms": base_step * 1e3,
               "base_tok_s": n / base_step}
        out["runs"].append(run)
        print(json.dumps(run), flush=True)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
