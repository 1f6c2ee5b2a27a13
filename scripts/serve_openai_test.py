#!/usr/bin/env python3
"""`rwkv serve` through the official `openai` Python client.

Usage: serve_openai_test.py --base-url http://127.0.0.1:PORT/v1 --model NAME

Run by crates/rwkv/tests/serve.rs (`openai_python_client`), which starts the server on the
synthetic tiny model and installs `openai` into a venv. Exits 0 when every check passes.
"""

import argparse
import sys

import openai

checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key="unused", max_retries=0)
    model = args.model

    ids = [m.id for m in client.models.list().data]
    check(model in ids, f"models.list has {model}: {ids}")

    # Completions, not streamed: exact usage.
    prompt = "The river runs north past seven stones"
    r = client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0,
                                  logit_bias={"0": -100})
    full = r.choices[0].text
    check(r.choices[0].finish_reason == "length", f"finish_reason {r.choices[0].finish_reason}")
    check(r.usage.completion_tokens == 20, f"completion_tokens {r.usage.completion_tokens}")
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, "total")

    # Streamed: the same text, ending with a finish reason and the usage chunk.
    pieces, finish, usage = [], None, None
    for c in client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0,
                                       logit_bias={"0": -100}, stream=True,
                                       stream_options={"include_usage": True}):
        if c.usage is not None:
            usage = c.usage
        for ch in c.choices:
            pieces.append(ch.text)
            finish = ch.finish_reason or finish
    check("".join(pieces) == full, f"streamed {''.join(pieces)!r} != {full!r}")
    check(finish == "length", f"streamed finish {finish}")
    check(usage is not None and usage.completion_tokens == 20, f"stream usage {usage}")

    # A stop string from the middle of the text: cut before it, streamed or not, no leak.
    stop = None
    for i in range(len(full) // 3, len(full) - 1):
        w = full[i:i + 2]
        if all(ch.isascii() and (ch.isprintable()) for ch in w):
            stop = w
            break
    if stop is not None:
        want = full[:full.index(stop)]
        r = client.completions.create(model=model, prompt=prompt, max_tokens=20, temperature=0,
                                      logit_bias={"0": -100}, stop=[stop])
        check(r.choices[0].text == want, f"stop: {r.choices[0].text!r} != {want!r}")
        check(r.choices[0].finish_reason == "stop", "stop finish_reason")
        streamed = "".join(ch.text for c in client.completions.create(
            model=model, prompt=prompt, max_tokens=20, temperature=0, logit_bias={"0": -100},
            stop=[stop], stream=True) for ch in c.choices)
        check(streamed == want, f"streamed stop: {streamed!r} != {want!r}")
    else:
        print("note: no ASCII pair in the text; stop check skipped")

    # Chat, streamed and not.
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    r = client.chat.completions.create(model=model, messages=msgs, max_tokens=12, temperature=0)
    content = r.choices[0].message.content
    check(r.choices[0].message.role == "assistant", "chat role")
    check(r.object == "chat.completion", "chat object")
    parts = []
    for c in client.chat.completions.create(model=model, messages=msgs, max_tokens=12,
                                            temperature=0, stream=True):
        for ch in c.choices:
            if ch.delta.content:
                parts.append(ch.delta.content)
    check("".join(parts) == content, f"chat stream {''.join(parts)!r} != {content!r}")

    # Seeds: same seed, same text; penalties change greedy output.
    def sampled(seed):
        return client.completions.create(model=model, prompt=prompt, max_tokens=24, temperature=1,
                                         top_p=0.9, seed=seed).choices[0].text
    check(sampled(5) == sampled(5), "same seed, same text")
    check(any(sampled(s) != sampled(5) for s in (6, 7, 8)), "other seeds differ")
    plain = client.completions.create(model=model, prompt=prompt, max_tokens=32,
                                      temperature=0).choices[0].text
    pen = client.completions.create(model=model, prompt=prompt, max_tokens=32, temperature=0,
                                    frequency_penalty=2, presence_penalty=2).choices[0].text
    check(pen != plain, "penalties change the output")

    # Errors come back as the client's typed exceptions.
    for bad in ({"temperature": 7}, {"model": "gpt-4"}, {"stop": ["a", "b", "c", "d", "e"]}):
        kw = {"model": model, "prompt": "x", "max_tokens": 2, **bad}
        try:
            client.completions.create(**kw)
            check(False, f"{bad} accepted")
        except openai.BadRequestError as e:
            check(e.status_code == 400, f"{bad}: status {e.status_code}")

    print(f"PASS: {checks} checks through openai {openai.__version__}")


if __name__ == "__main__":
    main()
