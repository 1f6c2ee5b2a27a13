//! CUDA backend against an f64 reference of the backend contract (tests/common). Skips loudly
//! without a GPU; fails instead when RWKV_REQUIRE_GPU=1.

mod common;

use common::*;
use rwkv_core::backend::{Act, Backend, BufferDecl, MatJob, Op, Plan, StepOutput, StepShape};
use rwkv_core::model::v7::PlanBuilder;
use rwkv_core::model::LoraRanks;
use rwkv_core::{DType, ModelDesc, RwkvVersion};
use rwkv_cuda::MMA_MIN_ROWS;

#[test]
fn probe_lists_devices_or_says_why_not() {
    match rwkv_cuda::probe() {
        Ok(devs) => {
            assert!(!devs.is_empty());
            assert!(devs
                .iter()
                .all(|d| d.backend == "cuda" && !d.device.is_empty()));
        }
        Err(why) => {
            assert!(!why.is_empty());
            eprintln!("probe: {why}");
        }
    }
}

/// One plan: Embed (f32 table) -> x; MatMul { y = act(W x + b), y2 = W2 x (+= into itself) }.
#[allow(clippy::too_many_arguments)]
fn matmul_case(
    rng: &mut Rng,
    dtype: DType,
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    act: Act,
    bias: bool,
    tol: f64,
) {
    let Some(mut be) = gpu_or_skip() else { return };
    let vocab = 37;
    let table = random_tensor(rng, DType::F32, vocab, in_dim, 1.0);
    let w = random_tensor(rng, dtype, out_dim, in_dim, 1.0 / (in_dim as f32).sqrt());
    let b = random_tensor(rng, DType::F32, 1, out_dim, 0.3);
    let w2 = random_tensor(rng, DType::F32, 48, in_dim, 0.1);
    let tensors = [table, w, b, w2];
    for (i, t) in tensors.iter().enumerate() {
        be.upload_weight(i, &format!("w{i}"), t).unwrap();
    }
    be.alloc_states(1, 8).unwrap();
    let buffers = vec![
        BufferDecl {
            name: "x".into(),
            width: in_dim,
            last_only: false,
        },
        BufferDecl {
            name: "y".into(),
            width: out_dim,
            last_only: false,
        },
        BufferDecl {
            name: "y2".into(),
            width: 48,
            last_only: false,
        },
    ];
    let ops = vec![
        Op::Embed { table: 0, out: 0 },
        Op::MatMul {
            jobs: vec![
                MatJob {
                    weight: 1,
                    x: 0,
                    out: 1,
                    bias: bias.then_some(2),
                    act,
                    accumulate: false,
                },
                MatJob {
                    weight: 3,
                    x: 0,
                    out: 2,
                    bias: None,
                    act: Act::None,
                    accumulate: true,
                },
            ],
        },
    ];
    let plan = Plan {
        shape: StepShape {
            n_seq: 1,
            n_tok: rows,
        },
        buffers,
        weights: (0..4).map(|i| format!("w{i}")).collect(),
        ops,
        logits: 1,
    };
    let pid = be.compile(&plan).unwrap();
    let tokens: Vec<u32> = (0..rows).map(|_| rng.below(vocab as u64) as u32).collect();
    let mut got = vec![f32::NAN; rows * out_dim];
    be.execute(pid, &tokens, &[0], StepOutput::Logits(&mut got))
        .unwrap();
    let tab = dequant(&tensors[0]);
    let wd = dequant(&tensors[1]);
    let bd = dequant(&tensors[2]);
    let mut want = vec![0f64; rows * out_dim];
    for (r, &t) in tokens.iter().enumerate() {
        let x = &tab[t as usize * in_dim..(t as usize + 1) * in_dim];
        for o in 0..out_dim {
            let s: f64 = (0..in_dim).map(|k| wd[o * in_dim + k] * x[k]).sum::<f64>()
                + if bias { bd[o] } else { 0.0 };
            want[r * out_dim + o] = act64(act, s);
        }
    }
    let e = rel_err(&got, &want);
    eprintln!("matmul {dtype} rows {rows} {in_dim}->{out_dim} {act:?}: rel err {e:.2e}");
    assert!(
        e < tol,
        "{dtype} rows {rows} {in_dim}->{out_dim}: rel err {e} >= {tol}"
    );
}

