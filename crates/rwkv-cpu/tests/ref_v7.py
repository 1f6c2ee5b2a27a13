#!/usr/bin/env python3
"""Independent float64 RWKV-7 reference, pure Python (no numpy), written from docs/rwkv-math.md.

Tensors are in the OFFICIAL .pth orientation: LoRA matrices w1/a1/v1/g1 are (C, D) and used as
x @ w1; w2/a2/v2/g2 are (D, C); r_k is (H, N); nn.Linear weights are (out, in) and used as W @ x.

Usage: ref_v7.py DIR
  reads  DIR/model.json   {"n_layer", "n_embd", "head_size", "vocab_size", "ffn_size",
                           "tokens": [...], "tensors": {name: {"shape": [...], "offset": bytes}}}
         DIR/weights.bin  the tensors as little-endian float32
  writes DIR/logits.bin   little-endian float64, vocab_size values after each token, in order
"""

import json
import math
import os
import struct
import sys


def load(directory):
    with open(os.path.join(directory, "model.json")) as f:
        index = json.load(f)
    with open(os.path.join(directory, "weights.bin"), "rb") as f:
        raw = f.read()
    tensors = {}
    for name, t in index["tensors"].items():
        shape = t["shape"]
        count = 1
        for d in shape:
            count *= d
        values = list(struct.unpack_from("<%df" % count, raw, t["offset"]))
        if len(shape) == 1:
            tensors[name] = values
        elif len(shape) == 2:
            rows, cols = shape
            tensors[name] = [values[i * cols:(i + 1) * cols] for i in range(rows)]
        else:
            raise ValueError("unexpected shape %r for %s" % (shape, name))
    return index, tensors


def linear(weight, x):
    """nn.Linear: W (out, in) @ x."""
    return [math.fsum(w * v for w, v in zip(row, x)) for row in weight]


def vec_mat(x, m):
    """Row vector x (len in) times m (in, out)."""
    cols = len(m[0])
    return [math.fsum(x[i] * m[i][j] for i in range(len(x))) for j in range(cols)]


def layer_norm(x, w, b, eps=1e-5):
    n = len(x)
    mean = math.fsum(x) / n
    var = math.fsum((v - mean) ** 2 for v in x) / n
    inv = 1.0 / math.sqrt(var + eps)
    return [(v - mean) * inv * wi + bi for v, wi, bi in zip(x, w, b)]


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def add(a, b):
    return [x + y for x, y in zip(a, b)]


def mul(a, b):
    return [x * y for x, y in zip(a, b)]


