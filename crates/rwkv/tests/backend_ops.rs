//! One op conformance suite for every backend: a table of small plans, each exercising one op of
//! the backend contract on fresh random inputs, run on the CPU backend (the reference) and on
//! every other backend the router can open. Each case compares the buffers it names and every
//! part of every slot's state after the step, and prints the measured error so that the figures
//! can be recorded.
//!
//! Inputs reach a plan the way a model's do: `Embed` of an f32 table (an exact copy on every
//! backend) with random token ids, and random initial states written into the slots.
//!
//! Environment: `RWKV_TEST_SEED` replays a run (the seed is printed), `RWKV_REQUIRE_GPU=1` fails
//! instead of skipping when CUDA cannot open, `RWKV_OPS_FULL=1` runs the larger sweep (every
//! MatMul dtype × act × bias × accumulate at every row count; meant for the device).

use rwkv::router::{self, BackendChoice};
use rwkv_core::backend::{
    Act, Backend, BufId, BufferDecl, MatJob, Op, Plan, ShiftKind, StateLayout, StepOutput,
    StepShape, WeightId, Wkv7Args,
};
use rwkv_core::model::{Tensor, TensorBytes};
use rwkv_core::DType;

// ---------------------------------------------------------------------------------------------
// Random inputs

/// splitmix64: small, seeded, good enough for test inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

use rwkv_testing::seed;

fn full_sweep() -> bool {
    std::env::var("RWKV_OPS_FULL").is_ok_and(|v| v == "1")
}

fn f16_bits(v: f32) -> [u8; 2] {
    half::f16::from_f32(v).to_le_bytes()
}

/// Random valid blocks of `dtype` for `n` values: random quants, random f16 scales in a range
/// that gives weights of spread ~0.1, so that a product over 256 inputs of ±1 stays O(1), where
/// the activations are not saturated and an error in the product shows through them (block
/// layouts: docs/gguf-formats.md §3).
fn random_blocks(rng: &mut Rng, dtype: DType, n: usize) -> Vec<u8> {
    let blocks = n / dtype.block_elems();
    let mut out = Vec::with_capacity(blocks * dtype.block_bytes());
    let bytes = |rng: &mut Rng, out: &mut Vec<u8>, k: usize| {
        out.extend((0..k).map(|_| rng.byte()));
    };
    for _ in 0..blocks {
        match dtype {
            DType::F32 => out.extend(rng.uniform(-0.15, 0.15).to_le_bytes()),
            DType::F16 => out.extend(f16_bits(rng.uniform(-0.15, 0.15))),
            DType::BF16 => out.extend(half::bf16::from_f32(rng.uniform(-0.15, 0.15)).to_le_bytes()),
            // d, then 32 signed quants (|q| ≤ 128).
            DType::Q8_0 => {
                out.extend(f16_bits(rng.uniform(0.0003, 0.0025)));
                bytes(rng, &mut out, 32);
            }
            // d, dmin, 12 bytes of 6-bit scales/mins (≤ 63), 128 bytes of nibbles.
            DType::Q4K => {
                out.extend(f16_bits(rng.uniform(0.0001, 0.001)));
                out.extend(f16_bits(rng.uniform(0.0001, 0.001)));
                bytes(rng, &mut out, 140);
            }
            // d, dmin, 12 bytes of scales/mins, 32 bytes of high bits, 128 bytes of nibbles.
            DType::Q5K => {
                out.extend(f16_bits(rng.uniform(0.00005, 0.0005)));
                out.extend(f16_bits(rng.uniform(0.00005, 0.0005)));
                bytes(rng, &mut out, 172);
            }
            // 128 bytes low nibbles, 64 bytes high bits, 16 signed scales, d last.
            DType::Q6K => {
                bytes(rng, &mut out, 192);
                out.extend((0..16).map(|_| (rng.below(255) as i32 - 127) as i8 as u8));
                out.extend(f16_bits(rng.uniform(0.00002, 0.00015)));
            }
            d => panic!("no block generator for {d}"),
        }
    }
    out
}

fn tensor(dtype: DType, shape: Vec<usize>, bytes: Vec<u8>) -> Tensor {
    Tensor::new(dtype, shape, TensorBytes::owned(bytes)).expect("test tensor")
}

// ---------------------------------------------------------------------------------------------
// Tolerances

/// What made a compared buffer, which decides the error a backend may show.
#[derive(Debug, Clone, Copy)]
enum Path {
    /// Copies and dequantization (Embed, LastRows): at most f32 rounding of `d·q − m`.
    Copy,
    /// Per-element f32 math and row reductions (LayerNorm, TokenShift).
    Elementwise,
    /// The WKV recurrence over up to 40 tokens, then a per-head GroupNorm (which divides by the
    /// head's spread, so rounding is amplified where a head's output is nearly flat).
    Wkv,
    /// A matrix product of `rows` activation rows, `k` inputs per output, weights of `dtype`.
    MatMul { dtype: DType, rows: usize, k: usize },
}