/// Batch-1 Q4_K with int8 activations (per 16 values, scale amax/127): rounding noise of
/// step/sqrt(12) = 0.0023 on uniform [-1, 1) values of rms 0.58, i.e. ~4e-3 relative per product
/// (measured on the H100: 3.4e-3; the f32 path 1.2e-7).
const Q8_MATMUL_TOL: f64 = 1e-2;
/// The same through a whole model (decode logits and the states it leaves; measured 1.5e-2).
const Q8_MODEL_TOL: f64 = 5e-2;

#[test]
fn matmul_matches_reference_for_every_encoding_and_row_count() {
    let mut rng = Rng(0x5eed_0001);
    // f32 arithmetic on the SIMT path (< MMA_MIN_ROWS rows); f16 operands with f32 accumulation
    // on the tensor-core path: relative error ~ 2^-11 per product, averaged down over the sum.
    for dtype in [DType::Q4K, DType::Q6K, DType::Q8_0, DType::F16, DType::F32] {
        for rows in [1, 2, 3, 5, 8, 13, 16, 70] {
            let tol = if rows >= MMA_MIN_ROWS {
                3e-3
            } else if rows == 1 && dtype == DType::Q4K && q8x() {
                Q8_MATMUL_TOL
            } else {
                2e-5
            };
            matmul_case(&mut rng, dtype, rows, 512, 200, Act::None, false, tol);
        }
        matmul_case(&mut rng, dtype, 4, 256, 64, Act::Tanh, true, 2e-5);
        matmul_case(&mut rng, dtype, 33, 256, 130, Act::Sigmoid, true, 3e-3);
    }
    // Widths that are no multiple of 32 / 64 (generic path), rank-like widths, every activation.
    for (rows, in_dim) in [(1, 40), (20, 40), (1, 96), (40, 96), (3, 480)] {
        for act in [Act::None, Act::ReluSq, Act::Decay] {
            let tol = if rows >= MMA_MIN_ROWS && in_dim % 32 == 0 {
                3e-3
            } else {
                2e-5
            };
            matmul_case(&mut rng, DType::F16, rows, in_dim, 72, act, true, tol);
            matmul_case(&mut rng, DType::F32, rows, in_dim, 72, act, true, tol);
        }
    }
}

