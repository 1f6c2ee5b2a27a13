//! Every op of the backend contract against a plain reference written here, on fresh random
//! inputs, with and without the adapter's optional features, and with a small binding cap that
//! forces matrices and tables to be split into several buffers.

mod common;

use common::*;
use rwkv_core::backend::{Act, Backend, BufferDecl, MatJob, Op, Plan, ShiftKind, StepOutput, StepShape};
use rwkv_core::model::Tensor;
use rwkv_core::DType;
use rwkv_wgpu::{WgpuBackend, WgpuOptions};

const QUANT_DTYPES: [DType; 6] = [DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4K, DType::Q6K];

fn buf(name: &str, width: usize, last_only: bool) -> BufferDecl {
    BufferDecl { name: name.into(), width, last_only }
}

fn upload_all(b: &mut WgpuBackend, weights: &[(String, Tensor)]) {
    for (i, (name, t)) in weights.iter().enumerate() {
        b.upload_weight(i, name, t).expect("upload");
    }
}

fn plan(shape: StepShape, buffers: Vec<BufferDecl>, weights: &[(String, Tensor)], ops: Vec<Op>, logits: usize) -> Plan {
    Plan { shape, buffers, weights: weights.iter().map(|(n, _)| n.clone()).collect(), ops, logits }
}

fn logits_of(b: &mut WgpuBackend, p: &Plan, tokens: &[u32], slots: &[usize]) -> Vec<f32> {
    let id = b.compile(p).expect("compile");
    let n = p.rows_of(p.logits) * p.buffers[p.logits].width;
    let mut out = vec![f32::NAN; n];
    b.execute(id, tokens, slots, StepOutput::Logits(&mut out)).expect("execute");
    out
}

/// Backends with their optional features, without them, and both with a 16 KiB binding cap.
fn all_backends() -> Vec<(String, WgpuBackend)> {
    let mut v = backends(WgpuOptions::default());
    if v.is_empty() {
        return v;
    }
    for (label, b) in backends(WgpuOptions { max_binding_bytes: Some(16 << 10), ..Default::default() }) {
        v.push((format!("{label}, 16 KiB bindings"), b));
    }
    v
}