/// Largest ‖Δ‖/‖ref‖ a backend may show on `path`, and why. Every bound is below 1e-2, so an op
/// whose output is off by 2% fails; `max |Δ|` may reach 4× the bound times `max |ref|`.
fn tolerance(target: &Target, path: Path) -> (f64, &'static str) {
    match (target.choice, path) {
        (BackendChoice::Cpu, _) => (0.0, "the reference against itself"),
        (_, Path::Copy) => (1e-6, "copy / dequantization in f32"),
        (_, Path::Elementwise) => (1e-5, "f32 elementwise and row sums (wgpu NOTES: ~1e-6)"),
        (_, Path::Wkv) => (
            2e-5,
            "f32 recurrence + GroupNorm (NOTES: ≤1.1e-6 vs f64 per step)",
        ),
        // rwkv-cuda: tensor cores from MMA_MIN_ROWS = 5 rows when K fits their steps, f16
        // operands with f32 accumulation (NOTES: 2.7e-4 at 5 rows, tests bound 3e-3).
        (BackendChoice::Cuda, Path::MatMul { dtype, rows, k })
            if rows >= 5 && k % mma_k_step(dtype) == 0 =>
        {
            (5e-3, "cuda tensor cores: f16 operands, f32 sums")
        }
        // rwkv-cuda: batch-1 Q4_K quantizes x to int8 per 16 values for dp4a (NOTES: 3.4e-3 per
        // product, tests bound 1e-2).
        (BackendChoice::Cuda, Path::MatMul { dtype, rows: 1, k })
            if dtype == DType::Q4K && k % 256 == 0 =>
        {
            (1e-2, "cuda batch-1 Q4_K int8 activations (dp4a)")
        }
        // rwkv-wgpu: from 16 rows products may take cooperative matrices or the f16 scratch
        // product (f16 operands, NOTES: ≤ 2^-10 per product, tiny model 3.5e-3 end to end).
        (BackendChoice::WebGpu, Path::MatMul { rows, .. }) if rows >= 16 && target.f16_products => {
            (
                5e-3,
                "wgpu f16-operand products (coop / f16 scratch) from 16 rows",
            )
        }
        (_, Path::MatMul { .. }) => (1e-5, "f32 products (NOTES: ≤ 2e-6·Σ|w·x|)"),
    }
}

/// The K granularity of rwkv-cuda's tensor-core kernel for a weight dtype.
fn mma_k_step(dtype: DType) -> usize {
    match dtype {
        DType::Q4K | DType::Q6K => 256,
        _ => 32,
    }
}

// ---------------------------------------------------------------------------------------------
// Cases

/// One buffer compared after the step.
struct Output {
    buf: BufId,
    label: String,
    path: Path,
}

/// A small plan, its weights, its run-time inputs and what to compare.
struct Case {
    name: String,
    weights: Vec<(String, Tensor)>,
    shape: StepShape,
    buffers: Vec<BufferDecl>,
    ops: Vec<Op>,
    state: StateLayout,
    outputs: Vec<Output>,
    /// The path of the state parts the ops update (parts they do not touch must stay as
    /// written, within the same bound).
    state_path: Path,
    tokens: Vec<u32>,
    slots: Vec<usize>,
    /// Initial state of every slot (one more slot than sequences: it must stay untouched).
    initial: Vec<Vec<f32>>,
}

impl Case {
    fn state_len(&self) -> usize {
        // A plan without state ops still steps slots; one value each keeps them real.
        self.state.len().max(1)
    }

    fn plan(&self, logits: BufId) -> Plan {
        Plan {
            shape: self.shape,
            buffers: self.buffers.clone(),
            weights: self.weights.iter().map(|(n, _)| n.clone()).collect(),
            ops: self.ops.clone(),
            state: self.state.clone(),
            logits,
        }
    }
}

/// Assembles a case: weights, buffers, and `Embed`-fed random inputs.
struct Builder {
    rng: Rng,
    shape: StepShape,
    /// Rows of every input table (token ids are drawn below it).
    vocab: usize,
    weights: Vec<(String, Tensor)>,
    buffers: Vec<BufferDecl>,
    ops: Vec<Op>,
}

impl Builder {
    fn new(seed: u64, case_no: u64, shape: StepShape) -> Builder {
        Builder {
            rng: Rng(seed ^ case_no.wrapping_mul(0xd1b5_4a32_d192_ed03)),
            shape,
            vocab: 37,
            weights: Vec::new(),
            buffers: Vec::new(),
            ops: Vec::new(),
        }
    }

    fn weight(&mut self, name: &str, t: Tensor) -> WeightId {
        self.weights.push((name.to_string(), t));
        self.weights.len() - 1
    }

    fn f32_weight(&mut self, name: &str, shape: Vec<usize>, lo: f32, hi: f32) -> WeightId {
        let n = shape.iter().product();
        let values = self.rng.vec(n, lo, hi);
        self.weight(name, Tensor::from_f32(shape, &values).expect("f32 tensor"))
    }

