//! RWKV-7 "Goose" (x070): canonical tensors and one step of the network as a [`Plan`].
//!
//! Per token (docs/rwkv-math.md; `LN` = layer norm, `σ` = sigmoid):
//! ```text
//! x = LN(emb[token]; ln0)
//! for each layer:
//!     xa = LN(x; ln1);  d = prev(xa) − xa;  x_* = xa + d·att.x_*          (token shift, 6 mixes)
//!     r = W_r x_r;  k = W_k x_k;  v = W_v x_v
//!     w = exp(−e^−½ σ(w0 + tanh(x_w W1) W2));  a = σ(a0 + x_a A1 A2);  g = σ(x_g G1) G2
//!     v = v + (v_first − v) σ(v0 + x_v V1 V2)      (layer 0: v_first = v)
//!     y = WKV7(r, w, k, v, a; S) then GroupNorm, bonus (r·k·r_k) v, times g
//!     x = x + W_o y
//!     xf = LN(x; ln2);  k = xf + (prev(xf) − xf)·ffn.x_k
//!     x = x + W_value relu(W_key k)²
//! logits = head · LN(x; ln_out)
//! ```
//! Try it: `rwkv synth --shape tiny -o /tmp/t.gguf && rwkv generate -m /tmp/t.gguf -p hi -n 16`.

use crate::backend::{
    Act, BufId, BufferDecl, MatJob, Op, Plan, ShiftKind, StateLayout, StepShape, WeightId, Wkv7Args,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::{Model, ModelDesc, StepBuilder};

/// Layer-norm epsilon of every RWKV-7 checkpoint.
pub const LN_EPS: f32 = 1e-5;
/// GroupNorm epsilon of `ln_x`: 64e-5 in all reference code (it is `1e-5 · head_size` with N = 64).
pub const GN_EPS: f32 = 64e-5;

/// The six token-shift mixes of the time mix, in the order fused formats store them.
pub const ATT_MIXES: [&str; 6] = ["x_r", "x_w", "x_k", "x_v", "x_a", "x_g"];

/// Every canonical tensor of an RWKV-7 model with its shape (`[out, in]` for matrices).
/// Layer 0 has `ln0` and no `v0/v1/v2`.
pub fn canonical_tensors(d: &ModelDesc) -> Vec<(String, Vec<usize>)> {
    let (c, v, f) = (d.n_embd, d.vocab_size, d.ffn_size);
    let r = d.lora;
    let mut t: Vec<(String, Vec<usize>)> = vec![
        ("emb.weight".into(), vec![v, c]),
        ("blocks.0.ln0.weight".into(), vec![c]),
        ("blocks.0.ln0.bias".into(), vec![c]),
    ];
    for i in 0..d.n_layer {
        let b = |s: &str| format!("blocks.{i}.{s}");
        for n in ["ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"] {
            t.push((b(n), vec![c]));
        }
        for m in ATT_MIXES {
            t.push((b(&format!("att.{m}")), vec![c]));
        }
        let mut lora = vec![("w", r.w), ("a", r.a), ("g", r.g)];
        if i > 0 {
            lora.push(("v", r.v));
        }
        for (p, rank) in lora {
            if p != "g" {
                t.push((b(&format!("att.{p}0")), vec![c]));
            }
            t.push((b(&format!("att.{p}1")), vec![rank, c]));
            t.push((b(&format!("att.{p}2")), vec![c, rank]));
        }
        for n in [
            "att.k_k",
            "att.k_a",
            "att.r_k",
            "att.ln_x.weight",
            "att.ln_x.bias",
            "ffn.x_k",
        ] {
            t.push((b(n), vec![c]));
        }
        for n in ["receptance", "key", "value", "output"] {
            t.push((b(&format!("att.{n}.weight")), vec![c, c]));
        }
        t.push((b("ffn.key.weight"), vec![f, c]));
        t.push((b("ffn.value.weight"), vec![c, f]));
    }
    t.push(("ln_out.weight".into(), vec![c]));
    t.push(("ln_out.bias".into(), vec![c]));
    t.push(("head.weight".into(), vec![v, c]));
    t
}

/// The large matrices: what `--quant` converts and what a token's decode reads from memory.
pub fn is_large_matrix(name: &str) -> bool {
    name == "head.weight"
        || name == "emb.weight"
        || [
            ".att.receptance.weight",
            ".att.key.weight",
            ".att.value.weight",
            ".att.output.weight",
        ]
        .iter()
        .chain([".ffn.key.weight", ".ffn.value.weight"].iter())
        .any(|s| name.ends_with(s))
}

/// Checks that `model` has exactly the canonical tensors with the right shapes, and that
/// vectors and LoRA matrices are plain floats. Errors name the file and the first problem.
pub fn validate(model: &Model) -> Result<()> {
    let d = &model.desc;
    let err = |what: String| Error::model(&model.source, what);
    if d.head_size == 0 || d.n_embd == 0 || !d.n_embd.is_multiple_of(d.head_size) {
        return Err(err(format!(
            "n_embd {} is not a multiple of head size {}",
            d.n_embd, d.head_size
        )));
    }
    if d.n_layer == 0 || d.vocab_size == 0 || d.ffn_size == 0 {
        return Err(err(
            "model has no layers, no vocabulary or no channel mix".into()
        ));
    }
    let want = canonical_tensors(d);
    for (name, shape) in &want {
        let t = model
            .tensors
            .get(name)
            .ok_or_else(|| err(format!("missing tensor '{name}'")))?;
        if &t.shape != shape {
            return Err(err(format!(
                "tensor '{name}' has shape {:?}, the architecture needs {:?}",
                t.shape, shape
            )));
        }
        if !is_large_matrix(name) && !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(err(format!(
                "tensor '{name}' is {}, expected f32/f16/bf16",
                t.dtype
            )));
        }
    }
    if model.tensors.len() != want.len() {
        let extra = model
            .tensors
            .keys()
            .find(|k| !want.iter().any(|(n, _)| n == *k))
            .cloned()
            .unwrap_or_default();
        return Err(err(format!("unexpected tensor '{extra}'")));
    }
    Ok(())
}