/// The channel mix at batch 1: h = relu(W1 x)², then W2 h (Q4_K) added into x or written to y.
/// W2 takes the zero-skipping column kernel (sparse.cu) unless RWKV_CUDA_SPARSE=0; the tests
/// at the end rerun it with RWKV_CUDA_Q8X=0 (its f32 variant) and RWKV_CUDA_SPARSE=0. Rows
/// 32..64 of W1 are zero, so a whole 32-column group of h is zero (skipped entirely); about
/// half of the rest are zero through the relu.
fn channel_mix_case(rng: &mut Rng, c: usize, f: usize, accumulate: bool) {
    let Some(mut be) = gpu_or_skip() else { return };
    let vocab = 23;
    let table = random_tensor(rng, DType::F32, vocab, c, 1.0);
    let mut w1 = random_tensor(rng, DType::F32, f, c, 1.0 / (c as f32).sqrt());
    let mut w1b = w1.data.as_slice().to_vec();
    w1b[32 * c * 4..64 * c * 4].fill(0);
    w1.data = rwkv_core::model::TensorBytes::owned(w1b);
    let w2 = random_tensor(rng, DType::Q4K, c, f, 1.0 / (f as f32).sqrt());
    let tensors = [table, w1, w2];
    for (i, t) in tensors.iter().enumerate() {
        be.upload_weight(i, &format!("w{i}"), t).unwrap();
    }
    be.alloc_states(1, 8).unwrap();
    let decl = |name: &str, width| BufferDecl {
        name: name.into(),
        width,
        last_only: false,
    };
    let out = if accumulate { 0 } else { 2 };
    let job = |weight, x, out, act, accumulate| MatJob {
        weight,
        x,
        out,
        bias: None,
        act,
        accumulate,
    };
    let plan = Plan {
        shape: StepShape { n_seq: 1, n_tok: 1 },
        buffers: vec![decl("x", c), decl("h", f), decl("y", c)],
        weights: (0..3).map(|i| format!("w{i}")).collect(),
        ops: vec![
            Op::Embed { table: 0, out: 0 },
            Op::MatMul {
                jobs: vec![job(1, 0, 1, Act::ReluSq, false)],
            },
            Op::MatMul {
                jobs: vec![job(2, 1, out, Act::None, accumulate)],
            },
        ],
        logits: out,
    };
    let pid = be.compile(&plan).unwrap();
    let [tab, w1d, w2d] = [0, 1, 2].map(|i| dequant(&tensors[i]));
    for _ in 0..3 {
        let t = rng.below(vocab as u64) as usize;
        let mut got = vec![f32::NAN; c];
        be.execute(pid, &[t as u32], &[0], StepOutput::Logits(&mut got))
            .unwrap();
        let x = &tab[t * c..(t + 1) * c];
        let h: Vec<f64> = (0..f)
            .map(|o| act64(Act::ReluSq, (0..c).map(|k| w1d[o * c + k] * x[k]).sum()))
            .collect();
        let zeros = h.iter().filter(|v| **v == 0.0).count();
        assert!(zeros >= 32 && zeros < f, "{zeros} zeros of {f}");
        let want: Vec<f64> = (0..c)
            .map(|o| {
                (0..f).map(|k| w2d[o * f + k] * h[k]).sum::<f64>()
                    + if accumulate { x[o] } else { 0.0 }
            })
            .collect();
        let e = rel_err(&got, &want);
        eprintln!("channel mix {c}x{f} accumulate {accumulate}: {zeros} zeros, rel err {e:.2e}");
        // u8 inputs per 32 (scale max/255) like the dense int8 path, else f32 throughout.
        let tol = if q8x() { Q8_MATMUL_TOL } else { 2e-5 };
        assert!(e < tol, "channel mix {c}x{f}: rel err {e}");
    }
}

#[test]
fn batch1_channel_mix_matches_reference() {
    let mut rng = Rng(0x5eed_0002);
    for (c, f, acc) in [
        (256, 1024, true),
        (256, 1024, false),
        (96, 512, true),
        (1024, 4096, true),
    ] {
        channel_mix_case(&mut rng, c, f, acc);
    }
}

fn tiny_desc(c: usize, head: usize) -> ModelDesc {
    ModelDesc {
        version: RwkvVersion::V7,
        n_layer: 3,
        n_embd: c,
        head_size: head,
        vocab_size: 300,
        ffn_size: 4 * c,
        lora: LoraRanks {
            w: 32,
            a: 32,
            v: 24,
            g: 64,
        },
    }
}

fn upload_all(
    be: &mut dyn Backend,
    pb: &PlanBuilder,
    model: &std::collections::BTreeMap<String, rwkv_core::model::Tensor>,
) {
    for (i, n) in pb.weights().iter().enumerate() {
        be.upload_weight(i, n, &model[n]).unwrap();
    }
}