    fn buffer(&mut self, name: &str, width: usize, last_only: bool) -> BufId {
        self.buffers.push(BufferDecl {
            name: name.into(),
            width,
            last_only,
        });
        self.buffers.len() - 1
    }

    /// A buffer filled with random values in [lo, hi): `Embed` of its own f32 table.
    fn input(&mut self, name: &str, width: usize, lo: f32, hi: f32) -> BufId {
        let table = self.f32_weight(&format!("{name}.table"), vec![self.vocab, width], lo, hi);
        let out = self.buffer(name, width, false);
        self.ops.push(Op::Embed { table, out });
        out
    }

    fn finish(
        mut self,
        name: String,
        state: StateLayout,
        outputs: Vec<Output>,
        state_path: Path,
    ) -> Case {
        let rows = self.shape.rows();
        let tokens = (0..rows)
            .map(|_| self.rng.below(self.vocab) as u32)
            .collect();
        // n_seq + 1 slots, the sequences in a shuffled order: slot indexing is part of the test.
        let n_slots = self.shape.n_seq + 1;
        let mut order: Vec<usize> = (0..n_slots).collect();
        for i in (1..n_slots).rev() {
            order.swap(i, self.rng.below(i + 1));
        }
        let slots = order[..self.shape.n_seq].to_vec();
        let len = state.len().max(1);
        let initial = (0..n_slots).map(|_| self.rng.vec(len, -1.0, 1.0)).collect();
        Case {
            name,
            weights: self.weights,
            shape: self.shape,
            buffers: self.buffers,
            ops: self.ops,
            state,
            outputs,
            state_path,
            tokens,
            slots,
            initial,
        }
    }
}

fn out(buf: BufId, label: &str, path: Path) -> Output {
    Output {
        buf,
        label: label.to_string(),
        path,
    }
}

fn shape(n_seq: usize, n_tok: usize) -> StepShape {
    StepShape { n_seq, n_tok }
}

const EMBED_DTYPES: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::Q8_0,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

fn embed_cases(seed: u64) -> Vec<Case> {
    EMBED_DTYPES
        .iter()
        .enumerate()
        .map(|(i, &dtype)| {
            let mut b = Builder::new(seed, 100 + i as u64, shape(2, 3));
            let c = 512; // two 256-value super-blocks per row
            let bytes = random_blocks(&mut b.rng, dtype, b.vocab * c);
            let table = b.weight("emb", tensor(dtype, vec![b.vocab, c], bytes));
            let o = b.buffer("x", c, false);
            b.ops.push(Op::Embed { table, out: o });
            b.finish(
                format!("embed {dtype} C={c}"),
                StateLayout::default(),
                vec![out(o, "x", Path::Copy)],
                Path::Copy,
            )
        })
        .collect()
}

fn layer_norm_cases(seed: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, (c, in_place, (n_seq, n_tok))) in [
        (64, false, (1, 1)),
        (64, true, (3, 2)),
        (200, false, (2, 3)),
        (200, true, (1, 1)),
        (2048, false, (1, 5)),
        (2048, true, (2, 1)),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = Builder::new(seed, 200 + i as u64, shape(n_seq, n_tok));
        // A mean away from zero, as residual rows have.
        let x = b.input("x", c, -1.0, 3.0);
        let w = b.f32_weight("ln.w", vec![c], 0.5, 1.5);
        let bias = b.f32_weight("ln.b", vec![c], -0.5, 0.5);
        let o = if in_place { x } else { b.buffer("y", c, false) };
        b.ops.push(Op::LayerNorm {
            x,
            w,
            b: bias,
            out: o,
            eps: 1e-5,
        });
        let mode = if in_place { "in place" } else { "to y" };
        cases.push(b.finish(
            format!("layer_norm C={c} {mode} rows={n_seq}x{n_tok}"),
            StateLayout::default(),
            vec![out(o, "y", Path::Elementwise)],
            Path::Elementwise,
        ));
    }
    cases
}

/// Token shift of `mixes` outputs reading and updating the `kind` register of `layer` (of a
/// two-layer state), optionally after a LayerNorm of its input (the pattern GPU backends fuse).
fn token_shift_case(
    mut b: Builder,
    kind: ShiftKind,
    n_mix: usize,
    c: usize,
    layer: usize,
    after_layer_norm: bool,
) -> Case {
    let StepShape { n_seq, n_tok } = b.shape;
    let mut x = b.input("x", c, -2.0, 2.0);
    let mut outputs = Vec::new();
    if after_layer_norm {
        let w = b.f32_weight("ln.w", vec![c], 0.5, 1.5);
        let bias = b.f32_weight("ln.b", vec![c], -0.5, 0.5);
        let xn = b.buffer("xn", c, false);
        b.ops.push(Op::LayerNorm {
            x,
            w,
            b: bias,
            out: xn,
            eps: 1e-5,
        });
        outputs.push(out(xn, "xn", Path::Elementwise));
        x = xn;
    }
    let mut mixes = Vec::new();
    for m in 0..n_mix {
        let mix = b.f32_weight(&format!("mix{m}"), vec![c], 0.0, 1.0);
        let o = b.buffer(&format!("x{m}"), c, false);
        mixes.push((mix, o));
        outputs.push(out(o, &format!("x{m}"), Path::Elementwise));
    }
    b.ops.push(Op::TokenShift {
        x,
        layer,
        kind,
        mixes,
    });
    let ln = if after_layer_norm {
        "layer_norm + "
    } else {
        ""
    };
    b.finish(
        format!("{ln}token_shift {kind:?} mixes={n_mix} C={c} layer={layer} rows={n_seq}x{n_tok}"),
        StateLayout::matrix_state(2, c, 16),
        outputs,
        Path::Elementwise,
    )
}