/// Builds plans for a model. The weight list (and so every [`WeightId`]) is the same for every
/// plan of one model: [`PlanBuilder::weights`].
pub struct PlanBuilder {
    desc: ModelDesc,
    weights: Vec<String>,
    state: StateLayout,
}

impl PlanBuilder {
    pub fn new(desc: &ModelDesc) -> PlanBuilder {
        let weights = canonical_tensors(desc)
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        PlanBuilder {
            desc: desc.clone(),
            weights,
            state: desc.state_layout(),
        }
    }

    /// Canonical names in [`WeightId`] order: upload them in this order.
    pub fn weights(&self) -> &[String] {
        &self.weights
    }

    fn w(&self, name: &str) -> WeightId {
        // The list is built from the same canonical_tensors() the names come from.
        self.weights
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| unreachable!("plan asks for unknown tensor {name}"))
    }

    /// One step for `shape`. With `all_logits`, logits for every row; otherwise for the last
    /// token of each sequence.
    pub fn build(&self, shape: StepShape, all_logits: bool) -> Plan {
        let d = &self.desc;
        let (c, r) = (d.n_embd, d.lora);
        let mut buffers: Vec<BufferDecl> = Vec::new();
        let mut buf = |name: &str, width: usize, last_only: bool| -> BufId {
            buffers.push(BufferDecl {
                name: name.into(),
                width,
                last_only,
            });
            buffers.len() - 1
        };
        let x = buf("x", c, false);
        let xn = buf("x_norm", c, false);
        let mixed: Vec<BufId> = ATT_MIXES.iter().map(|m| buf(m, c, false)).collect();
        let (xr, xw, xk, xv, xa, xg) = (mixed[0], mixed[1], mixed[2], mixed[3], mixed[4], mixed[5]);
        let rr = buf("r", c, false);
        let kk = buf("k", c, false);
        let vv = buf("v", c, false);
        let lw = buf("lora_w", r.w, false);
        let la = buf("lora_a", r.a, false);
        let lv = buf("lora_v", r.v, false);
        let lg = buf("lora_g", r.g, false);
        let decay = buf("decay", c, false);
        let iclr = buf("iclr", c, false);
        let vmix = buf("v_mix", c, false);
        let gate = buf("gate", c, false);
        let v_first = buf("v_first", c, false);
        let y = buf("wkv_out", c, false);
        let fk = buf("ffn_k", c, false);
        let fh = buf("ffn_hidden", d.ffn_size, false);
        let (head_in, head_norm, logits) = if all_logits {
            (
                x,
                buf("out_norm", c, false),
                buf("logits", d.vocab_size, false),
            )
        } else {
            let last = buf("x_last", c, true);
            (
                last,
                buf("out_norm", c, true),
                buf("logits", d.vocab_size, true),
            )
        };

        let job = |weight, x, out, bias, act, accumulate| MatJob {
            weight,
            x,
            out,
            bias,
            act,
            accumulate,
        };
        let mut ops = vec![
            Op::Embed {
                table: self.w("emb.weight"),
                out: x,
            },
            Op::LayerNorm {
                x,
                w: self.w("blocks.0.ln0.weight"),
                b: self.w("blocks.0.ln0.bias"),
                out: x,
                eps: LN_EPS,
            },
        ];
        for i in 0..d.n_layer {
            let w = |s: &str| self.w(&format!("blocks.{i}.{s}"));
            // Time mix.
            ops.push(Op::LayerNorm {
                x,
                w: w("ln1.weight"),
                b: w("ln1.bias"),
                out: xn,
                eps: LN_EPS,
            });
            ops.push(Op::TokenShift {
                x: xn,
                layer: i,
                kind: ShiftKind::Att,
                mixes: ATT_MIXES
                    .iter()
                    .zip(&mixed)
                    .map(|(m, &o)| (w(&format!("att.{m}")), o))
                    .collect(),
            });
            ops.push(Op::MatMul {
                jobs: vec![
                    job(w("att.receptance.weight"), xr, rr, None, Act::None, false),
                    job(w("att.key.weight"), xk, kk, None, Act::None, false),
                    job(w("att.value.weight"), xv, vv, None, Act::None, false),
                ],
            });
            let mut down = vec![
                job(w("att.w1"), xw, lw, None, Act::Tanh, false),
                job(w("att.a1"), xa, la, None, Act::None, false),
                job(w("att.g1"), xg, lg, None, Act::Sigmoid, false),
            ];
            let mut up = vec![
                job(w("att.w2"), lw, decay, Some(w("att.w0")), Act::Decay, false),
                job(
                    w("att.a2"),
                    la,
                    iclr,
                    Some(w("att.a0")),
                    Act::Sigmoid,
                    false,
                ),
                job(w("att.g2"), lg, gate, None, Act::None, false),
            ];
            if i > 0 {
                down.push(job(w("att.v1"), xv, lv, None, Act::None, false));
                up.push(job(
                    w("att.v2"),
                    lv,
                    vmix,
                    Some(w("att.v0")),
                    Act::Sigmoid,
                    false,
                ));
            }
            ops.push(Op::MatMul { jobs: down });
            ops.push(Op::MatMul { jobs: up });
            ops.push(Op::Wkv7(Wkv7Args {
                layer: i,
                r: rr,
                w: decay,
                k: kk,
                v: vv,
                a: iclr,
                g: gate,
                v_first,
                v_mix: (i > 0).then_some(vmix),
                k_k: w("att.k_k"),
                k_a: w("att.k_a"),
                r_k: w("att.r_k"),
                ln_x_w: w("att.ln_x.weight"),
                ln_x_b: w("att.ln_x.bias"),
                gn_eps: GN_EPS,
                out: y,
            }));
            ops.push(Op::MatMul {
                jobs: vec![job(w("att.output.weight"), y, x, None, Act::None, true)],
            });
            // Channel mix.
            ops.push(Op::LayerNorm {
                x,
                w: w("ln2.weight"),
                b: w("ln2.bias"),
                out: xn,
                eps: LN_EPS,
            });
            ops.push(Op::TokenShift {
                x: xn,
                layer: i,
                kind: ShiftKind::Ffn,
                mixes: vec![(w("ffn.x_k"), fk)],
            });
            ops.push(Op::MatMul {
                jobs: vec![job(w("ffn.key.weight"), fk, fh, None, Act::ReluSq, false)],
            });
            ops.push(Op::MatMul {
                jobs: vec![job(w("ffn.value.weight"), fh, x, None, Act::None, true)],
            });
        }
        if !all_logits {
            ops.push(Op::LastRows { x, out: head_in });
        }
        ops.push(Op::LayerNorm {
            x: head_in,
            w: self.w("ln_out.weight"),
            b: self.w("ln_out.bias"),
            out: head_norm,
            eps: LN_EPS,
        });
        ops.push(Op::MatMul {
            jobs: vec![job(
                self.w("head.weight"),
                head_norm,
                logits,
                None,
                Act::None,
                false,
            )],
        });
        Plan {
            shape,
            buffers,
            weights: self.weights.clone(),
            ops,
            state: self.state.clone(),
            logits,
        }
    }
}

impl StepBuilder for PlanBuilder {
    fn weights(&self) -> &[String] {
        PlanBuilder::weights(self)
    }
    fn state_layout(&self) -> &StateLayout {
        &self.state
    }
    fn build(&self, shape: StepShape, all_logits: bool) -> Plan {
        PlanBuilder::build(self, shape, all_logits)
    }
}
