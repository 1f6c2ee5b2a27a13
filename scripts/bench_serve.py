#!/usr/bin/env python3
"""Load generator for `rwkv serve` (in the manner of vLLM's benchmark_serving), Python stdlib only.

N concurrent clients each send streaming /v1/completions requests back to back until R requests
are done. Every prompt is P random token ids (sent as a token array, so its length is exact
whatever the vocabulary, and distinct so no state-cache hit helps), greedy, `ignore_eos`, O
output tokens. Reports aggregate output tok/s, time to first token and inter-token latency
(p50/p99) as one JSON line and, with --markdown, one table row.

    python3 scripts/bench_serve.py --url http://127.0.0.1:8080 --clients 64 \
        --prompt-tokens 512 --output-tokens 128 --requests 256
"""

import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse


def percentile(values, q):
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]


def one_request(host, port, model, prompt, output_tokens, api_key):
    body = json.dumps({
        "model": model, "prompt": prompt, "max_tokens": output_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True},
    })
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        text = resp.read().decode(errors="replace")
        conn.close()
        return {"error": f"HTTP {resp.status}: {text[:200]}"}
    first = None
    last = None
    gaps = []
    tokens = 0
    while True:
        line = resp.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        data = line[6:]
        if data == b"[DONE]":
            break
        msg = json.loads(data)
        if msg.get("usage"):
            tokens = msg["usage"]["completion_tokens"]
        for ch in msg.get("choices", []):
            if ch.get("text"):
                now = time.perf_counter()
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
    conn.close()
    return {"ttft": first, "gaps": gaps, "tokens": tokens}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default=None, help="default: the server's first model")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests", type=int, default=None, help="default: max(2*clients, 16)")
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--output-tokens", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=256,
                    help="prompt ids are drawn from [1, VOCAB); 256 suits every vocabulary")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80
    model = args.model
    if model is None:
        c = http.client.HTTPConnection(host, port, timeout=30)
        c.request("GET", "/v1/models",
                  headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else {})
        model = json.loads(c.getresponse().read())["data"][0]["id"]
        c.close()
    n_requests = args.requests or max(2 * args.clients, 16)
    rng = random.Random(1234)
    prompts = [[rng.randrange(1, args.vocab) for _ in range(args.prompt_tokens)]
               for _ in range(n_requests)]
    lock = threading.Lock()
    next_index = [0]
    results = []

    def client():
        while True:
            with lock:
                i = next_index[0]
                if i >= n_requests:
                    return
                next_index[0] += 1
            r = one_request(host, port, model, prompts[i], args.output_tokens, args.api_key)
            with lock:
                results.append(r)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [g for r in ok for g in r["gaps"]]
    out_tokens = sum(r["tokens"] for r in ok)
    report = {
        "label": args.label, "model": model, "clients": args.clients, "requests": n_requests,
        "ok": len(ok), "errors": len(errors), "prompt_tokens": args.prompt_tokens,
        "output_tokens": args.output_tokens, "wall_s": round(wall, 3),
        "output_tok_s": round(out_tokens / wall, 1),
        "ttft_p50_ms": round(1e3 * percentile(ttft, 50), 1),
        "ttft_p99_ms": round(1e3 * percentile(ttft, 99), 1),
        "itl_p50_ms": round(1e3 * percentile(itl, 50), 2),
        "itl_p99_ms": round(1e3 * percentile(itl, 99), 2),
    }
    print(json.dumps(report))
    if errors:
        print(f"first error: {errors[0]}", file=sys.stderr)
    if args.markdown:
        print(f"| {args.label} | {args.clients} | {report['output_tok_s']:,} | "
              f"{report['ttft_p50_ms']} | {report['ttft_p99_ms']} | "
              f"{report['itl_p50_ms']} | {report['itl_p99_ms']} | {len(errors)} |")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