fn token_shift_cases(seed: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    let shapes = [(1, 1), (3, 1), (2, 4), (1, 17), (3, 3), (2, 2)];
    for (ki, kind) in [ShiftKind::Att, ShiftKind::Ffn].into_iter().enumerate() {
        for (i, rows) in shapes.into_iter().enumerate() {
            let c = if i % 2 == 0 { 64 } else { 160 };
            let no = 300 + (ki * 10 + i) as u64;
            let b = Builder::new(seed, no, shape(rows.0, rows.1));
            cases.push(token_shift_case(b, kind, i + 1, c, i % 2, false));
        }
        let no = 330 + ki as u64;
        let b = Builder::new(seed, no, shape(2, 3));
        cases.push(token_shift_case(b, kind, 6 - ki, 2048, 1, true));
    }
    cases
}

const ACTS: [Act; 5] = [Act::None, Act::Tanh, Act::Sigmoid, Act::ReluSq, Act::Decay];

/// The (act, bias, accumulate) of each job of one MatMul op.
type JobKind = (Act, bool, bool);

/// One MatMul op of `kinds.len()` jobs of `dtype` weights `[m, k]` over one input of
/// `n_seq · n_tok` rows; accumulating jobs add into a buffer first filled with random values.
fn matmul_case(
    seed: u64,
    case_no: u64,
    dtype: DType,
    (n_seq, n_tok): (usize, usize),
    k: usize,
    m: usize,
    kinds: &[JobKind],
) -> Case {
    let mut b = Builder::new(seed, case_no, shape(n_seq, n_tok));
    let x = b.input("x", k, -1.0, 1.0);
    let rows = n_seq * n_tok;
    let path = Path::MatMul { dtype, rows, k };
    let mut jobs = Vec::new();
    let mut outputs = Vec::new();
    for (j, &(act, bias, accumulate)) in kinds.iter().enumerate() {
        let bytes = random_blocks(&mut b.rng, dtype, m * k);
        let weight = b.weight(&format!("w{j}"), tensor(dtype, vec![m, k], bytes));
        let bias = bias.then(|| b.f32_weight(&format!("bias{j}"), vec![m], -0.5, 0.5));
        let o = if accumulate {
            b.input(&format!("y{j}"), m, -1.0, 1.0)
        } else {
            b.buffer(&format!("y{j}"), m, false)
        };
        jobs.push(MatJob {
            weight,
            x,
            out: o,
            bias,
            act,
            accumulate,
        });
        let label = format!(
            "y{j} {act:?}{}{}",
            if bias.is_some() { " +bias" } else { "" },
            if accumulate { " +=" } else { "" }
        );
        outputs.push(out(o, &label, path));
    }
    b.ops.push(Op::MatMul { jobs });
    b.finish(
        format!("matmul {dtype} rows={n_seq}x{n_tok} k={k} m={m}"),
        StateLayout::default(),
        outputs,
        path,
    )
}

/// Row counts at the batch-1, small-batch (< 5 rows on CUDA), tensor-core (≥ 5 on CUDA, ≥ 16 on
/// WebGPU) and tile thresholds (64-row tiles: 70 leaves a partial one), as decode batches and
/// prefill chunks.
const MATMUL_SHAPES: [(usize, usize); 6] = [(1, 1), (3, 1), (2, 4), (1, 32), (8, 8), (2, 35)];