#[test]
fn matmul_every_dtype_with_bias_act_and_accumulate() {
    let seed = seed();
    let (vocab, cols, n_out, n_tok) = (11usize, 512usize, 150usize, 5usize);
    for (label, mut b) in all_backends() {
        for (di, dtype) in QUANT_DTYPES.into_iter().enumerate() {
            let mut rng = Rng::new(seed ^ (di as u64 * 7919));
            let table = rng.vec(vocab * cols, -1.0, 1.0);
            let w_bytes = random_blocks(&mut rng, dtype, n_out * cols);
            let w2_bytes = random_blocks(&mut rng, dtype, n_out * cols);
            let bias = rng.vec(n_out, -0.5, 0.5);
            let weights = vec![
                ("emb.weight".to_string(), f32_tensor(vec![vocab, cols], &table)),
                ("w".to_string(), tensor(dtype, vec![n_out, cols], w_bytes.clone())),
                ("w2".to_string(), tensor(dtype, vec![n_out, cols], w2_bytes.clone())),
                ("bias".to_string(), f32_tensor(vec![n_out], &bias)),
            ];
            upload_all(&mut b, &weights);
            let ops = vec![
                Op::Embed { table: 0, out: 0 },
                Op::MatMul {
                    jobs: vec![MatJob { weight: 1, x: 0, out: 1, bias: Some(3), act: Act::Sigmoid, accumulate: false }],
                },
                Op::MatMul {
                    jobs: vec![MatJob { weight: 2, x: 0, out: 1, bias: None, act: Act::None, accumulate: true }],
                },
            ];
            let shape = StepShape { n_seq: 1, n_tok };
            let p = plan(shape, vec![buf("x", cols, false), buf("out", n_out, false)], &weights, ops, 1);
            b.alloc_states(1, 4).expect("states");
            let tokens: Vec<u32> = (0..n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
            let got = logits_of(&mut b, &p, &tokens, &[0]);
            let w = dequant(dtype, &w_bytes);
            let w2 = dequant(dtype, &w2_bytes);
            let mut want = Vec::new();
            let mut tol = Vec::new();
            for &t in &tokens {
                let x = &table[t as usize * cols..][..cols];
                for o in 0..n_out {
                    let (mut s1, mut s2, mut mag) = (0f64, 0f64, 0f64);
                    for k in 0..cols {
                        s1 += w[o * cols + k] as f64 * x[k] as f64;
                        s2 += w2[o * cols + k] as f64 * x[k] as f64;
                        mag += (w[o * cols + k] as f64 * x[k] as f64).abs() + (w2[o * cols + k] as f64 * x[k] as f64).abs();
                    }
                    want.push(Act::Sigmoid.apply((s1 + bias[o] as f64) as f32) + s2 as f32);
                    tol.push(2e-6 * mag as f32 + 1e-5);
                }
            }
            let (d, _) = max_abs_diff(&got, &want);
            println!("{label} {dtype}: max abs diff {d:.3e}");
            for i in 0..want.len() {
                assert!(
                    (got[i] - want[i]).abs() <= tol[i],
                    "{label} {dtype}: value {i}: got {} want {} (tol {})",
                    got[i],
                    want[i],
                    tol[i]
                );
            }
            if label.contains("16 KiB") {
                assert!(b.weight_buffers(1) > 1, "{label} {dtype}: the matrix was not split");
                assert!(b.weight_buffers(0) > 1, "{label} {dtype}: the table was not split");
            }
        }
    }
}


#[test]
fn embed_every_dtype_matches_dequantized_rows() {
    let seed = seed();
    let (vocab, cols, n_seq, n_tok) = (9usize, 512usize, 2usize, 3usize);
    for (label, mut b) in all_backends() {
        b.alloc_states(2, 4).expect("states");
        for (di, dtype) in QUANT_DTYPES.into_iter().enumerate() {
            let mut rng = Rng::new(seed ^ (di as u64 * 104_729));
            let bytes = random_blocks(&mut rng, dtype, vocab * cols);
            let weights = vec![("emb.weight".to_string(), tensor(dtype, vec![vocab, cols], bytes.clone()))];
            upload_all(&mut b, &weights);
            let shape = StepShape { n_seq, n_tok };
            let p = plan(shape, vec![buf("x", cols, false)], &weights, vec![Op::Embed { table: 0, out: 0 }], 0);
            let tokens: Vec<u32> = (0..n_seq * n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
            let got = logits_of(&mut b, &p, &tokens, &[1, 0]);
            let table = dequant(dtype, &bytes);
            for (r, &t) in tokens.iter().enumerate() {
                let want = &table[t as usize * cols..][..cols];
                let (d, i) = max_abs_diff(&got[r * cols..][..cols], want);
                // The kernel may fuse scale·q − min into one fma: allow the last bit.
                assert!(d <= 1e-6 * want[i].abs().max(1.0), "{label} {dtype}: row {r} col {i}: diff {d}");
            }
        }
    }
}

/// Embed, LayerNorm in place, LastRows into a last-only buffer; logits and argmax read back.
#[test]
fn layer_norm_last_rows_and_argmax() {
    let seed = seed();
    let (vocab, c, n_seq, n_tok) = (13usize, 200usize, 3usize, 4usize);
    for (label, mut b) in all_backends() {
        let mut rng = Rng::new(seed);
        let table = rng.vec(vocab * c, -2.0, 3.0);
        let (w, bias) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.3, 0.3));
        let weights = vec![
            ("emb.weight".to_string(), f32_tensor(vec![vocab, c], &table)),
            ("ln.weight".to_string(), f32_tensor(vec![c], &w)),
            ("ln.bias".to_string(), f32_tensor(vec![c], &bias)),
        ];
        upload_all(&mut b, &weights);
        b.alloc_states(3, 8).expect("states");
        let ops = vec![
            Op::Embed { table: 0, out: 0 },
            Op::LayerNorm { x: 0, w: 1, b: 2, out: 0, eps: 1e-5 },
            Op::LastRows { x: 0, out: 1 },
        ];
        let p = plan(StepShape { n_seq, n_tok }, vec![buf("x", c, false), buf("last", c, true)], &weights, ops, 1);
        let tokens: Vec<u32> = (0..n_seq * n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
        let id = b.compile(&p).expect("compile");
        let mut got = vec![f32::NAN; n_seq * c];
        b.execute(id, &tokens, &[2, 0, 1], StepOutput::Logits(&mut got)).expect("execute");
        let mut arg = vec![u32::MAX; n_seq];
        b.execute(id, &tokens, &[0, 1, 2], StepOutput::Argmax(&mut arg)).expect("execute argmax");
        for s in 0..n_seq {
            let t = tokens[s * n_tok + n_tok - 1] as usize;
            let x = &table[t * c..][..c];
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let want: Vec<f32> = (0..c)
                .map(|i| ((x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + bias[i] as f64) as f32)
                .collect();
            let row = &got[s * c..][..c];
            let (d, i) = max_abs_diff(row, &want);
            assert!(d < 2e-5, "{label}: sequence {s} channel {i}: diff {d}");
            let best = (0..c).fold(0, |bi, i| if row[i] > row[bi] { i } else { bi });
            assert_eq!(arg[s] as usize, best, "{label}: argmax of sequence {s}");
        }
    }
}

#[test]
fn token_shift_uses_and_updates_the_slot_registers() {
    let seed = seed();
    let (vocab, c, n_seq, n_tok, extra) = (7usize, 40usize, 2usize, 3usize, 24usize);
    // One layer, state [ffn_x (C), att_x (C), S-ish padding]; no WKV so any tail length works.
    let state_len = 2 * c + extra;
    for (label, mut b) in all_backends() {
        let mut rng = Rng::new(seed);
        let table = rng.vec(vocab * c, -1.0, 1.0);
        let mixes: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(c, 0.0, 1.0)).collect();
        let mut weights = vec![("emb.weight".to_string(), f32_tensor(vec![vocab, c], &table))];
        for (i, m) in mixes.iter().enumerate() {
            weights.push((format!("mix{i}"), f32_tensor(vec![c], m)));
        }
        upload_all(&mut b, &weights);
        b.alloc_states(3, state_len).expect("states");
        let init: Vec<Vec<f32>> = (0..3).map(|_| rng.vec(state_len, -1.0, 1.0)).collect();
        for (s, v) in init.iter().enumerate() {
            b.write_state(s, v).expect("write state");
        }
        for (kind, reg) in [(ShiftKind::Att, c), (ShiftKind::Ffn, 0)] {
            let ops = vec![
                Op::Embed { table: 0, out: 0 },
                Op::TokenShift { x: 0, layer: 0, kind, mixes: vec![(1, 1), (2, 2), (3, 3)] },
            ];
            let bufs = vec![buf("x", c, false), buf("o1", c, false), buf("o2", c, false), buf("o3", c, false)];
            let slots = [2usize, 0];
            let mut regs: Vec<Vec<f32>> = Vec::new();
            for s in 0..3 {
                let mut st = vec![0f32; state_len];
                b.read_state(s, &mut st).expect("read state");
                regs.push(st);
            }
            // Two steps: the second must start from the registers the first left.
            for step in 0..2 {
                let tokens: Vec<u32> = (0..n_seq * n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
                let which = step % 3 + 1;
                let p = plan(StepShape { n_seq, n_tok }, bufs.clone(), &weights, ops.clone(), which);
                let got = logits_of(&mut b, &p, &tokens, &slots);
                for (q, &slot) in slots.iter().enumerate() {
                    let mut prev: Vec<f32> = regs[slot][reg..reg + c].to_vec();
                    for t in 0..n_tok {
                        let x = &table[tokens[q * n_tok + t] as usize * c..][..c];
                        for i in 0..c {
                            let want = x[i] + (prev[i] - x[i]) * mixes[which - 1][i];
                            let g = got[(q * n_tok + t) * c + i];
                            assert!((g - want).abs() < 1e-6, "{label} {kind:?}: step {step} seq {q} tok {t} ch {i}: {g} vs {want}");
                        }
                        prev = x.to_vec();
                    }
                    regs[slot][reg..reg + c].copy_from_slice(&prev);
                }
                for (s, want) in regs.iter().enumerate() {
                    let mut st = vec![0f32; state_len];
                    b.read_state(s, &mut st).expect("read state");
                    assert_eq!(&st, want, "{label} {kind:?}: state of slot {s} after step {step}");
                }
            }
        }
    }
}