class Model:
    def __init__(self, index, tensors):
        self.t = tensors
        self.n_layer = index["n_layer"]
        self.c = index["n_embd"]
        self.n = index["head_size"]
        self.h = self.c // self.n
        self.vocab = index["vocab_size"]
        # State per layer: att_x, ffn_x (previous layer-normed inputs), S per head (N x N,
        # row p = value channel, column q = key channel). All zeros initially.
        self.att_x = [[0.0] * self.c for _ in range(self.n_layer)]
        self.ffn_x = [[0.0] * self.c for _ in range(self.n_layer)]
        self.s = [[[[0.0] * self.n for _ in range(self.n)] for _ in range(self.h)] for _ in range(self.n_layer)]

    def p(self, i, name):
        return self.t["blocks.%d.%s" % (i, name)]

    def time_mix(self, i, xa, v_first):
        p = lambda name: self.p(i, name)
        c, n = self.c, self.n
        d = [prev - cur for prev, cur in zip(self.att_x[i], xa)]
        mixed = {}
        for m in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g"):
            mixed[m] = [cur + di * mi for cur, di, mi in zip(xa, d, p("att." + m))]
        r = linear(p("att.receptance.weight"), mixed["x_r"])
        k = linear(p("att.key.weight"), mixed["x_k"])
        v = linear(p("att.value.weight"), mixed["x_v"])
        z = add(p("att.w0"), vec_mat([math.tanh(u) for u in vec_mat(mixed["x_w"], p("att.w1"))], p("att.w2")))
        decay = [math.exp(-math.exp(-0.5) * sigmoid(zi)) for zi in z]
        a = [sigmoid(u) for u in add(p("att.a0"), vec_mat(vec_mat(mixed["x_a"], p("att.a1")), p("att.a2")))]
        g = vec_mat([sigmoid(u) for u in vec_mat(mixed["x_g"], p("att.g1"))], p("att.g2"))
        kk = mul(k, p("att.k_k"))
        for h in range(self.h):
            head = kk[h * n:(h + 1) * n]
            norm = max(math.sqrt(math.fsum(u * u for u in head)), 1e-12)
            kk[h * n:(h + 1) * n] = [u / norm for u in head]
        k = [ki * (1.0 + (ai - 1.0) * kai) for ki, ai, kai in zip(k, a, p("att.k_a"))]
        if i == 0:
            v_first = v
        else:
            mix = [sigmoid(u) for u in add(p("att.v0"), vec_mat(vec_mat(mixed["x_v"], p("att.v1")), p("att.v2")))]
            v = [vi + (fi - vi) * mi for vi, fi, mi in zip(v, v_first, mix)]

        y = [0.0] * c
        for h in range(self.h):
            s = self.s[i][h]
            o = h * n
            for row in range(n):
                sa = math.fsum(s[row][q] * -kk[o + q] for q in range(n))
                for q in range(n):
                    s[row][q] = s[row][q] * decay[o + q] + sa * (kk[o + q] * a[o + q]) + v[o + row] * k[o + q]
                y[o + row] = math.fsum(s[row][q] * r[o + q] for q in range(n))

        ln_w, ln_b, r_k = p("att.ln_x.weight"), p("att.ln_x.bias"), p("att.r_k")
        out = [0.0] * c
        for h in range(self.h):
            o = h * n
            head = y[o:o + n]
            mean = math.fsum(head) / n
            var = math.fsum((u - mean) ** 2 for u in head) / n
            inv = 1.0 / math.sqrt(var + 64e-5)
            bonus = math.fsum(r[o + q] * k[o + q] * r_k[h][q] for q in range(n))
            for q in range(n):
                normed = (head[q] - mean) * inv * ln_w[o + q] + ln_b[o + q]
                out[o + q] = (normed + bonus * v[o + q]) * g[o + q]
        self.att_x[i] = xa
        return linear(p("att.output.weight"), out), v_first

    def channel_mix(self, i, xf):
        p = lambda name: self.p(i, name)
        kx = [cur + (prev - cur) * m for cur, prev, m in zip(xf, self.ffn_x[i], p("ffn.x_k"))]
        hidden = [max(u, 0.0) ** 2 for u in linear(p("ffn.key.weight"), kx)]
        self.ffn_x[i] = xf
        return linear(p("ffn.value.weight"), hidden)

    def forward(self, token):
        t = self.t
        x = layer_norm(t["emb.weight"][token], t["blocks.0.ln0.weight"], t["blocks.0.ln0.bias"])
        v_first = None
        for i in range(self.n_layer):
            xa = layer_norm(x, self.p(i, "ln1.weight"), self.p(i, "ln1.bias"))
            dx, v_first = self.time_mix(i, xa, v_first)
            x = add(x, dx)
            xf = layer_norm(x, self.p(i, "ln2.weight"), self.p(i, "ln2.bias"))
            x = add(x, self.channel_mix(i, xf))
        return linear(t["head.weight"], layer_norm(x, t["ln_out.weight"], t["ln_out.bias"]))


def main():
    directory = sys.argv[1]
    index, tensors = load(directory)
    model = Model(index, tensors)
    with open(os.path.join(directory, "logits.bin"), "wb") as f:
        for token in index["tokens"]:
            logits = model.forward(token)
            f.write(struct.pack("<%dd" % len(logits), *logits))


if __name__ == "__main__":
    main()
