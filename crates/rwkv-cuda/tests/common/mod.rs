//! Shared by the GPU tests: random weights of every kernel encoding, an f64 reference of the
//! backend contract (dequantization from docs/gguf-formats.md, every Op as documented), and the
//! skip-or-fail rule for machines without a GPU.
#![allow(dead_code)]
// The reference interpreter indexes like the math it mirrors.
#![allow(clippy::needless_range_loop)]

use std::collections::BTreeMap;

use half::f16;
use rwkv_core::backend::{Act, Op, Plan, ShiftKind, Wkv7Args};
use rwkv_core::model::{Tensor, TensorBytes};
use rwkv_core::{DType, ModelDesc};
use rwkv_cuda::{CudaBackend, CudaOptions};

/// Opens device 0 with default options, or prints why not and returns None; panics instead
/// when RWKV_REQUIRE_GPU=1.
pub fn gpu_or_skip() -> Option<CudaBackend> {
    gpu_with_or_skip(CudaOptions::default())
}

/// Opens device 0 with `options`, or skips (rwkv_testing::skip_gpu: a failure under
/// RWKV_REQUIRE_GPU=cuda) and returns None, after which the test returns.
pub fn gpu_with_or_skip(options: CudaOptions) -> Option<CudaBackend> {
    match CudaBackend::new(0, options) {
        Ok(b) => Some(b),
        Err(e) => {
            rwkv_testing::skip_gpu("cuda", &format!("no CUDA device: {e}"));
            None
        }
    }
}

/// Options with batch-1 activations kept in f32 (int8 off), for the exact-path tolerances.
pub fn f32_activations() -> CudaOptions {
    CudaOptions {
        q8x: false,
        ..CudaOptions::default()
    }
}

/// splitmix64.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn f16b(v: f32) -> [u8; 2] {
    f16::from_f32(v).to_le_bytes()
}

/// Random bytes of a `[rows, cols]` tensor of `dtype` whose values are about `scale` in size.
pub fn random_tensor(rng: &mut Rng, dtype: DType, rows: usize, cols: usize, scale: f32) -> Tensor {
    let n = rows * cols;
    let mut b: Vec<u8> = Vec::new();
    match dtype {
        DType::F32 => {
            (0..n).for_each(|_| b.extend_from_slice(&(rng.uniform() * scale).to_le_bytes()))
        }
        DType::F16 => (0..n).for_each(|_| b.extend_from_slice(&f16b(rng.uniform() * scale))),
        DType::Q8_0 => {
            for _ in 0..n / 32 {
                b.extend_from_slice(&f16b(scale / 127.0 * (0.5 + 0.5 * rng.uniform().abs())));
                (0..32).for_each(|_| b.push(rng.next() as u8));
            }
        }
        DType::Q4K => {
            for _ in 0..n / 256 {
                // value = d*sc*q - dmin*mn, q in 0..15, sc/mn in 0..63: centre it around 0.
                let d = 2.0 * scale / (63.0 * 15.0);
                b.extend_from_slice(&f16b(d * (0.5 + 0.5 * rng.uniform().abs())));
                b.extend_from_slice(&f16b(d * 7.5 * (0.5 + 0.5 * rng.uniform().abs())));
                (0..12).for_each(|_| b.push(rng.next() as u8));
                (0..128).for_each(|_| b.push(rng.next() as u8));
            }
        }
        DType::Q6K => {
            for _ in 0..n / 256 {
                (0..192).for_each(|_| b.push(rng.next() as u8));
                (0..16).for_each(|_| b.push((rng.below(255) as i32 - 127) as i8 as u8));
                b.extend_from_slice(&f16b(
                    scale / (127.0 * 32.0) * (0.5 + 0.5 * rng.uniform().abs()),
                ));
            }
        }
        _ => panic!("no generator for {dtype}"),
    }
    let shape = if rows == 1 {
        vec![cols]
    } else {
        vec![rows, cols]
    };
    Tensor::new(dtype, shape, TensorBytes::owned(b)).expect("generated tensor is consistent")
}

fn rd16(b: &[u8], o: usize) -> f64 {
    f16::from_le_bytes([b[o], b[o + 1]]).to_f64()
}