fn matmul_cases(seed: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    let full = full_sweep();
    for (di, &dtype) in EMBED_DTYPES.iter().enumerate() {
        for (ri, &rows) in MATMUL_SHAPES.iter().enumerate() {
            // Every act in every op; bias × accumulate rotate with the row count so that each
            // dtype meets all 20 (act, bias, accumulate) combinations over the six row counts
            // (all of them at every row count with RWKV_OPS_FULL=1).
            let kinds: Vec<JobKind> = if full {
                ACTS.iter()
                    .flat_map(|&a| {
                        [
                            (a, false, false),
                            (a, true, false),
                            (a, false, true),
                            (a, true, true),
                        ]
                    })
                    .collect()
            } else {
                ACTS.iter()
                    .enumerate()
                    .map(|(ai, &a)| {
                        let combo = (ai + ri) % 4;
                        (a, combo & 1 == 1, combo & 2 == 2)
                    })
                    .collect()
            };
            let no = 400 + (di * 10 + ri) as u64;
            cases.push(matmul_case(seed, no, dtype, rows, 256, 72, &kinds));
        }
    }
    // Inputs no multiple of 32 (LoRA-like ranks, the generic paths of both GPU backends).
    for (i, &dtype) in [DType::F32, DType::F16, DType::BF16].iter().enumerate() {
        for (ri, rows) in [(1, 1), (1, 8), (2, 35)].into_iter().enumerate() {
            let kinds = [(Act::Tanh, true, false), (Act::None, false, true)];
            let no = 500 + (i * 10 + ri) as u64;
            cases.push(matmul_case(seed, no, dtype, rows, 40, 96, &kinds));
        }
    }
    cases
}

/// Jobs of different dtypes and shapes in one MatMul op (as a layer's r/k/v and LoRA downs).
fn mixed_matmul_case(seed: u64, case_no: u64, (n_seq, n_tok): (usize, usize)) -> Case {
    let mut b = Builder::new(seed, case_no, shape(n_seq, n_tok));
    let rows = n_seq * n_tok;
    let x = b.input("x", 256, -1.0, 1.0);
    let mut jobs = Vec::new();
    let mut outputs = Vec::new();
    let specs = [
        (DType::Q4K, 128, Act::None, false),
        (DType::Q8_0, 64, Act::Sigmoid, true),
        (DType::F16, 32, Act::Tanh, false),
        (DType::Q6K, 256, Act::None, true),
        (DType::BF16, 16, Act::Decay, false),
    ];
    for (j, (dtype, m, act, accumulate)) in specs.into_iter().enumerate() {
        let bytes = random_blocks(&mut b.rng, dtype, m * 256);
        let weight = b.weight(&format!("w{j}"), tensor(dtype, vec![m, 256], bytes));
        let o = if accumulate {
            b.input(&format!("y{j}"), m, -1.0, 1.0)
        } else {
            b.buffer(&format!("y{j}"), m, false)
        };
        jobs.push(MatJob {
            weight,
            x,
            out: o,
            bias: None,
            act,
            accumulate,
        });
        let path = Path::MatMul {
            dtype,
            rows,
            k: 256,
        };
        outputs.push(out(o, &format!("y{j} {dtype} m={m} {act:?}"), path));
    }
    b.ops.push(Op::MatMul { jobs });
    let last = Path::MatMul {
        dtype: DType::Q4K,
        rows,
        k: 256,
    };
    b.finish(
        format!("matmul mixed dtypes rows={n_seq}x{n_tok}"),
        StateLayout::default(),
        outputs,
        last,
    )
}

/// The channel mix: `h = relu(W1 · x)²` then `y += W2 · h` (Q4_K, no bias: at batch 1 this is
/// rwkv-cuda's zero-skipping product).
fn channel_mix_case(seed: u64, case_no: u64, (n_seq, n_tok): (usize, usize)) -> Case {
    let mut b = Builder::new(seed, case_no, shape(n_seq, n_tok));
    let rows = n_seq * n_tok;
    let (c, f) = (256, 512);
    let x = b.input("x", c, -1.0, 1.0);
    let y = b.input("y", c, -1.0, 1.0);
    let h = b.buffer("h", f, false);
    let key = random_blocks(&mut b.rng, DType::F16, f * c);
    let key = b.weight("ffn.key", tensor(DType::F16, vec![f, c], key));
    let value = random_blocks(&mut b.rng, DType::Q4K, c * f);
    let value = b.weight("ffn.value", tensor(DType::Q4K, vec![c, f], value));
    let job = |weight, x, out, act, accumulate| MatJob {
        weight,
        x,
        out,
        bias: None,
        act,
        accumulate,
    };
    b.ops.push(Op::MatMul {
        jobs: vec![job(key, x, h, Act::ReluSq, false)],
    });
    b.ops.push(Op::MatMul {
        jobs: vec![job(value, h, y, Act::None, true)],
    });
    let h_path = Path::MatMul {
        dtype: DType::F16,
        rows,
        k: c,
    };
    let y_path = Path::MatMul {
        dtype: DType::Q4K,
        rows,
        k: f,
    };
    b.finish(
        format!("channel mix F16 relu² → Q4_K += rows={n_seq}x{n_tok}"),
        StateLayout::default(),
        vec![out(h, "h", h_path), out(y, "y", y_path)],
        y_path,
    )
}

