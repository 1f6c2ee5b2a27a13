//! Every op of the backend contract against a plain reference written here, on fresh random
//! inputs, with and without the adapter's optional features, and with a small binding cap that
//! forces matrices and tables to be split into several buffers.

mod common;

use common::*;
use rwkv_core::backend::{
    Act, Backend, BufferDecl, MatJob, Op, Plan, ShiftKind, StateLayout, StatePart, StepOutput,
    StepShape, Wkv7Args,
};
use rwkv_core::model::Tensor;
use rwkv_core::DType;
use rwkv_wgpu::{MatVecChoice, WgpuBackend, WgpuOptions};

const QUANT_DTYPES: [DType; 6] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4K,
    DType::Q6K,
];

fn buf(name: &str, width: usize, last_only: bool) -> BufferDecl {
    BufferDecl {
        name: name.into(),
        width,
        last_only,
    }
}

fn upload_all(b: &mut WgpuBackend, weights: &[(String, Tensor)]) {
    for (i, (name, t)) in weights.iter().enumerate() {
        b.upload_weight(i, name, t).expect("upload");
    }
}

fn plan(
    shape: StepShape,
    buffers: Vec<BufferDecl>,
    weights: &[(String, Tensor)],
    ops: Vec<Op>,
    logits: usize,
) -> Plan {
    let state = state_of(&ops, &buffers);
    Plan {
        shape,
        buffers,
        weights: weights.iter().map(|(n, _)| n.clone()).collect(),
        ops,
        state,
        logits,
    }
}

/// The state layout the ops of a test plan touch: the two shift registers per layer, and for a
/// Wkv7 RWKV-7's `[ffn_x, att_x, S]` with head size 0, which the WKV test sets (a plan that
/// forgets it fails its check).
fn state_of(ops: &[Op], buffers: &[BufferDecl]) -> StateLayout {
    let mut layout = StateLayout::default();
    for op in ops {
        let (layer, width) = match op {
            Op::TokenShift { x, layer, .. } => (*layer, buffers[*x].width),
            Op::Wkv7(a) => (a.layer, buffers[a.r].width),
            _ => continue,
        };
        layout.n_layer = layout.n_layer.max(layer + 1);
        layout.width = width;
    }
    if layout.n_layer == 0 {
        return layout;
    }
    if ops.iter().any(|op| matches!(op, Op::Wkv7(_))) {
        StateLayout::matrix_state(layout.n_layer, layout.width, 0)
    } else {
        layout.head_size = 1;
        layout.parts = vec![StatePart::FfnShift, StatePart::AttShift];
        layout
    }
}

fn logits_of(b: &mut WgpuBackend, p: &Plan, tokens: &[u32], slots: &[usize]) -> Vec<f32> {
    let id = b.compile(p).expect("compile");
    let n = p.rows_of(p.logits) * p.buffers[p.logits].width;
    let mut out = vec![f32::NAN; n];
    b.execute(id, tokens, slots, StepOutput::Logits(&mut out))
        .expect("execute");
    out
}

/// Options of the f32 kernels' tests: cooperative matrices (f16 operands, tested on their own
/// by `matmul_coop_*`) off.
fn f32_options() -> WgpuOptions {
    WgpuOptions {
        allow_coop: false,
        ..Default::default()
    }
}

/// Backends with their optional features (but not cooperative matrices), without them, and both
/// with a 16 KiB binding cap.
fn all_backends() -> Vec<(String, WgpuBackend)> {
    let mut v = backends(f32_options());
    if v.is_empty() {
        return v;
    }
    for (label, b) in backends(WgpuOptions {
        max_binding_bytes: Some(16 << 10),
        ..f32_options()
    }) {
        v.push((format!("{label}, 16 KiB bindings"), b));
    }
    v
}

#[test]
fn matmul_every_dtype_with_bias_act_and_accumulate() {
    // 5 rows: the per-row kernels (a tile of 4 rows and a partial one).
    // 256 columns: 16 invocations per row, 4 rows per workgroup (150 rows leave the last
    // workgroup half empty); 512: 32 per row; 1280: 80 units, 64 invocations that loop (its
    // activations do not fit the 16 KiB cap).
    matmul_case(all_backends(), 5, |capped| {
        if capped {
            vec![256, 512]
        } else {
            vec![256, 512, 1280]
        }
    });
}

#[test]
fn matmul_tiled_every_dtype_with_bias_act_and_accumulate() {
    // 19 rows: tiles of 16 activation rows (two, the second partial); 70 rows: tiles of 64; 8
    // rows under the 16 KiB cap (the activations of more do not fit): the weights are split
    // into up to 10 buffers whose row counts are not multiples of the 64-column tile.
    let uncapped: Vec<_> = all_backends()
        .into_iter()
        .filter(|(l, _)| !l.contains("16 KiB"))
        .collect();
    let capped: Vec<_> = all_backends()
        .into_iter()
        .filter(|(l, _)| l.contains("16 KiB"))
        .collect();
    for n_tok in [19, 70] {
        matmul_case(
            uncapped
                .iter()
                .map(|(l, _)| (l.clone(), new_like(l)))
                .collect(),
            n_tok,
            |_| vec![256, 512, 1280],
        );
    }
    matmul_case(capped, 8, |_| vec![256]);
}

/// A backend like the one `label` names (features or plain, 16 KiB bindings or not).
fn new_like(label: &str) -> WgpuBackend {
    let mut options = f32_options();
    if label.contains("16 KiB") {
        options.max_binding_bytes = Some(16 << 10);
    }
    if label.starts_with("plain") {
        options.allow_f16 = false;
        options.allow_subgroups = false;
    }
    WgpuBackend::new(options).expect("backend")
}

/// Two products (bias + sigmoid, then accumulate) of `n_tok` rows for every dtype against f64
/// over the tests' own dequantizer; `col_sizes(capped)` gives the long row lengths, plus a short
/// one per float dtype (LoRA-like, and 40 columns exercise the tail of a 16-value unit).
fn matmul_case(
    backends: Vec<(String, WgpuBackend)>,
    n_tok: usize,
    col_sizes: impl Fn(bool) -> Vec<usize>,
) {
    matmul_case_n(backends, n_tok, 150, col_sizes)
}