/// Reference dequantization (docs/gguf-formats.md §3), f64.
pub fn dequant(t: &Tensor) -> Vec<f64> {
    let b = t.data.as_slice();
    let n = t.n_elements();
    let mut out = Vec::with_capacity(n);
    match t.dtype {
        DType::F32 => b
            .chunks_exact(4)
            .for_each(|c| out.push(f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)),
        DType::F16 => b.chunks_exact(2).for_each(|c| out.push(rd16(c, 0))),
        DType::Q8_0 => {
            for blk in b.chunks_exact(34) {
                let d = rd16(blk, 0);
                (0..32).for_each(|j| out.push(d * (blk[2 + j] as i8) as f64));
            }
        }
        DType::Q4K => {
            for blk in b.chunks_exact(144) {
                let (d, dmin) = (rd16(blk, 0), rd16(blk, 2));
                let s = &blk[4..16];
                let sm = |j: usize| -> (f64, f64) {
                    if j < 4 {
                        ((s[j] & 63) as f64, (s[j + 4] & 63) as f64)
                    } else {
                        (
                            ((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4)) as f64,
                            ((s[j + 4] >> 4) | ((s[j] >> 6) << 4)) as f64,
                        )
                    }
                };
                let qs = &blk[16..];
                for c in 0..4 {
                    let (sc1, m1) = sm(2 * c);
                    let (sc2, m2) = sm(2 * c + 1);
                    let q = &qs[32 * c..32 * c + 32];
                    (0..32).for_each(|l| out.push(d * sc1 * (q[l] & 15) as f64 - dmin * m1));
                    (0..32).for_each(|l| out.push(d * sc2 * (q[l] >> 4) as f64 - dmin * m2));
                }
            }
        }
        DType::Q6K => {
            for blk in b.chunks_exact(210) {
                let d = rd16(blk, 208);
                let mut y = [0f64; 256];
                for n2 in 0..2 {
                    let l_ = &blk[64 * n2..];
                    let h_ = &blk[128 + 32 * n2..];
                    let s_ = &blk[192 + 8 * n2..];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((l_[l] & 15) | ((h_[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((l_[l + 32] & 15) | (((h_[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((l_[l] >> 4) | (((h_[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((l_[l + 32] >> 4) | (((h_[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[128 * n2 + l] = d * (s_[is] as i8) as f64 * q1 as f64;
                        y[128 * n2 + l + 32] = d * (s_[is + 2] as i8) as f64 * q2 as f64;
                        y[128 * n2 + l + 64] = d * (s_[is + 4] as i8) as f64 * q3 as f64;
                        y[128 * n2 + l + 96] = d * (s_[is + 6] as i8) as f64 * q4 as f64;
                    }
                }
                out.extend_from_slice(&y);
            }
        }
        other => panic!("no reference dequantization for {other}"),
    }
    assert_eq!(out.len(), n);
    out
}

/// A random RWKV-7 model: large matrices in `dtype`, LoRA in `lora_dtype`, vectors f32.
pub fn random_model(
    rng: &mut Rng,
    d: &ModelDesc,
    dtype: DType,
    lora_dtype: DType,
) -> BTreeMap<String, Tensor> {
    let mut m = BTreeMap::new();
    for (name, shape) in rwkv_core::model::v7::canonical_tensors(d) {
        let t = if shape.len() == 1 {
            let base = if name.ends_with("weight") && (name.contains("ln") || name.contains("ln_x"))
            {
                1.0
            } else {
                0.0
            };
            let vals: Vec<f32> = (0..shape[0]).map(|_| base + 0.5 * rng.uniform()).collect();
            Tensor::from_f32(shape, &vals).unwrap()
        } else {
            let big = rwkv_core::model::v7::is_large_matrix(&name);
            let dt = if big { dtype } else { lora_dtype };
            let scale = if name == "emb.weight" {
                1.0
            } else {
                2.0 / (shape[1] as f32).sqrt()
            };
            random_tensor(rng, dt, shape[0], shape[1], scale)
        };
        m.insert(name, t);
    }
    m
}

/// f64 interpreter of a Plan: every Op exactly as its doc in rwkv-core/src/backend.rs says.
pub struct RefRunner {
    pub weights: Vec<Vec<f64>>,
    pub shapes: Vec<Vec<usize>>,
    pub states: Vec<Vec<f64>>,
    pub head: usize,
}

impl RefRunner {
    pub fn new(
        plan: &Plan,
        model: &BTreeMap<String, Tensor>,
        n_slots: usize,
        state_len: usize,
        head: usize,
    ) -> Self {
        let weights = plan.weights.iter().map(|n| dequant(&model[n])).collect();
        let shapes = plan
            .weights
            .iter()
            .map(|n| model[n].shape.clone())
            .collect();
        RefRunner {
            weights,
            shapes,
            states: vec![vec![0.0; state_len]; n_slots],
            head,
        }
    }

    pub fn run(&mut self, plan: &Plan, tokens: &[u32], slots: &[usize]) -> Vec<f64> {
        let (n_seq, n_tok) = (plan.shape.n_seq, plan.shape.n_tok);
        let mut bufs: Vec<Vec<f64>> = (0..plan.buffers.len())
            .map(|b| vec![0.0; plan.rows_of(b) * plan.buffers[b].width])
            .collect();
        let n_layer = plan
            .ops
            .iter()
            .filter(|o| matches!(o, Op::Wkv7(Wkv7Args { .. })))
            .count();
        let lsl = self.states[0].len() / n_layer;
        for op in &plan.ops {
            match op {
                Op::Embed { table, out } => {
                    let c = self.shapes[*table][1];
                    for (r, &t) in tokens.iter().enumerate() {
                        let src = &self.weights[*table][t as usize * c..(t as usize + 1) * c];
                        bufs[*out][r * c..(r + 1) * c].copy_from_slice(src);
                    }
                }
                Op::LayerNorm { x, w, b, out, eps } => {
                    let n = plan.buffers[*x].width;
                    for r in 0..plan.rows_of(*x) {
                        let row: Vec<f64> = bufs[*x][r * n..(r + 1) * n].to_vec();
                        let mean = row.iter().sum::<f64>() / n as f64;
                        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
                        let inv = 1.0 / (var + *eps as f64).sqrt();
                        for i in 0..n {
                            bufs[*out][r * n + i] =
                                (row[i] - mean) * inv * self.weights[*w][i] + self.weights[*b][i];
                        }
                    }
                }
                Op::TokenShift {
                    x,
                    layer,
                    kind,
                    mixes,
                } => {
                    let n = plan.buffers[*x].width;
                    let off = layer * lsl + if *kind == ShiftKind::Att { n } else { 0 };
                    for s in 0..n_seq {
                        let st = &mut self.states[slots[s]];
                        for t in 0..n_tok {
                            let r = s * n_tok + t;
                            for i in 0..n {
                                let cur = bufs[*x][r * n + i];
                                let prev = if t == 0 {
                                    st[off + i]
                                } else {
                                    bufs[*x][(r - 1) * n + i]
                                };
                                for (mw, ob) in mixes {
                                    bufs[*ob][r * n + i] =
                                        cur + (prev - cur) * self.weights[*mw][i];
                                }
                            }
                        }
                        let last = (s * n_tok + n_tok - 1) * n;
                        st[off..off + n].copy_from_slice(&bufs[*x][last..last + n]);
                    }
                }
                Op::MatMul { jobs } => {
                    for j in jobs {
                        let (o, i_) = (self.shapes[j.weight][0], self.shapes[j.weight][1]);
                        let w = &self.weights[j.weight];
                        for r in 0..plan.rows_of(j.x) {
                            for oi in 0..o {
                                let mut s = 0.0;
                                for k in 0..i_ {
                                    s += w[oi * i_ + k] * bufs[j.x][r * i_ + k];
                                }
                                if let Some(b) = j.bias {
                                    s += self.weights[b][oi];
                                }
                                let v = act64(j.act, s);
                                let dst = &mut bufs[j.out][r * o + oi];
                                if j.accumulate {
                                    *dst += v
                                } else {
                                    *dst = v
                                }
                            }
                        }
                    }
                }
                Op::Wkv7(Wkv7Args {
                    layer,
                    r,
                    w,
                    k,
                    v,
                    a,
                    g,
                    v_first,
                    v_mix,
                    k_k,
                    k_a,
                    r_k,
                    ln_x_w,
                    ln_x_b,
                    gn_eps,
                    out,
                }) => {
                    let c = plan.buffers[*r].width;
                    let nh = self.head;
                    let h_count = c / nh;
                    for s in 0..n_seq {
                        for t in 0..n_tok {
                            let row = s * n_tok + t;
                            let at =
                                |b: usize, i: usize, bufs: &Vec<Vec<f64>>| bufs[b][row * c + i];
                            for h in 0..h_count {
                                let base = h * nh;
                                let mut vv: Vec<f64> =
                                    (0..nh).map(|i| at(*v, base + i, &bufs)).collect();
                                match v_mix {
                                    Some(vm) => {
                                        for i in 0..nh {
                                            let vf = at(*v_first, base + i, &bufs);
                                            vv[i] += (vf - vv[i]) * at(*vm, base + i, &bufs);
                                        }
                                    }
                                    None => {
                                        for i in 0..nh {
                                            bufs[*v_first][row * c + base + i] = vv[i];
                                        }
                                    }
                                }
                                let kr: Vec<f64> =
                                    (0..nh).map(|i| at(*k, base + i, &bufs)).collect();
                                let aa: Vec<f64> =
                                    (0..nh).map(|i| at(*a, base + i, &bufs)).collect();
                                let rr: Vec<f64> =
                                    (0..nh).map(|i| at(*r, base + i, &bufs)).collect();
                                let ww: Vec<f64> =
                                    (0..nh).map(|i| at(*w, base + i, &bufs)).collect();
                                let mut kk: Vec<f64> = (0..nh)
                                    .map(|i| kr[i] * self.weights[*k_k][base + i])
                                    .collect();
                                let nrm = kk.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                                kk.iter_mut().for_each(|x| *x /= nrm);
                                let km: Vec<f64> = (0..nh)
                                    .map(|i| {
                                        kr[i] * (1.0 + (aa[i] - 1.0) * self.weights[*k_a][base + i])
                                    })
                                    .collect();
                                let st = &mut self.states[slots[s]];
                                let so = layer * lsl + 2 * c + h * nh * nh;
                                let mut y = vec![0.0; nh];
                                for p in 0..nh {
                                    let srow = &mut st[so + p * nh..so + (p + 1) * nh];
                                    let sa: f64 = (0..nh).map(|q| srow[q] * -kk[q]).sum();
                                    for q in 0..nh {
                                        srow[q] =
                                            srow[q] * ww[q] + sa * kk[q] * aa[q] + vv[p] * km[q];
                                    }
                                    y[p] = (0..nh).map(|q| srow[q] * rr[q]).sum();
                                }
                                let mean = y.iter().sum::<f64>() / nh as f64;
                                let var =
                                    y.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / nh as f64;
                                let bonus: f64 = (0..nh)
                                    .map(|q| rr[q] * km[q] * self.weights[*r_k][base + q])
                                    .sum();
                                for p in 0..nh {
                                    let yn = (y[p] - mean) / (var + *gn_eps as f64).sqrt()
                                        * self.weights[*ln_x_w][base + p]
                                        + self.weights[*ln_x_b][base + p];
                                    bufs[*out][row * c + base + p] =
                                        (yn + bonus * vv[p]) * at(*g, base + p, &bufs);
                                }
                            }
                        }
                    }
                }
                Op::LastRows { x, out } => {
                    let n = plan.buffers[*x].width;
                    for s in 0..n_seq {
                        let src = (s * n_tok + n_tok - 1) * n;
                        let row: Vec<f64> = bufs[*x][src..src + n].to_vec();
                        bufs[*out][s * n..(s + 1) * n].copy_from_slice(&row);
                    }
                }
            }
        }
        bufs[plan.logits].clone()
    }
}

pub fn act64(a: Act, x: f64) -> f64 {
    let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
    match a {
        Act::None => x,
        Act::Tanh => x.tanh(),
        Act::Sigmoid => sig(x),
        Act::ReluSq => x.max(0.0).powi(2),
        Act::Decay => (-(-0.5f64).exp() * sig(x)).exp(),
    }
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den.max(1e-300)).sqrt()
}

pub fn argmax64(v: &[f64]) -> usize {
    let mut best = 0;
    for i in 1..v.len() {
        if v[i] > v[best] {
            best = i;
        }
    }
    best
}