/// One Wkv7 op over two heads of size `n` at `layer` of a two-layer state.
fn wkv7_case(
    seed: u64,
    case_no: u64,
    n: usize,
    (n_seq, n_tok): (usize, usize),
    with_v_mix: bool,
    layer: usize,
) -> Case {
    let mut b = Builder::new(seed, case_no, shape(n_seq, n_tok));
    let c = 2 * n;
    let r = b.input("r", c, -1.0, 1.0);
    // Decays as the model's Act::Decay makes them, in (0.545, 1).
    let w = b.input("w", c, 0.55, 1.0);
    let k = b.input("k", c, -1.0, 1.0);
    let v = b.input("v", c, -1.0, 1.0);
    let a = b.input("a", c, 0.0, 1.0);
    let g = b.input("g", c, -1.0, 1.0);
    // With a mix, v_first is an input from layer 0; without, the op writes it.
    let v_first = if with_v_mix {
        b.input("v_first", c, -1.0, 1.0)
    } else {
        b.buffer("v_first", c, false)
    };
    let v_mix = with_v_mix.then(|| b.input("v_mix", c, 0.0, 1.0));
    let k_k = b.f32_weight("k_k", vec![c], 0.5, 1.5);
    let k_a = b.f32_weight("k_a", vec![c], 0.0, 1.0);
    let r_k = b.f32_weight("r_k", vec![c], -0.5, 0.5);
    let ln_x_w = b.f32_weight("ln_x.w", vec![c], 0.5, 1.5);
    let ln_x_b = b.f32_weight("ln_x.b", vec![c], -0.2, 0.2);
    let o = b.buffer("out", c, false);
    b.ops.push(Op::Wkv7(Wkv7Args {
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
        // RWKV-7's GroupNorm epsilon: 1e-5 · head_size².
        gn_eps: 1e-5 * (n * n) as f32,
        out: o,
    }));
    let mut outputs = vec![out(o, "out", Path::Wkv)];
    if !with_v_mix {
        outputs.push(out(v_first, "v_first", Path::Copy));
    }
    let mix = if with_v_mix { "v_mix" } else { "no v_mix" };
    b.finish(
        format!("wkv7 N={n} C={c} {mix} layer={layer} rows={n_seq}x{n_tok}"),
        StateLayout::matrix_state(2, c, n),
        outputs,
        Path::Wkv,
    )
}

fn wkv7_cases(seed: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    let full = full_sweep();
    let shapes = [(3, 1), (2, 2), (2, 17), (2, 40)];
    for (ni, n) in [16, 32, 64].into_iter().enumerate() {
        for (ti, rows) in shapes.into_iter().enumerate() {
            // v_mix alternates so that each head size and each token count meets both (every
            // combination with RWKV_OPS_FULL=1).
            let mixes: &[bool] = if full {
                &[false, true]
            } else if (ni + ti) % 2 == 0 {
                &[true]
            } else {
                &[false]
            };
            for &with_v_mix in mixes {
                let no = 600 + (ni * 10 + ti) as u64 * 2 + with_v_mix as u64;
                cases.push(wkv7_case(seed, no, n, rows, with_v_mix, ti % 2));
            }
        }
    }
    cases
}

/// The head: last rows of each sequence, their LayerNorm and the output product on
/// one-row-per-sequence buffers.
fn last_rows_case(seed: u64, case_no: u64, (n_seq, n_tok): (usize, usize)) -> Case {
    let mut b = Builder::new(seed, case_no, shape(n_seq, n_tok));
    let c = 256;
    let vocab_out = 136;
    let x = b.input("x", c, -1.0, 1.0);
    let last = b.buffer("last", c, true);
    b.ops.push(Op::LastRows { x, out: last });
    let w = b.f32_weight("ln_out.w", vec![c], 0.5, 1.5);
    let bias = b.f32_weight("ln_out.b", vec![c], -0.5, 0.5);
    b.ops.push(Op::LayerNorm {
        x: last,
        w,
        b: bias,
        out: last,
        eps: 1e-5,
    });
    let head = random_blocks(&mut b.rng, DType::F16, vocab_out * c);
    let head = b.weight("head", tensor(DType::F16, vec![vocab_out, c], head));
    let logits = b.buffer("logits", vocab_out, true);
    b.ops.push(Op::MatMul {
        jobs: vec![MatJob {
            weight: head,
            x: last,
            out: logits,
            bias: None,
            act: Act::None,
            accumulate: false,
        }],
    });
    let path = Path::MatMul {
        dtype: DType::F16,
        rows: n_seq,
        k: c,
    };
    b.finish(
        format!("last_rows + layer_norm + head rows={n_seq}x{n_tok}"),
        StateLayout::default(),
        vec![
            out(last, "last (normed)", Path::Elementwise),
            out(logits, "logits", path),
        ],
        path,
    )
}

// ---------------------------------------------------------------------------------------------
// Running and comparing

/// What a backend produced for a case: each compared buffer, then each slot's state.
struct Produced {
    outputs: Vec<Vec<f32>>,
    states: Vec<Vec<f32>>,
}