/// [`matmul_case`] with `n_out` output columns. On a backend using cooperative matrices (rows
/// from 16) the products have f16 operands; the tolerance is then (see `coop_tolerance`)
/// 2e-3 of the sum of |products| instead of 2e-6.
fn matmul_case_n(
    backends: Vec<(String, WgpuBackend)>,
    n_tok: usize,
    n_out: usize,
    col_sizes: impl Fn(bool) -> Vec<usize>,
) {
    let seed = seed();
    let vocab = 11usize;
    for (label, mut b) in backends {
        let capped = label.contains("16 KiB");
        for (di, dtype) in QUANT_DTYPES.into_iter().enumerate() {
            // Float rows of 42 columns (not a multiple of 4) keep the per-row kernels.
            let short: &[usize] = match dtype {
                DType::Q8_0 => &[96],
                DType::Q4K | DType::Q6K => &[],
                _ => &[40, 42],
            };
            for cols in col_sizes(capped).into_iter().chain(short.iter().copied()) {
                let coop = b.uses_coop() && n_tok >= 16 && cols % 4 == 0;
                // From 32 rows: f16 scratch operands and gemm_f16.wgsl.
                let gemm = coop && n_tok >= 32;
                let mut rng =
                    Rng::new(seed ^ (di as u64 * 7919) ^ cols as u64 ^ (n_tok as u64) << 20);
                let table = rng.vec(vocab * cols, -1.0, 1.0);
                let w_bytes = random_blocks(&mut rng, dtype, n_out * cols);
                let w2_bytes = random_blocks(&mut rng, dtype, n_out * cols);
                let bias = rng.vec(n_out, -0.5, 0.5);
                let weights = vec![
                    (
                        "emb.weight".to_string(),
                        f32_tensor(vec![vocab, cols], &table),
                    ),
                    (
                        "w".to_string(),
                        tensor(dtype, vec![n_out, cols], w_bytes.clone()),
                    ),
                    (
                        "w2".to_string(),
                        tensor(dtype, vec![n_out, cols], w2_bytes.clone()),
                    ),
                    ("bias".to_string(), f32_tensor(vec![n_out], &bias)),
                ];
                upload_all(&mut b, &weights);
                let ops = vec![
                    Op::Embed { table: 0, out: 0 },
                    Op::MatMul {
                        jobs: vec![MatJob {
                            weight: 1,
                            x: 0,
                            out: 1,
                            bias: Some(3),
                            act: Act::Sigmoid,
                            accumulate: false,
                        }],
                    },
                    Op::MatMul {
                        jobs: vec![MatJob {
                            weight: 2,
                            x: 0,
                            out: 1,
                            bias: None,
                            act: Act::None,
                            accumulate: true,
                        }],
                    },
                ];
                let shape = StepShape { n_seq: 1, n_tok };
                let p = plan(
                    shape,
                    vec![buf("x", cols, false), buf("out", n_out, false)],
                    &weights,
                    ops,
                    1,
                );
                b.alloc_states(1, 4).expect("states");
                let tokens: Vec<u32> = (0..n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
                let got = logits_of(&mut b, &p, &tokens, &[0]);
                // A device that rejected the coop module runs the tiled kernel instead (under
                // the coop name): that must not pass as a test of the coop kernel.
                if coop {
                    let fell_back: Vec<_> = b
                        .kernel_fallbacks()
                        .iter()
                        .filter(|f| f.starts_with("MatMulCoop") || f.starts_with("GemmF16"))
                        .collect();
                    assert!(fell_back.is_empty(), "{label}: {fell_back:?}");
                }
                // The kernel that ran: per-row (narrow for short rows) or tiled by row count.
                let id = b.compile(&p).expect("compile");
                let sg_matvec = b.q4k_matvec().starts_with("sg");
                if let Ok(times) = b.profile_step(id, &tokens, &[0]) {
                    let float = matches!(dtype, DType::F32 | DType::F16 | DType::BF16);
                    let want_kernel = match (n_tok >= 8, cols <= 128) {
                        _ if gemm => "ToF16 + DequantF16(",
                        _ if coop => "MatMulCoop(",
                        (true, _) => "MatMulTiled(",
                        (false, _) if dtype == DType::Q4K && sg_matvec => "MatVecQ4KSg {",
                        (false, _) if dtype == DType::Q4K => "MatVecQ4K(",
                        (false, _) if float && cols % 4 == 0 => "MatVec(",
                        (false, true) => "MatMulNarrow(",
                        (false, false) => "MatMul(",
                    };
                    println!(
                        "{label} {dtype} {cols} columns: {} x{}",
                        times[1].kernel, times[1].dispatches
                    );
                    // The chunks of a split matrix are independent products: up to 4 per
                    // dispatch in the per-row kernels.
                    if n_tok < 8 && b.weight_buffers(1) > 1 {
                        assert_eq!(
                            times[1].dispatches,
                            b.weight_buffers(1).div_ceil(4),
                            "{label} {dtype} {cols} columns: chunks not merged"
                        );
                    }
                    if gemm {
                        assert!(
                            times[1].kernel.contains("GemmF16"),
                            "{label}: {}",
                            times[1].kernel
                        );
                    }
                    assert!(
                        times[1].kernel.starts_with(want_kernel),
                        "{label} {dtype} {cols} columns, {n_tok} rows: ran {}",
                        times[1].kernel
                    );
                }
                let w = dequant(dtype, &w_bytes);
                let w2 = dequant(dtype, &w2_bytes);
                let mut want = Vec::new();
                let mut tol = Vec::new();
                for &t in &tokens {
                    let x = &table[t as usize * cols..][..cols];
                    for o in 0..n_out {
                        let (mut s1, mut s2, mut mag, mut operands) = (0f64, 0f64, 0f64, 0f64);
                        for k in 0..cols {
                            s1 += w[o * cols + k] as f64 * x[k] as f64;
                            s2 += w2[o * cols + k] as f64 * x[k] as f64;
                            mag += (w[o * cols + k] as f64 * x[k] as f64).abs()
                                + (w2[o * cols + k] as f64 * x[k] as f64).abs();
                            operands += (w[o * cols + k] as f64).abs()
                                + (w2[o * cols + k] as f64).abs()
                                + 2.0 * (x[k] as f64).abs();
                        }
                        want.push(Act::Sigmoid.apply((s1 + bias[o] as f64) as f32) + s2 as f32);
                        tol.push(if coop {
                            coop_tolerance(cols, mag, operands)
                        } else {
                            2e-6 * mag as f32 + 1e-5
                        });
                    }
                }
                let (d, _) = max_abs_diff(&got, &want);
                let worst_share = (0..want.len())
                    .map(|i| (got[i] - want[i]).abs() / tol[i])
                    .fold(0f32, f32::max);
                println!(
                    "{label} {dtype} {cols} columns, {n_tok} rows: max abs diff {d:.3e}, \
                     at most {worst_share:.2} of the tolerance"
                );
                for i in 0..want.len() {
                    assert!(
                        (got[i] - want[i]).abs() <= tol[i],
                        "{label} {dtype} {cols} columns: value {i}: got {} want {} (tol {})",
                        got[i],
                        want[i],
                        tol[i]
                    );
                }
                if capped && cols >= 256 {
                    assert!(
                        b.weight_buffers(1) > 1,
                        "{label} {dtype}: the matrix was not split"
                    );
                }
                if capped && cols == 512 {
                    assert!(
                        b.weight_buffers(0) > 1,
                        "{label} {dtype}: the table was not split"
                    );
                }
            }
        }
    }
}

/// Error bound of a cooperative-matrix product (f16 operands, f32 accumulation) of `cols` terms
/// whose |products| sum to `mag` and |operands| to `operands`. Each operand is rounded to f16:
/// WGSL allows either neighbour, so a relative error up to 2^-10 each and 2·2^-10 + 2^-20 <
/// 1.96e-3 per product; f32 accumulation adds at most `cols`·2^-23 of `mag`; operands below
/// f16's normal range (6.1e-5) are rounded to multiples of 2^-24 instead, at most 2^-24 times the
/// other operand (below 10 in these tests, the largest Q4_K value): 6e-7 per unit of
/// `operands`. The activation (sigmoid, slope <= 1/4) does not grow the error.
fn coop_tolerance(cols: usize, mag: f64, operands: f64) -> f32 {
    ((1.96e-3 + cols as f64 * 1.2e-7) * mag + 6e-7 * operands + 1e-5) as f32
}

#[test]
fn matmul_coop_every_dtype_with_bias_act_and_accumulate() {
    // The tensor-core kernel (matmul_coop.wgsl) where the device has cooperative matrices:
    // 16 rows (one partial 64-row tile), 64 (one whole), 70 (a whole and a partial), 512 (8);
    // 150 and 480 output columns (neither a multiple of the 64-column tile); 256 and 512
    // columns, plus 40 (F32/F16/BF16: K not a multiple of 32, a zero-filled tail) and 96 (Q8_0).
    // Where the device has none, the same kernel with the cooperative operations emulated in
    // plain WGSL (everything else is the real kernel: tiles, decoding, f16 rounding, output).
    let probe = backends(WgpuOptions::default());
    let Some((label, b)) = probe.into_iter().next() else {
        return;
    };
    let options = if b.uses_coop() {
        WgpuOptions::default()
    } else if b.uses_f16() {
        rwkv_testing::note_missing(
            "webgpu-coop",
            &format!("{label}: testing the kernel with cooperative matrices emulated"),
        );
        WgpuOptions {
            emulate_coop: true,
            ..Default::default()
        }
    } else {
        rwkv_testing::skip_gpu(
            "webgpu-f16",
            &format!("{label} has neither cooperative matrices nor shader-f16"),
        );
        return;
    };
    // From 32 rows the products run on f16 scratch copies (gemm_f16.wgsl, tiles of 64 or 128;
    // 150 columns at 70 rows: few tiles, so K is split over the grid and summed after).
    for (n_tok, n_out) in [(16, 150), (64, 480), (70, 150), (512, 480)] {
        let fresh = WgpuBackend::new(options.clone()).expect("backend");
        let label = format!("{label}, coop emulated {}", options.emulate_coop);
        matmul_case_n(vec![(label, fresh)], n_tok, n_out, |_| vec![256, 512]);
    }
}

/// Backends running the subgroup Q4_K matrix-vector kernel (matvec_q4k_sg.wgsl) with
/// `rows_per_subgroup`, with the subgroup size its grid assumes (`None`: the device's own).
/// The device's subgroups when their size is fixed, else (min != max) the kernel forced with
/// the adapter's largest size; `extra` adds forced sizes other than the device's (its virtual
/// subgroup loop) and a device without subgroups (sums through workgroup memory).
fn subgroup_matvec_backends(rows_per_subgroup: u32, extra: bool) -> Vec<(String, WgpuBackend)> {
    let auto = WgpuOptions {
        matvec: MatVecChoice::Subgroup { rows_per_subgroup },
        ..f32_options()
    };
    let Some((label, b)) = backends(auto.clone()).into_iter().next() else {
        return Vec::new();
    };
    let forced = |size: u32, subgroups: bool| WgpuOptions {
        matvec: MatVecChoice::Forced {
            size,
            rows_per_subgroup,
        },
        allow_subgroups: subgroups,
        ..f32_options()
    };
    let mut out = Vec::new();
    if b.q4k_matvec().starts_with("sg") {
        out.push((format!("{label}, {}", b.q4k_matvec()), b));
    } else if b.uses_subgroups() {
        // Subgroups whose size is not fixed: the largest one the adapter reports.
        let info = b.info();
        let max = rwkv_wgpu::probe()
            .into_iter()
            .find(|a| a.name == info.device)
            .map_or(32, |a| a.subgroup_max_size)
            .clamp(4, 256)
            .next_power_of_two();
        println!("{label}: subgroup size not fixed, forcing the kernel with {max}");
        let b = WgpuBackend::new(forced(max, true)).expect("backend");
        out.push((format!("{label}, forced {}", b.q4k_matvec()), b));
    } else {
        rwkv_testing::note_missing(
            "webgpu-subgroups",
            &format!("{label}: the forced variants below use workgroup-memory sums"),
        );
    }
    if extra {
        let mut configs = vec![(32, false), (8, false)];
        if out.first().is_some_and(|(_, b)| b.uses_subgroups()) {
            configs.extend([(4, true), (64, true)]);
        }
        for (size, subgroups) in configs {
            let b = WgpuBackend::new(forced(size, subgroups)).expect("backend");
            out.push((format!("forced {}", b.q4k_matvec()), b));
        }
    }
    out
}

/// Q4_K products through the subgroup matrix-vector kernel at `n_tok` rows and `cols` columns,
/// as in a layer: one MatMul op of 3 jobs (150 rows, bias + sigmoid; 37 rows, no bias; 150 rows,
/// bias + relu²: one dispatch, asserted), then an op accumulating a 4th product (37 rows, bias +
/// tanh) into the 37-row output; 150 and 37 are not multiples of the workgroup's rows. Against
/// f64 over the tests' own dequantizer.
fn subgroup_matvec_case(
    label: &str,
    b: &mut WgpuBackend,
    rng: &mut Rng,
    n_tok: usize,
    cols: usize,
) {
    let vocab = 11usize;
    let outs = [150usize, 37, 150, 37];
    let acts = [Act::Sigmoid, Act::None, Act::ReluSq, Act::Tanh];
    let has_bias = [true, false, true, true];
    let table = rng.vec(vocab * cols, -1.0, 1.0);
    let mut weights = vec![(
        "emb.weight".to_string(),
        f32_tensor(vec![vocab, cols], &table),
    )];
    let mut mats = Vec::new();
    let mut biases = Vec::new();
    for (j, &n_out) in outs.iter().enumerate() {
        let bytes = random_blocks(rng, DType::Q4K, n_out * cols);
        mats.push(dequant(DType::Q4K, &bytes));
        weights.push((
            format!("w{j}"),
            tensor(DType::Q4K, vec![n_out, cols], bytes),
        ));
        let bias = rng.vec(n_out, -0.5, 0.5);
        weights.push((format!("b{j}"), f32_tensor(vec![n_out], &bias)));
        biases.push(bias);
    }
    upload_all(b, &weights);
    let job = |j: usize, out: usize, accumulate: bool| MatJob {
        weight: 1 + 2 * j,
        x: 0,
        out,
        bias: has_bias[j].then_some(2 + 2 * j),
        act: acts[j],
        accumulate,
    };
    let ops = vec![
        Op::Embed { table: 0, out: 0 },
        Op::MatMul {
            jobs: vec![job(0, 1, false), job(1, 2, false), job(2, 3, false)],
        },
        Op::MatMul {
            jobs: vec![job(3, 2, true)],
        },
    ];
    let buffers = vec![
        buf("x", cols, false),
        buf("out0", 150, false),
        buf("out1", 37, false),
        buf("out2", 150, false),
    ];
    b.alloc_states(1, 4).expect("states");
    let shape = StepShape { n_seq: 1, n_tok };
    let tokens: Vec<u32> = (0..n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
    // Pre-activation sum and its error bound (2e-6 of Σ|w·x|, as the other matmul tests).
    let product = |j: usize, t: u32, o: usize| -> (f64, f64) {
        let x = &table[t as usize * cols..][..cols];
        let w = &mats[j][o * cols..][..cols];
        let (mut sum, mut mag) = (0f64, 0f64);
        for (&wv, &xv) in w.iter().zip(x) {
            sum += wv as f64 * xv as f64;
            mag += (wv as f64 * xv as f64).abs();
        }
        if has_bias[j] {
            sum += biases[j][o] as f64;
        }
        (sum, 2e-6 * mag + 1e-5)
    };
    let mut worst = 0f64;
    for (out_buf, n_out) in [(1usize, 150usize), (2, 37), (3, 150)] {
        let p = plan(shape, buffers.clone(), &weights, ops.clone(), out_buf);
        let got = logits_of(b, &p, &tokens, &[0]);
        for (ti, &t) in tokens.iter().enumerate() {
            for o in 0..n_out {
                let (want, tol) = match out_buf {
                    1 => {
                        let (s, e) = product(0, t, o);
                        (Act::Sigmoid.apply(s as f32) as f64, e)
                    }
                    2 => {
                        let (s1, e1) = product(1, t, o);
                        let (s3, e3) = product(3, t, o);
                        (s1 + (s3 as f32).tanh() as f64, e1 + e3)
                    }
                    _ => {
                        // relu²: an error e in s becomes at most 2|s|·e + e², plus rounding.
                        let (s, e) = product(2, t, o);
                        let r = s.max(0.0);
                        (r * r, 2.0 * s.abs() * e + e * e + 2e-7 * r * r)
                    }
                };
                let g = got[ti * n_out + o] as f64;
                worst = worst.max((g - want).abs() / tol);
                assert!(
                    (g - want).abs() <= tol,
                    "{label}: {cols} columns, {n_tok} rows, output {out_buf} row {ti} value {o}: \
                     got {g} want {want} (tolerance {tol:.3e})"
                );
            }
        }
        if out_buf == 1 {
            let id = b.compile(&p).expect("compile");
            if let Ok(times) = b.profile_step(id, &tokens, &[0]) {
                for (op, jobs) in [(1, 3), (2, 1)] {
                    let k = &times[op];
                    assert!(
                        k.kernel.starts_with("MatVecQ4KSg {")
                            && k.kernel.ends_with(&format!(", jobs: {jobs} }}"))
                            && k.dispatches == 1,
                        "{label}: op {op} ran {} x{}",
                        k.kernel,
                        k.dispatches
                    );
                }
            }
        }
    }
    println!("{label}: {cols} columns, {n_tok} rows: at most {worst:.3} of the tolerance");
}

#[test]
fn matvec_q4k_subgroup_kernel_every_rows_per_subgroup() {
    // 1, 3 and 7 activation rows; rows of 1, 2 and 16 blocks (4096 columns: 4 pieces per lane
    // at subgroups of 32, 16 at 8); 1, 2 and 4 rows per subgroup.
    let seed = seed();
    for rps in [1u32, 2, 4] {
        for (label, mut b) in subgroup_matvec_backends(rps, false) {
            assert!(
                b.q4k_matvec().contains(&format!("{rps} rows per subgroup")),
                "{label}"
            );
            for cols in [256usize, 512, 4096] {
                for n_tok in [1usize, 3, 7] {
                    let mut rng = Rng::new(seed ^ (rps as u64) << 40 ^ (cols * 8 + n_tok) as u64);
                    subgroup_matvec_case(&label, &mut b, &mut rng, n_tok, cols);
                }
            }
        }
    }
}

#[test]
fn matvec_q4k_subgroup_kernel_other_sizes_and_without_subgroups() {
    // The grid laid out for subgroup sizes the device does not have (a subgroup then computes
    // several or no "virtual" subgroups), and sums through workgroup memory without subgroups
    // (the variant a device that rejects the subgroup module falls back to).
    let seed = seed();
    for rps in [1u32, 2, 4] {
        let backends: Vec<_> = subgroup_matvec_backends(rps, true)
            .into_iter()
            .filter(|(l, _)| l.starts_with("forced"))
            .collect();
        for (label, mut b) in backends {
            for (cols, n_tok) in [(256usize, 7usize), (4096, 1), (512, 3)] {
                let mut rng = Rng::new(seed ^ (rps as u64) << 40 ^ (cols * 8 + n_tok) as u64);
                subgroup_matvec_case(&label, &mut b, &mut rng, n_tok, cols);
            }
        }
    }
}

#[test]
fn lora_up_projections_share_one_matvec_dispatch() {
    // The four LoRA up-projections of an RWKV-7 layer ([C, rank], ranks 64, 96, 32 and 480
    // here; C = 204 is not a multiple of 4, so output stores straddle vec4 words) in one MatMul
    // op: the float matrix-vector kernel with 8..64 invocations per row, one dispatch for all
    // four (asserted), each with its own bias / activation, at 1 and 6 activation rows (two
    // tiles of 4), against f64.
    let seed = seed();
    let (vocab, c) = (13usize, 204usize);
    let ranks = [64usize, 96, 32, 480];
    let acts = [Act::Decay, Act::Sigmoid, Act::None, Act::Tanh];
    for (label, mut b) in all_backends() {
        for (di, dtype) in [DType::F16, DType::F32, DType::BF16]
            .into_iter()
            .enumerate()
        {
            let mut rng = Rng::new(seed ^ 0x10_7a ^ (di as u64) << 8);
            let mut weights = Vec::new();
            let mut tables = Vec::new();
            let mut mats = Vec::new();
            let mut biases = Vec::new();
            for (j, &rank) in ranks.iter().enumerate() {
                let table = rng.vec(vocab * rank, -1.0, 1.0);
                let w_bytes = random_blocks(&mut rng, dtype, c * rank);
                let bias = rng.vec(c, -0.5, 0.5);
                weights.push((format!("emb{j}"), f32_tensor(vec![vocab, rank], &table)));
                weights.push((
                    format!("up{j}"),
                    tensor(dtype, vec![c, rank], w_bytes.clone()),
                ));
                weights.push((format!("bias{j}"), f32_tensor(vec![c], &bias)));
                tables.push(table);
                mats.push(dequant(dtype, &w_bytes));
                biases.push(bias);
            }
            upload_all(&mut b, &weights);
            let mut buffers: Vec<BufferDecl> = ranks
                .iter()
                .enumerate()
                .map(|(j, &r)| buf(&format!("l{j}"), r, false))
                .collect();
            buffers.extend((0..4).map(|j| buf(&format!("out{j}"), c, false)));
            let mut ops: Vec<Op> = (0..4)
                .map(|j| Op::Embed {
                    table: 3 * j,
                    out: j,
                })
                .collect();
            ops.push(Op::MatMul {
                jobs: (0..4)
                    .map(|j| MatJob {
                        weight: 3 * j + 1,
                        x: j,
                        out: 4 + j,
                        bias: Some(3 * j + 2),
                        act: acts[j],
                        accumulate: false,
                    })
                    .collect(),
            });
            b.alloc_states(1, 4).expect("states");
            // The 16 KiB cap leaves room for the activations of one row only.
            let row_counts: &[usize] = if label.contains("16 KiB") {
                &[1]
            } else {
                &[1, 6]
            };
            for &n_tok in row_counts {
                let tokens: Vec<u32> = (0..n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
                for j in 0..4 {
                    let shape = StepShape { n_seq: 1, n_tok };
                    let p = plan(shape, buffers.clone(), &weights, ops.clone(), 4 + j);
                    let got = logits_of(&mut b, &p, &tokens, &[0]);
                    let rank = ranks[j];
                    let mut worst = 0f32;
                    for (t, &tok) in tokens.iter().enumerate() {
                        let x = &tables[j][tok as usize * rank..][..rank];
                        for o in 0..c {
                            let (mut sum, mut mag) = (biases[j][o] as f64, 0f64);
                            for (k, &xv) in x.iter().enumerate() {
                                let p = mats[j][o * rank + k] as f64 * xv as f64;
                                sum += p;
                                mag += p.abs();
                            }
                            let want = acts[j].apply(sum as f32);
                            let d = (got[t * c + o] - want).abs();
                            worst = worst.max(d);
                            assert!(
                                d <= 2e-6 * mag as f32 + 1e-5,
                                "{label} {dtype} up {j} (rank {rank}), row {t}, out {o}: got {} \
                                 want {want}",
                                got[t * c + o]
                            );
                        }
                    }
                    println!("{label} {dtype} rank {rank}, {n_tok} rows: max abs diff {worst:.3e}");
                    if j == 0 && !label.contains("16 KiB") {
                        let id = b.compile(&p).expect("compile");
                        if let Ok(times) = b.profile_step(id, &tokens, &[0]) {
                            let mm = &times[4];
                            assert_eq!(
                                (mm.kernel.as_str(), mm.dispatches),
                                (format!("MatVec({dtype:?}, 4)").as_str(), 1),
                                "{label}: the four ups did not share one dispatch"
                            );
                        }
                    }
                }
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
            let weights = vec![(
                "emb.weight".to_string(),
                tensor(dtype, vec![vocab, cols], bytes.clone()),
            )];
            upload_all(&mut b, &weights);
            let shape = StepShape { n_seq, n_tok };
            let p = plan(
                shape,
                vec![buf("x", cols, false)],
                &weights,
                vec![Op::Embed { table: 0, out: 0 }],
                0,
            );
            let tokens: Vec<u32> = (0..n_seq * n_tok)
                .map(|_| rng.below(vocab as u64) as u32)
                .collect();
            let got = logits_of(&mut b, &p, &tokens, &[1, 0]);
            let table = dequant(dtype, &bytes);
            for (r, &t) in tokens.iter().enumerate() {
                let want = &table[t as usize * cols..][..cols];
                let (d, i) = max_abs_diff(&got[r * cols..][..cols], want);
                // The kernel may fuse scale·q − min into one fma: allow the last bit.
                assert!(
                    d <= 1e-6 * want[i].abs().max(1.0),
                    "{label} {dtype}: row {r} col {i}: diff {d}"
                );
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
            Op::LayerNorm {
                x: 0,
                w: 1,
                b: 2,
                out: 0,
                eps: 1e-5,
            },
            Op::LastRows { x: 0, out: 1 },
        ];
        let p = plan(
            StepShape { n_seq, n_tok },
            vec![buf("x", c, false), buf("last", c, true)],
            &weights,
            ops,
            1,
        );
        let tokens: Vec<u32> = (0..n_seq * n_tok)
            .map(|_| rng.below(vocab as u64) as u32)
            .collect();
        let id = b.compile(&p).expect("compile");
        let mut got = vec![f32::NAN; n_seq * c];
        b.execute(id, &tokens, &[2, 0, 1], StepOutput::Logits(&mut got))
            .expect("execute");
        let mut arg = vec![u32::MAX; n_seq];
        b.execute(id, &tokens, &[0, 1, 2], StepOutput::Argmax(&mut arg))
            .expect("execute argmax");
        for s in 0..n_seq {
            let t = tokens[s * n_tok + n_tok - 1] as usize;
            let x = &table[t * c..][..c];
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
            let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
            let want: Vec<f32> = (0..c)
                .map(|i| {
                    ((x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64 + bias[i] as f64)
                        as f32
                })
                .collect();
            let row = &got[s * c..][..c];
            let (d, i) = max_abs_diff(row, &want);
            assert!(d < 2e-5, "{label}: sequence {s} channel {i}: diff {d}");
            let best = (0..c).fold(0, |bi, i| if row[i] > row[bi] { i } else { bi });
            assert_eq!(arg[s] as usize, best, "{label}: argmax of sequence {s}");
        }
    }
}

/// LayerNorm x -> xn followed by the token shift of xn: one row-per-workgroup dispatch (widths
/// that are multiples of 4: 44, and 1100 = two vec4 per invocation with a partial second) or
/// the separate kernels (42), prefill (2 sequences x 3 tokens: the register gets the last
/// normalized row) and batched decode (3 x 1), every output buffer and the registers
/// checked against f64.
#[test]
fn layer_norm_then_token_shift_fused() {
    let seed = seed();
    let vocab = 9usize;
    // Without the 16 KiB cap: these activations do not fit it (binding splits are not at stake).
    for (label, mut b) in backends(WgpuOptions::default()) {
        for (c, n_mix, kind) in [
            (1100usize, 6usize, ShiftKind::Att),
            (44, 1, ShiftKind::Ffn),
            (42, 2, ShiftKind::Att),
        ] {
            let mut rng = Rng::new(seed ^ c as u64);
            let state_len = 2 * c + 8;
            let reg = if kind == ShiftKind::Att { c } else { 0 };
            let table = rng.vec(vocab * c, -2.0, 3.0);
            let (w, bias) = (rng.vec(c, 0.5, 1.5), rng.vec(c, -0.3, 0.3));
            let mixes: Vec<Vec<f32>> = (0..n_mix).map(|_| rng.vec(c, 0.0, 1.0)).collect();
            let mut weights = vec![
                ("emb.weight".to_string(), f32_tensor(vec![vocab, c], &table)),
                ("ln.weight".to_string(), f32_tensor(vec![c], &w)),
                ("ln.bias".to_string(), f32_tensor(vec![c], &bias)),
            ];
            for (m, v) in mixes.iter().enumerate() {
                weights.push((format!("mix{m}"), f32_tensor(vec![c], v)));
            }
            upload_all(&mut b, &weights);
            let ops = vec![
                Op::Embed { table: 0, out: 0 },
                Op::LayerNorm {
                    x: 0,
                    w: 1,
                    b: 2,
                    out: 1,
                    eps: 1e-5,
                },
                Op::TokenShift {
                    x: 1,
                    layer: 0,
                    kind,
                    mixes: (0..n_mix).map(|m| (3 + m, 2 + m)).collect(),
                },
            ];
            let mut bufs = vec![buf("x", c, false), buf("xn", c, false)];
            bufs.extend((0..n_mix).map(|m| buf(&format!("o{m}"), c, false)));
            b.alloc_states(3, state_len).expect("states");
            for (n_seq, n_tok) in [(2usize, 3usize), (3, 1)] {
                let slots: Vec<usize> = (0..n_seq).map(|q| (q + 1) % 3).collect();
                let tokens: Vec<u32> = (0..n_seq * n_tok)
                    .map(|_| rng.below(vocab as u64) as u32)
                    .collect();
                let xn_ref: Vec<Vec<f32>> = tokens
                    .iter()
                    .map(|&t| {
                        let x = &table[t as usize * c..][..c];
                        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
                        let var =
                            x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
                        (0..c)
                            .map(|i| {
                                ((x[i] as f64 - mean) / (var + 1e-5).sqrt() * w[i] as f64
                                    + bias[i] as f64) as f32
                            })
                            .collect()
                    })
                    .collect();
                // Every output buffer in turn, each run from the same initial states.
                for out in 1..2 + n_mix {
                    let init: Vec<Vec<f32>> =
                        (0..3).map(|_| rng.vec(state_len, -1.0, 1.0)).collect();
                    for (s, v) in init.iter().enumerate() {
                        b.write_state(s, v).expect("write state");
                    }
                    let shape = StepShape { n_seq, n_tok };
                    let p = plan(shape, bufs.clone(), &weights, ops.clone(), out);
                    let got = logits_of(&mut b, &p, &tokens, &slots);
                    for (q, &slot) in slots.iter().enumerate() {
                        for t in 0..n_tok {
                            let r = q * n_tok + t;
                            let prev = if t == 0 {
                                &init[slot][reg..reg + c]
                            } else {
                                &xn_ref[r - 1][..]
                            };
                            for i in 0..c {
                                let xn = xn_ref[r][i];
                                let want = if out == 1 {
                                    xn
                                } else {
                                    xn + (prev[i] - xn) * mixes[out - 2][i]
                                };
                                let g = got[r * c + i];
                                assert!(
                                    (g - want).abs() < 2e-5,
                                    "{label} c {c}, {n_seq}x{n_tok}, buffer {out}: seq {q} \
                                     tok {t} ch {i}: {g} vs {want}"
                                );
                            }
                        }
                        let mut st = vec![0f32; state_len];
                        b.read_state(slot, &mut st).expect("read state");
                        let last = &xn_ref[q * n_tok + n_tok - 1];
                        let (d, i) = max_abs_diff(&st[reg..reg + c], last);
                        assert!(
                            d < 2e-5,
                            "{label} c {c}: register of slot {slot}: ch {i} {d}"
                        );
                        let other = if reg == 0 { c..2 * c } else { 0..c };
                        assert_eq!(
                            st[other.clone()],
                            init[slot][other],
                            "{label}: other register"
                        );
                    }
                    if out == 1 {
                        let id = b.compile(&p).expect("compile");
                        if let Ok(times) = b.profile_step(id, &tokens, &slots) {
                            let kernels: Vec<String> =
                                times.iter().map(|t| t.kernel.clone()).collect();
                            let fused = c % 4 == 0;
                            assert_eq!(
                                times.iter().any(|t| t.op == 2),
                                !fused,
                                "{label} c {c}: kernels {kernels:?}"
                            );
                            assert_eq!(
                                times[1].kernel.starts_with("LnShift"),
                                fused,
                                "{label} c {c}: kernels {kernels:?}"
                            );
                        }
                    }
                }
            }
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
                Op::TokenShift {
                    x: 0,
                    layer: 0,
                    kind,
                    mixes: vec![(1, 1), (2, 2), (3, 3)],
                },
            ];
            let bufs = vec![
                buf("x", c, false),
                buf("o1", c, false),
                buf("o2", c, false),
                buf("o3", c, false),
            ];
            let slots = [2usize, 0];
            let mut regs: Vec<Vec<f32>> = Vec::new();
            for s in 0..3 {
                let mut st = vec![0f32; state_len];
                b.read_state(s, &mut st).expect("read state");
                regs.push(st);
            }
            // Two steps: the second must start from the registers the first left.
            for step in 0..2 {
                let tokens: Vec<u32> = (0..n_seq * n_tok)
                    .map(|_| rng.below(vocab as u64) as u32)
                    .collect();
                let which = step % 3 + 1;
                let p = plan(
                    StepShape { n_seq, n_tok },
                    bufs.clone(),
                    &weights,
                    ops.clone(),
                    which,
                );
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
                    assert_eq!(
                        &st, want,
                        "{label} {kind:?}: state of slot {s} after step {step}"
                    );
                }
            }
        }
    }
}

struct WkvInputs {
    c: usize,
    n: usize,
    /// r, w, k, v, a, g, v_mix rows, each `[rows, C]`.
    act: Vec<Vec<f32>>,
    /// per layer: k_k, k_a, r_k, ln_x_w, ln_x_b
    vecs: Vec<Vec<Vec<f32>>>,
}

/// Plain f64 reference of two WKV-7 layers (layer 0 writes v_first, layer 1 mixes it in) over
/// one sequence's rows, updating `state` (`[layer][(2+N)·C]`). Returns y of both layers.
#[allow(clippy::needless_range_loop)] // indices mirror the math
fn wkv_reference(
    inp: &WkvInputs,
    rows: std::ops::Range<usize>,
    state: &mut [f32],
    eps: f64,
) -> [Vec<f32>; 2] {
    let (c, n) = (inp.c, inp.n);
    let lsl = (2 + n) * c;
    let mut v_first = vec![0f64; c];
    let mut ys = [Vec::new(), Vec::new()];
    for row in rows {
        let at = |i: usize, ch: usize| inp.act[i][row * c + ch] as f64;
        for layer in 0..2 {
            let vv = &inp.vecs[layer];
            for h in 0..c / n {
                let chs: Vec<usize> = (h * n..h * n + n).collect();
                let v: Vec<f64> = chs
                    .iter()
                    .map(|&ch| {
                        if layer == 0 {
                            v_first[ch] = at(3, ch);
                            at(3, ch)
                        } else {
                            at(3, ch) + (v_first[ch] - at(3, ch)) * at(6, ch)
                        }
                    })
                    .collect();
                let kk: Vec<f64> = chs.iter().map(|&ch| at(2, ch) * vv[0][ch] as f64).collect();
                let norm = kk.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
                let kkn: Vec<f64> = kk.iter().map(|x| x / norm).collect();
                let kmod: Vec<f64> = chs
                    .iter()
                    .map(|&ch| at(2, ch) * (1.0 + (at(4, ch) - 1.0) * vv[1][ch] as f64))
                    .collect();
                let base = layer * lsl + 2 * c + h * n * n;
                let mut y = vec![0f64; n];
                for p in 0..n {
                    let srow = &mut state[base + p * n..base + p * n + n];
                    let sa: f64 = (0..n).map(|q| srow[q] as f64 * -kkn[q]).sum();
                    for q in 0..n {
                        let s = srow[q] as f64 * at(1, chs[q])
                            + sa * kkn[q] * at(4, chs[q])
                            + v[p] * kmod[q];
                        srow[q] = s as f32;
                        y[p] += s * at(0, chs[q]);
                    }
                }
                let mean = y.iter().sum::<f64>() / n as f64;
                let var = y.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
                let bonus: f64 = (0..n)
                    .map(|q| at(0, chs[q]) * kmod[q] * vv[2][chs[q]] as f64)
                    .sum();
                for p in 0..n {
                    let ch = chs[p];
                    let yn = (y[p] - mean) / (var + eps).sqrt() * vv[3][ch] as f64
                        + vv[4][ch] as f64
                        + bonus * v[p];
                    ys[layer].push((yn * at(5, ch)) as f32);
                }
            }
        }
    }
    // ys were pushed per row, head by head: already in channel order within each row.
    ys
}

/// Two WKV-7 layers (v_first at layer 0, v_mix at layer 1) of width `c`, head size `n`, as
/// uploaded weights, with random initial states of the slots.
struct WkvCase {
    c: usize,
    n: usize,
    vocab: usize,
    /// Embedding tables of r, w, k, v, a, g, v_mix.
    tables: Vec<Vec<f32>>,
    vecs: Vec<Vec<Vec<f32>>>,
    weights: Vec<(String, Tensor)>,
    state_len: usize,
}

const WKV_SLOTS: usize = 3;
const WKV_EPS: f32 = 64e-5;

impl WkvCase {
    fn new(rng: &mut Rng, c: usize, n: usize) -> WkvCase {
        let vocab = 5usize;
        let ranges = [
            (-1.0, 1.0),
            (0.55, 0.999),
            (-1.0, 1.0),
            (-1.0, 1.0),
            (0.0, 1.0),
            (-1.0, 1.0),
            (0.0, 1.0),
        ];
        let tables: Vec<Vec<f32>> = ranges
            .iter()
            .map(|&(lo, hi)| rng.vec(vocab * c, lo, hi))
            .collect();
        let vec_ranges = [
            (-1.0, 1.0),
            (0.0, 1.0),
            (-1.0, 1.0),
            (0.5, 1.5),
            (-0.2, 0.2),
        ];
        let vecs: Vec<Vec<Vec<f32>>> = (0..2)
            .map(|_| {
                vec_ranges
                    .iter()
                    .map(|&(lo, hi)| rng.vec(c, lo, hi))
                    .collect()
            })
            .collect();
        let mut weights: Vec<(String, Tensor)> = WKV_NAMES
            .iter()
            .zip(&tables)
            .map(|(nm, t)| (format!("emb.{nm}"), f32_tensor(vec![vocab, c], t)))
            .collect();
        for (l, lv) in vecs.iter().enumerate() {
            for (nm, v) in ["k_k", "k_a", "r_k", "ln_x.weight", "ln_x.bias"]
                .iter()
                .zip(lv)
            {
                weights.push((format!("blocks.{l}.att.{nm}"), f32_tensor(vec![c], v)));
            }
        }
        WkvCase {
            c,
            n,
            vocab,
            tables,
            vecs,
            weights,
            state_len: 2 * (2 + n) * c,
        }
    }

    fn upload(&self, b: &mut WgpuBackend) {
        upload_all(b, &self.weights);
        b.alloc_states(WKV_SLOTS, self.state_len).expect("states");
    }

    /// Runs one step of `n_seq` x `n_tok` fresh random tokens from random states in slots
    /// [2, 0] (slot 1 idle), once with y of each layer as the logits, against
    /// [`wkv_reference`] (outputs < 2e-4, states < 1e-4). Returns the kernels of the two Wkv7
    /// ops' dispatches and the worst output difference.
    fn check(
        &self,
        label: &str,
        b: &mut WgpuBackend,
        rng: &mut Rng,
        n_seq: usize,
        n_tok: usize,
    ) -> (Vec<String>, f32) {
        let (c, n, state_len) = (self.c, self.n, self.state_len);
        let init: Vec<Vec<f32>> = (0..WKV_SLOTS)
            .map(|_| rng.vec(state_len, -0.5, 0.5))
            .collect();
        // Buffers 0..7 the embedded inputs, 7 v_first, 8 y0, 9 y1.
        let mut bufs: Vec<BufferDecl> = WKV_NAMES.iter().map(|nm| buf(nm, c, false)).collect();
        bufs.extend([
            buf("v_first", c, false),
            buf("y0", c, false),
            buf("y1", c, false),
        ]);
        let mut ops: Vec<Op> = (0..7).map(|i| Op::Embed { table: i, out: i }).collect();
        for layer in 0..2 {
            let w0 = 7 + 5 * layer;
            ops.push(Op::Wkv7(Wkv7Args {
                layer,
                r: 0,
                w: 1,
                k: 2,
                v: 3,
                a: 4,
                g: 5,
                v_first: 7,
                v_mix: (layer == 1).then_some(6),
                k_k: w0,
                k_a: w0 + 1,
                r_k: w0 + 2,
                ln_x_w: w0 + 3,
                ln_x_b: w0 + 4,
                gn_eps: WKV_EPS,
                out: 8 + layer,
            }));
        }
        let tokens: Vec<u32> = (0..n_seq * n_tok)
            .map(|_| rng.below(self.vocab as u64) as u32)
            .collect();
        let act: Vec<Vec<f32>> = self
            .tables
            .iter()
            .map(|t| {
                tokens
                    .iter()
                    .flat_map(|&tok| t[tok as usize * c..][..c].to_vec())
                    .collect()
            })
            .collect();
        let inputs = WkvInputs {
            c,
            n,
            act,
            vecs: self.vecs.clone(),
        };
        let slots = [2usize, 0];
        let mut kernels = Vec::new();
        let mut worst = 0f32;
        let what = format!("{label} C={c} N={n} {n_seq}x{n_tok}");
        for layer_out in 0..2 {
            for (s, v) in init.iter().enumerate() {
                b.write_state(s, v).expect("write state");
            }
            let mut p = plan(
                StepShape { n_seq, n_tok },
                bufs.clone(),
                &self.weights,
                ops.clone(),
                8 + layer_out,
            );
            p.state = StateLayout::matrix_state(2, c, n);
            let id = b.compile(&p).expect("compile");
            let mut got = vec![f32::NAN; n_seq * n_tok * c];
            b.execute(id, &tokens, &slots[..n_seq], StepOutput::Logits(&mut got))
                .expect("execute");
            for (q, &slot) in slots[..n_seq].iter().enumerate() {
                let mut st = init[slot].clone();
                let ys =
                    wkv_reference(&inputs, q * n_tok..(q + 1) * n_tok, &mut st, WKV_EPS as f64);
                let g = &got[q * n_tok * c..(q + 1) * n_tok * c];
                let (d, i) = max_abs_diff(g, &ys[layer_out]);
                assert!(
                    d < 2e-4,
                    "{what}: layer {layer_out} seq {q} value {i} (token {}): diff {d}",
                    i / c
                );
                worst = worst.max(d);
                let mut dev = vec![0f32; state_len];
                b.read_state(slot, &mut dev).expect("read state");
                let (ds, si) = max_abs_diff(&dev, &st);
                assert!(
                    ds < 1e-4,
                    "{what}: state of slot {slot} value {si}: diff {ds}"
                );
            }
            let mut untouched = vec![0f32; state_len];
            b.read_state(1, &mut untouched).expect("read state");
            assert_eq!(untouched, init[1], "{what}: slot 1 was not in the step");
            kernels = b
                .dispatch_kernels(id)
                .into_iter()
                .filter(|&(op, _)| op >= 7)
                .map(|(_, k)| k)
                .collect();
        }
        println!("{what}: max abs diff {worst:.3e}, kernels {kernels:?}");
        (kernels, worst)
    }
}

const WKV_NAMES: [&str; 7] = ["r", "w", "k", "v", "a", "g", "v_mix"];

/// Asserts that both Wkv7 ops ran `want` (kernel names without their fields), in order.
fn assert_wkv_kernels(what: &str, kernels: &[String], want: &[&str]) {
    let names: Vec<&str> = kernels
        .iter()
        .map(|k| k.split([' ', '{']).next().unwrap_or(""))
        .collect();
    let want2: Vec<&str> = want.iter().chain(want).copied().collect();
    assert_eq!(names, want2, "{what}: kernels {kernels:?}");
}

const WKV_PREFILL: [&str; 3] = ["Wkv7Prep", "Wkv7Scan", "Wkv7Post"];

#[test]
fn wkv7_two_layers_batched_against_reference() {
    let seed = seed();
    // 2 sequences x 3 tokens: the prefill kernels (wkv7_prep / scan / post) where N is a
    // multiple of 4 (N = 16, 64, 8, 4, 12); N = 6: the one-invocation-per-row token loop.
    // N = 12 (workgroups of 12: one whole and one partial subgroup on lavapipe) caught a
    // subgroup count reported rounded down (kernels/source.rs).
    for (c, n) in [
        (32usize, 16usize),
        (128, 64),
        (24, 8),
        (16, 4),
        (36, 12),
        (18, 6),
    ] {
        for (label, mut b) in backends(WgpuOptions::default()) {
            let mut rng = Rng::new(seed ^ c as u64);
            let case = WkvCase::new(&mut rng, c, n);
            case.upload(&mut b);
            let (kernels, _) = case.check(&label, &mut b, &mut rng, 2, 3);
            let want: &[&str] = if n % 4 == 0 { &WKV_PREFILL } else { &["Wkv7"] };
            assert_wkv_kernels(&format!("{label} N={n}"), &kernels, want);
        }
    }
}

/// The prefill kernels across chunk boundaries (8 tokens per chunk: 2, 3, 17, 40 tokens),
/// N = 16, 64 and 12, 2 sequences, two layers, with 1, 2 and 4 lanes per state row (shuffles
/// where the device has subgroups, workgroup memory in the backend without: forced through
/// `wkv_scan_lanes`); decode (1 token) keeps the split kernel (4 lanes per row at N = 16, 64; 1
/// at N = 12); with a binding cap too small for the prefill's scratch rows, prefill runs the
/// split kernel's token loop.
#[test]
fn wkv7_prefill_scan_across_chunks_against_reference() {
    let seed = seed();
    for lanes in [None, Some(2u32), Some(4)] {
        let options = WgpuOptions {
            wkv_scan_lanes: lanes,
            ..Default::default()
        };
        for (c, n) in [(32usize, 16usize), (128, 64), (36, 12)] {
            for (label, mut b) in backends(options.clone()) {
                let mut rng = Rng::new(seed ^ (c as u64 * 7919));
                let case = WkvCase::new(&mut rng, c, n);
                case.upload(&mut b);
                for n_tok in [2usize, 3, 17, 40] {
                    let what = format!("{label} N={n} {n_tok} tokens, lanes {lanes:?}");
                    let (kernels, _) = case.check(&what, &mut b, &mut rng, 2, n_tok);
                    assert_wkv_kernels(&what, &kernels, &WKV_PREFILL);
                    // Without subgroups the lanes asked for are used wherever N allows them.
                    let want = match lanes {
                        Some(j) if n % (4 * j as usize) == 0 => j,
                        _ => 1,
                    };
                    if !b.uses_subgroups() {
                        assert!(
                            kernels[1].contains(&format!("lanes: {want} ")),
                            "{what}: {kernels:?}"
                        );
                    }
                }
                for n_seq in [1usize, 2] {
                    let (kernels, _) = case.check(&label, &mut b, &mut rng, n_seq, 1);
                    assert_wkv_kernels(&format!("{label} N={n} decode"), &kernels, &["Wkv7Split"]);
                }
            }
        }
    }
    // Activations of 2x3 rows at C = 32: 10 buffers of 6 rows + the argmax words = 7712
    // bytes; the scratch rows would add 3072. A cap of 8 KiB leaves prefill on the split kernel.
    let capped = WgpuOptions {
        max_binding_bytes: Some(8192),
        ..Default::default()
    };
    for (label, mut b) in backends(capped) {
        let mut rng = Rng::new(seed ^ 0x5ca7);
        let case = WkvCase::new(&mut rng, 32, 16);
        case.upload(&mut b);
        let (kernels, _) = case.check(&label, &mut b, &mut rng, 2, 3);
        assert_wkv_kernels(&format!("{label} capped"), &kernels, &["Wkv7Split"]);
    }
}

/// Dtypes without a device format (Q4_0, Q4_1, Q5_0, Q5_1, Q5_K) are converted to f32 at
/// upload; the product must match rwkv-core's dequantizer.
#[test]
fn other_quant_types_are_converted_exactly() {
    let seed = seed();
    let (vocab, cols, n_out, n_tok) = (5usize, 256usize, 24usize, 2usize);
    let Some((label, mut b)) = backends(WgpuOptions::default()).into_iter().next() else {
        return;
    };
    b.alloc_states(1, 4).expect("states");
    for (di, (dtype, f16_fields)) in [
        (DType::Q4_0, &[0usize][..]),
        (DType::Q4_1, &[0, 2][..]),
        (DType::Q5_0, &[0][..]),
        (DType::Q5_1, &[0, 2][..]),
        (DType::Q5K, &[0, 2][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng::new(seed ^ (di as u64 * 31_337));
        let blocks = n_out * cols / dtype.block_elems();
        let mut bytes = Vec::new();
        for _ in 0..blocks {
            let mut block: Vec<u8> = (0..dtype.block_bytes()).map(|_| rng.byte()).collect();
            for &at in f16_fields {
                block[at..at + 2].copy_from_slice(&f16_bits(rng.uniform(0.001, 0.02)));
            }
            bytes.extend(block);
        }
        let table = rng.vec(vocab * cols, -1.0, 1.0);
        let weights = vec![
            (
                "emb.weight".to_string(),
                f32_tensor(vec![vocab, cols], &table),
            ),
            (
                "w".to_string(),
                tensor(dtype, vec![n_out, cols], bytes.clone()),
            ),
        ];
        upload_all(&mut b, &weights);
        let ops = vec![
            Op::Embed { table: 0, out: 0 },
            Op::MatMul {
                jobs: vec![MatJob {
                    weight: 1,
                    x: 0,
                    out: 1,
                    bias: None,
                    act: Act::Tanh,
                    accumulate: false,
                }],
            },
        ];
        let p = plan(
            StepShape { n_seq: 1, n_tok },
            vec![buf("x", cols, false), buf("y", n_out, false)],
            &weights,
            ops,
            1,
        );
        let tokens: Vec<u32> = (0..n_tok).map(|_| rng.below(vocab as u64) as u32).collect();
        let got = logits_of(&mut b, &p, &tokens, &[0]);
        let mut w = vec![0f32; n_out * cols];
        rwkv_core::quant::dequantize(dtype, &bytes, &mut w).expect("dequantize");
        let mut want = Vec::new();
        for &t in &tokens {
            let x = &table[t as usize * cols..][..cols];
            for o in 0..n_out {
                let s: f64 = (0..cols)
                    .map(|k| w[o * cols + k] as f64 * x[k] as f64)
                    .sum();
                want.push((s as f32).tanh());
            }
        }
        let (d, i) = max_abs_diff(&got, &want);
        assert!(d < 1e-5, "{label} {dtype}: value {i}: diff {d}");
    }
}

/// A 9 MiB table is written in several pieces at upload; rows from every piece come back.
#[test]
fn large_table_upload_in_pieces() {
    let seed = seed();
    let (vocab, cols) = (1100usize, 2048usize);
    let Some((label, mut b)) = backends(WgpuOptions::default()).into_iter().next() else {
        return;
    };
    let mut rng = Rng::new(seed);
    let table = rng.vec(vocab * cols, -1.0, 1.0);
    let weights = vec![(
        "emb.weight".to_string(),
        f32_tensor(vec![vocab, cols], &table),
    )];
    upload_all(&mut b, &weights);
    b.alloc_states(1, 4).expect("states");
    let p = plan(
        StepShape { n_seq: 1, n_tok: 4 },
        vec![buf("x", cols, false)],
        &weights,
        vec![Op::Embed { table: 0, out: 0 }],
        0,
    );
    let tokens = [0u32, 1023, 1024 + rng.below(70) as u32, vocab as u32 - 1];
    let got = logits_of(&mut b, &p, &tokens, &[0]);
    for (r, &t) in tokens.iter().enumerate() {
        assert_eq!(
            &got[r * cols..][..cols],
            &table[t as usize * cols..][..cols],
            "{label}: row {t}"
        );
    }
}