/// Whole model, several plans sharing states, against the f64 interpreter.
fn model_case(seed: u64, dtype: DType, lora: DType, c: usize, head: usize) {
    let Some(mut be) = gpu_or_skip() else { return };
    let mut rng = Rng(seed);
    let desc = tiny_desc(c, head);
    let model = random_model(&mut rng, &desc, dtype, lora);
    let pb = PlanBuilder::new(&desc);
    upload_all(&mut be, &pb, &model);
    let n_slots = 6;
    be.alloc_states(n_slots, desc.state_len()).unwrap();
    let decode = pb.build(StepShape { n_seq: 1, n_tok: 1 }, false);
    let prefill = pb.build(
        StepShape {
            n_seq: 1,
            n_tok: 20,
        },
        true,
    );
    let batch = pb.build(StepShape { n_seq: 3, n_tok: 1 }, false);
    let chunk = pb.build(StepShape { n_seq: 2, n_tok: 7 }, false);
    let mut reference = RefRunner::new(&decode, &model, n_slots, desc.state_len(), head);
    let v = desc.vocab_size;
    let mut worst = [0f64; 4];
    let mut agree = (0usize, 0usize);
    let mut check = |be: &mut rwkv_cuda::CudaBackend,
                     reference: &mut RefRunner,
                     plan: &Plan,
                     which: usize,
                     slots: &[usize],
                     rng: &mut Rng| {
        let pid = be.compile(plan).unwrap();
        let tokens: Vec<u32> = (0..plan.shape.rows())
            .map(|_| rng.below(v as u64) as u32)
            .collect();
        let n = plan.rows_of(plan.logits) * v;
        let mut got = vec![f32::NAN; n];
        be.execute(pid, &tokens, slots, StepOutput::Logits(&mut got))
            .unwrap();
        let want = reference.run(plan, &tokens, slots);
        let e = rel_err(&got, &want);
        worst[which] = worst[which].max(e);
        // Top-1 agreement with the reference, row by row.
        for (g, w) in got.chunks(v).zip(want.chunks(v)) {
            let ga = g
                .iter()
                .enumerate()
                .fold(0, |b, (i, x)| if *x > g[b] { i } else { b });
            agree.0 += (ga == argmax64(w)) as usize;
            agree.1 += 1;
        }
    };
    // Prefill 20 tokens into slot 0, then decode 5 steps on it.
    check(&mut be, &mut reference, &prefill, 0, &[0], &mut rng);
    for _ in 0..5 {
        check(&mut be, &mut reference, &decode, 1, &[0], &mut rng);
    }
    // Batched decode over slots 2, 0, 5, then chunks of 7 on slots 4 and 2.
    for _ in 0..3 {
        check(&mut be, &mut reference, &batch, 2, &[2, 0, 5], &mut rng);
    }
    for _ in 0..2 {
        check(&mut be, &mut reference, &chunk, 3, &[4, 2], &mut rng);
    }
    // Int8 batch-1 activations (Q4_K) loosen decode and the states decode steps leave.
    let q8 = dtype == DType::Q4K && q8x();
    // Chunks of 2 x 7 rows take the tensor cores (f16 operands) and leave their f16 rounding in
    // the states: measured 1.2e-3 for f32 weights on the H100, so 5e-3 there; f32-only steps
    // would stay under 1e-3.
    let chunk_tol = if 2 * 7 >= MMA_MIN_ROWS { 5e-3 } else { 1e-3 };
    let (decode_tol, state_tol) = if q8 {
        (Q8_MODEL_TOL, Q8_MODEL_TOL)
    } else {
        (1e-3, chunk_tol)
    };
    // States equal the reference's.
    for slot in [0, 2, 4] {
        let mut st = vec![0f32; desc.state_len()];
        be.read_state(slot, &mut st).unwrap();
        let e = rel_err(&st, &reference.states[slot]);
        assert!(e < state_tol, "{dtype}: state of slot {slot} rel err {e}");
    }
    // write_state: copy slot 0 to slot 1; both then give the same logits for the same token.
    let mut st = vec![0f32; desc.state_len()];
    be.read_state(0, &mut st).unwrap();
    be.write_state(1, &st).unwrap();
    let pid = be.compile(&decode).unwrap();
    let mut a = vec![0f32; v];
    let mut b = vec![0f32; v];
    be.execute(pid, &[7], &[0], StepOutput::Logits(&mut a))
        .unwrap();
    be.execute(pid, &[7], &[1], StepOutput::Logits(&mut b))
        .unwrap();
    assert_eq!(a, b, "{dtype}: a copied state must give identical logits");
    // Argmax on the device matches the host argmax of the same logits.
    let mut am = [0u32; 1];
    be.write_state(1, &st).unwrap();
    be.execute(pid, &[7], &[1], StepOutput::Argmax(&mut am))
        .unwrap();
    let host = a
        .iter()
        .enumerate()
        .fold(0, |best, (i, x)| if *x > a[best] { i } else { best });
    assert_eq!(am[0] as usize, host);
    // Contract errors.
    assert!(
        be.execute(pid, &[v as u32], &[0], StepOutput::None)
            .is_err(),
        "token outside vocabulary"
    );
    assert!(
        be.execute(pid, &[1], &[n_slots], StepOutput::None).is_err(),
        "slot out of range"
    );
    let bp = be.compile(&batch).unwrap();
    assert!(
        be.execute(bp, &[1, 2, 3], &[0, 0, 1], StepOutput::None)
            .is_err(),
        "repeated slot"
    );
    eprintln!(
        "model {dtype}/{lora} C={c} N={head}: rel err prefill {:.2e} decode {:.2e} batch {:.2e} chunks {:.2e}, top-1 {}/{}",
        worst[0], worst[1], worst[2], worst[3], agree.0, agree.1
    );
    // Int8 activations may flip a near-tie of these random models' top-2 logits: one row of
    // the 38 may differ (the oracle test keeps >= 99 % over 420 rows).
    let misses_allowed = if q8 { 1 } else { 0 };
    assert!(
        agree.0 * 100 >= agree.1 * 99 || agree.0 + misses_allowed >= agree.1,
        "{dtype}: top-1 agreement {}/{}",
        agree.0,
        agree.1
    );
    // Decode and batched decode run in f32 (SIMT kernels): only summation order differs.
    // Prefill/chunks use f16 tensor-core operands for the big matrices when rows >= MMA_MIN_ROWS.
    assert!(
        worst[1] < decode_tol && worst[2] < 1e-3,
        "{dtype}: decode error {:?}",
        worst
    );
    assert!(
        worst[0] < 2e-2 && worst[3] < 2e-2,
        "{dtype}: prefill error {:?}",
        worst
    );
}