/// Runs `case` on `backend`: uploads its weights, then once per compared buffer compiles the
/// plan with that buffer as the logits, writes the initial states and steps; reads every slot
/// back after the last step (every step starts from the same states, so they are the same).
fn produce(case: &Case, backend: &mut dyn Backend) -> rwkv_core::Result<Produced> {
    for (i, (name, t)) in case.weights.iter().enumerate() {
        backend.upload_weight(i, name, t)?;
    }
    let len = case.state_len();
    backend.alloc_states(case.initial.len(), len)?;
    let mut outputs = Vec::new();
    for o in &case.outputs {
        let plan = case.plan(o.buf);
        let id = backend.compile(&plan)?;
        for (slot, values) in case.initial.iter().enumerate() {
            backend.write_state(slot, values)?;
        }
        let mut values = vec![f32::NAN; plan.rows_of(o.buf) * plan.buffers[o.buf].width];
        backend.execute(
            id,
            &case.tokens,
            &case.slots,
            StepOutput::Logits(&mut values),
        )?;
        outputs.push(values);
    }
    let mut states = Vec::new();
    for slot in 0..case.initial.len() {
        let mut values = vec![f32::NAN; len];
        backend.read_state(slot, &mut values)?;
        states.push(values);
    }
    Ok(Produced { outputs, states })
}

/// Max |Δ| and ‖Δ‖/‖ref‖ (NaN or ∞ anywhere reads as an infinite error).
#[derive(Debug, Clone, Copy, Default)]
struct Diff {
    max_abs: f64,
    rel_l2: f64,
    /// max |ref|, the scale of `max_abs`.
    ref_max: f64,
}

fn diff(got: &[f32], want: &[f32]) -> Diff {
    assert_eq!(got.len(), want.len(), "compared lengths");
    let (mut d2, mut r2, mut max_abs, mut ref_max) = (0f64, 0f64, 0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        let d = (g as f64 - w as f64).abs();
        let d = if d.is_finite() { d } else { f64::INFINITY };
        d2 += d * d;
        r2 += (w as f64) * (w as f64);
        max_abs = max_abs.max(d);
        ref_max = ref_max.max((w as f64).abs());
    }
    let rel_l2 = if r2 > 0.0 {
        (d2 / r2).sqrt()
    } else if d2 == 0.0 {
        0.0
    } else {
        f64::INFINITY
    };
    Diff {
        max_abs,
        rel_l2,
        ref_max,
    }
}

/// Whether `d` is within the relative bound `tol` (and its max within 4× that of max |ref|).
fn within(d: &Diff, tol: f64) -> bool {
    d.rel_l2 <= tol && d.max_abs <= 4.0 * tol * d.ref_max
}

/// The worst part of the states: each (slot, layer, part) compared on its own so that a small
/// updated register is not hidden among untouched values.
fn state_diff(case: &Case, got: &[Vec<f32>], want: &[Vec<f32>]) -> (Diff, String) {
    let mut worst = (Diff::default(), String::from("-"));
    let mut consider = |d: Diff, what: String| {
        if d.rel_l2 > worst.0.rel_l2 || d.max_abs > worst.0.max_abs && d.rel_l2 >= worst.0.rel_l2 {
            worst = (d, what);
        }
    };
    for (slot, (g, w)) in got.iter().zip(want).enumerate() {
        if case.state.is_empty() {
            consider(diff(g, w), format!("slot {slot}"));
            continue;
        }
        for layer in 0..case.state.n_layer {
            for &part in &case.state.parts {
                let range = case.state.range(layer, part).expect("part of the layout");
                let what = format!("slot {slot} layer {layer} {part:?}");
                consider(diff(&g[range.clone()], &w[range]), what);
            }
        }
    }
    worst
}

/// Sanity of the reference itself: finite outputs, the slot no sequence names left exactly as
/// written, and (for plans with state ops) the named slots' states moved.
fn check_reference(case: &Case, want: &Produced) -> Result<(), String> {
    if !want.outputs.iter().flatten().all(|v| v.is_finite()) {
        return Err("outputs are not finite".into());
    }
    for (slot, (state, initial)) in want.states.iter().zip(&case.initial).enumerate() {
        let named = case.slots.contains(&slot);
        if !named && state != initial {
            return Err(format!("slot {slot}, named by no sequence, changed"));
        }
        if named && !case.state.is_empty() && state == initial {
            return Err(format!("slot {slot}'s state did not change"));
        }
    }
    Ok(())
}

/// Prints the skip line every suite uses (a shared helper will replace this local one).
fn skipped(backend: &str, why: &str) {
    println!("SKIPPED: backend_ops: {backend}: {why}");
}

/// A backend compared with the CPU.
struct Target {
    choice: BackendChoice,
    /// Whether its products may take f16 operands (rwkv-wgpu only with shader-f16 or
    /// cooperative matrices; without them every path is f32 and the f32 bounds hold).
    f16_products: bool,
}

/// The backends compared with the CPU: those the router opens now. With RWKV_REQUIRE_GPU=1 a
/// CUDA backend that cannot open fails the test.
fn other_backends() -> Vec<Target> {
    let require = std::env::var("RWKV_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let mut found = Vec::new();
    for choice in [BackendChoice::Cuda, BackendChoice::WebGpu] {
        match router::open(choice) {
            Ok(o) => {
                let info = o.backend.info();
                let has = |key: &str| info.properties.iter().any(|(k, v)| k == key && v == "true");
                let f16_products =
                    choice == BackendChoice::Cuda || has("shader_f16") || has("cooperative_matrix");
                println!(
                    "backend_ops: {}: {} (f16-operand products possible: {f16_products})",
                    choice.name(),
                    o.why
                );
                found.push(Target {
                    choice,
                    f16_products,
                });
            }
            Err(e) if require && choice == BackendChoice::Cuda => {
                panic!("RWKV_REQUIRE_GPU=1 but {e}")
            }
            Err(e) => skipped(choice.name(), &e.to_string()),
        }
    }
    found
}

fn fmt(d: &Diff) -> String {
    format!(
        "max|Δ| {:.2e} rel {:.2e} (max|ref| {:.2e})",
        d.max_abs, d.rel_l2, d.ref_max
    )
}

/// Runs every case on the CPU and on every other backend present, prints one line per compared
/// buffer and per state, and fails after all were printed when any exceeds its bound.
fn run_suite(suite: &str, cases: Vec<Case>) {
    let started = std::time::Instant::now();
    let others = other_backends();
    let mut failures = Vec::new();
    for case in &cases {
        let mut cpu = router::open(BackendChoice::Cpu).expect("cpu").backend;
        let want = match produce(case, cpu.as_mut()) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{}: cpu reference: {e}", case.name));
                continue;
            }
        };
        if let Err(why) = check_reference(case, &want) {
            failures.push(format!("{}: cpu reference: {why}", case.name));
        }
        for target in &others {
            let name = target.choice.name();
            let mut backend = match router::open(target.choice) {
                Ok(o) => o.backend,
                Err(e) => {
                    failures.push(format!("{}: {name}: open: {e}", case.name));
                    continue;
                }
            };
            let got = match produce(case, backend.as_mut()) {
                Ok(p) => p,
                Err(e)
                    if e.backend_error_kind() == Some(rwkv_core::BackendErrorKind::Unsupported) =>
                {
                    skipped(name, &format!("{}: {e}", case.name));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{}: {name}: {e}", case.name));
                    continue;
                }
            };
            for (o, (g, w)) in case
                .outputs
                .iter()
                .zip(got.outputs.iter().zip(&want.outputs))
            {
                let d = diff(g, w);
                let (tol, why) = tolerance(target, o.path);
                let ok = within(&d, tol);
                let line = format!(
                    "{suite}: {name:6} {} | {}: {} bound {tol:.0e}{}",
                    case.name,
                    o.label,
                    fmt(&d),
                    if ok {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
                println!("{}{line}", if ok { "" } else { "FAIL " });
                if !ok {
                    failures.push(line);
                }
            }
            if !case.state.is_empty() {
                let (d, part) = state_diff(case, &got.states, &want.states);
                let (tol, why) = tolerance(target, case.state_path);
                let ok = within(&d, tol);
                let line = format!(
                    "{suite}: {name:6} {} | state (worst: {part}): {} bound {tol:.0e}{}",
                    case.name,
                    fmt(&d),
                    if ok {
                        String::new()
                    } else {
                        format!(" ({why})")
                    }
                );
                println!("{}{line}", if ok { "" } else { "FAIL " });
                if !ok {
                    failures.push(line);
                }
            }
        }
    }
    println!(
        "{suite}: {} cases on cpu + [{}] in {:.1} s",
        cases.len(),
        others
            .iter()
            .map(|t| t.choice.name())
            .collect::<Vec<_>>()
            .join(", "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{suite}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn embed_every_dtype() {
    run_suite("embed", embed_cases(seed()));
}

#[test]
fn layer_norm_in_place_and_not() {
    run_suite("layer_norm", layer_norm_cases(seed()));
}

#[test]
fn token_shift_att_and_ffn_with_registers() {
    run_suite("token_shift", token_shift_cases(seed()));
}

#[test]
fn matmul_every_dtype_act_bias_accumulate_and_row_count() {
    let seed = seed();
    let mut cases = matmul_cases(seed);
    for (i, rows) in [(1, 1), (2, 4), (1, 32)].into_iter().enumerate() {
        cases.push(mixed_matmul_case(seed, 700 + i as u64, rows));
        cases.push(channel_mix_case(seed, 710 + i as u64, rows));
    }
    run_suite("matmul", cases);
}

#[test]
fn wkv7_head_sizes_tokens_and_v_mix() {
    run_suite("wkv7", wkv7_cases(seed()));
}

#[test]
fn last_rows_and_head() {
    let seed = seed();
    let cases = [(1, 1), (3, 1), (3, 5), (2, 40)]
        .into_iter()
        .enumerate()
        .map(|(i, rows)| last_rows_case(seed, 800 + i as u64, rows))
        .collect();
    run_suite("last_rows", cases);
}