#[test]
fn whole_model_q4k_matches_reference() {
    model_case(11, DType::Q4K, DType::F16, 256, 64);
}

#[test]
fn whole_model_q6k_q8_matches_reference() {
    model_case(12, DType::Q6K, DType::F32, 256, 64);
    model_case(13, DType::Q8_0, DType::F16, 256, 32);
}

#[test]
fn whole_model_f16_f32_matches_reference() {
    model_case(14, DType::F16, DType::F16, 128, 64);
    model_case(15, DType::F32, DType::F32, 64, 16);
}

// The paths behind the backend's switches, checked like the default ones (common::rerun_with).

#[test]
fn batch1_channel_mix_matches_reference_with_f32_activations() {
    common::rerun_with(
        "batch1_channel_mix_matches_reference",
        &[("RWKV_CUDA_Q8X", "0")],
    );
}

#[test]
fn batch1_channel_mix_matches_reference_without_zero_skipping() {
    common::rerun_with(
        "batch1_channel_mix_matches_reference",
        &[("RWKV_CUDA_SPARSE", "0")],
    );
}

#[test]
fn whole_model_q4k_matches_reference_with_f32_batch1_activations() {
    common::rerun_with(
        "whole_model_q4k_matches_reference",
        &[("RWKV_CUDA_Q8X", "0")],
    );
}

#[test]
fn whole_model_q4k_matches_reference_without_zero_skipping() {
    common::rerun_with(
        "whole_model_q4k_matches_reference",
        &[("RWKV_CUDA_SPARSE", "0")],
    );
}
