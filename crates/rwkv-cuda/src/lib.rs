//! CUDA backend: RWKV-7 on NVIDIA GPUs.
//!
//! The driver and NVRTC are loaded at run time (cudarc, dynamic loading), so the crate builds with
//! no CUDA toolkit and [`CudaBackend::new`] fails with a one-line reason on machines without one.
//! Kernels (`kernels/*.cu`) are compiled by NVRTC for the device's own architecture and the CUBIN
//! is cached on disk (`~/.cache/rwkv-hybrid/cuda`). Each compiled plan becomes a fixed list of
//! launches over device buffers, captured once in a CUDA graph and replayed every step; token ids
//! and slots are copied into fixed device buffers before each replay.
//!
//! Fusions over the plan's ops: Embed+LayerNorm(ln0), LayerNorm+TokenShift, LastRows+LayerNorm;
//! each MatMul op is one launch (a job table), with bias, activation and residual accumulation in
//! the epilogue; Wkv7 is one kernel for decode (three for prefill).

// `x % n == 0` rather than `is_multiple_of` (Rust 1.87): the workspace's MSRV is 1.85.
#![allow(clippy::manual_is_multiple_of)]

mod gpu;
mod repack;

use std::collections::HashMap;

use cudarc::driver::{result as cu, sys};
use rwkv_core::backend::{
    Act, Backend, BufId, DeviceInfo, MatJob, Op, Plan, PlanFacts, PlanId, ShiftKind, StatePart,
    StepOutput, WeightId, WeightMeta, Wkv7Args,
};
use rwkv_core::model::Tensor;
use rwkv_core::{BackendErrorKind, Error, Result};

use gpu::{err, ArgList, DevBuf, Gpu, Graph, Launch};
use repack::GpuDType;

/// Lists the CUDA devices, or says why there are none (no driver, no NVRTC, no device).
pub fn probe() -> std::result::Result<Vec<DeviceInfo>, String> {
    std::panic::catch_unwind(probe_inner)
        .unwrap_or_else(|_| Err("the CUDA driver library misbehaved (panic while probing)".into()))
}

fn probe_inner() -> std::result::Result<Vec<DeviceInfo>, String> {
    gpu::libraries_present()?;
    cu::init().map_err(|e| format!("no CUDA device: cuInit failed ({:?})", e.0))?;
    let count = cu::device::get_count().map_err(|e| format!("cannot count devices ({:?})", e.0))?;
    if count <= 0 {
        return Err("no CUDA device: the driver reports 0 devices".into());
    }
    let mut out = Vec::new();
    for i in 0..count {
        let dev = cu::device::get(i).map_err(|e| format!("device {i}: {:?}", e.0))?;
        let name = cu::device::get_name(dev).unwrap_or_else(|_| "unknown".into());
        let a = |x| gpu::attr(dev, x).unwrap_or(0);
        let major = a(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
        let minor = a(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        let sms = a(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
        // SAFETY: dev is a valid device handle.
        let mem = unsafe { cu::device::total_mem(dev) }.unwrap_or(0);
        out.push(DeviceInfo {
            backend: "cuda".into(),
            device: name,
            properties: vec![
                ("index".into(), i.to_string()),
                ("compute_capability".into(), format!("{major}.{minor}")),
                ("multiprocessors".into(), sms.to_string()),
                ("memory".into(), format!("{} MiB", mem >> 20)),
            ],
        });
    }
    Ok(out)
}

/// Compiles the kernels for `arch` (e.g. "sm_90") with the local NVRTC into the disk cache, so a
/// machine with that GPU starts without compiling. Needs no GPU. Returns the cache file.
#[doc(hidden)]
pub fn precompile_kernels(arch: &str) -> Result<std::path::PathBuf> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(err("no NVRTC: libnvrtc.so.13 could not be loaded"));
    }
    let src = gpu::kernel_source();
    let path = gpu::cache_path(&src, arch, gpu::nvrtc_version())
        .ok_or_else(|| err("no cache directory (set RWKV_CUDA_CACHE)"))?;
    let image = gpu::compile(&src, arch)?;
    if !gpu::store_cache(&path, &image) {
        return Err(err(format!("cannot write {}", path.display())));
    }
    Ok(path)
}

enum GpuWeight {
    Matrix {
        dtype: GpuDType,
        rows: usize,
        cols: usize,
        q: DevBuf,
        m: DevBuf,
    },
    Vector {
        len: usize,
        buf: DevBuf,
    },
}

/// A Q4_K matrix rearranged by input column for the zero-skipping batch-1 product (sparse.cu):
/// quants `[cols][rows/8]` u32 words, sub-block scale/min `[cols/32][rows]` u16, block d/dmin
/// `[cols/256][rows]` u32. Built at the first batch-1 plan that can use it; the row layout stays
/// for batches and prefill.
struct SparseCols {
    nib: DevBuf,
    sc: DevBuf,
    dd: DevBuf,
    /// Partial sums of the kernel's column blocks, `[blocks][rows]` (enough for one group per
    /// warp), and per 256-row chunk the count of blocks done (zero between steps).
    scratch: DevBuf,
    counters: DevBuf,
}

struct CompiledPlan {
    plan: Plan,
    bufs: Vec<DevBuf>,
    tokens: DevBuf,
    slots: DevBuf,
    argmax: DevBuf,
    wkv_kk: DevBuf,
    wkv_b: DevBuf,
    wkv_bonus: DevBuf,
    tables: Vec<DevBuf>,
    launches: Vec<Launch>,
    graph: Option<Graph>,
    /// `CudaBackend::state_gen` the launches were built for (0: not built).
    built_gen: u64,
    facts: PlanFacts,
}

/// The CUDA backend. See the crate docs.
pub struct CudaBackend {
    weights: Vec<Option<GpuWeight>>,
    metas: Vec<WeightMeta>,
    /// Column layouts of the matrices whose batch-1 products skip zero inputs, by weight id.
    sparse: HashMap<WeightId, SparseCols>,
    states: Option<DevBuf>,
    n_slots: usize,
    state_len: usize,
    state_gen: u64,
    plans: Vec<CompiledPlan>,
    use_graphs: bool,
    /// Last: dropped after every buffer, with the context still alive.
    gpu: Gpu,
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        self.plans.clear();
        self.sparse.clear();
        self.weights.clear();
        self.states = None;
    }
}

/// mma.cu tile sizes.
const MM_BM: usize = 64;
const MM_BN: usize = 64;
/// Activation rows from which a MatMul uses the tensor-core kernel.
/// Default of [`mma_min_rows`]: from this many activation rows on, matrix products take the
/// tensor-core kernel (f16 operands, f32 accumulation). The SIMT matvec kernels keep R ≤ 8 rows in
/// registers and slow down past 4: at 8 sequences the tensor cores gave 2,395 vs 1,191 tok/s (1.5B)
/// and 752 vs 191 (7.2B) on the H100.
#[doc(hidden)]
pub const MMA_MIN_ROWS: usize = 5;

/// `RWKV_CUDA_MMA_MIN_ROWS` overrides [`MMA_MIN_ROWS`] (for measurements).
fn mma_min_rows() -> usize {
    std::env::var("RWKV_CUDA_MMA_MIN_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MMA_MIN_ROWS)
}

fn act_code(a: Act) -> i32 {
    match a {
        Act::None => 0,
        Act::Tanh => 1,
        Act::Sigmoid => 2,
        Act::ReluSq => 3,
        Act::Decay => 4,
    }
}

/// Threads of a row kernel over `n` values (layer norm, token shift): about 4 values per thread;
/// the kernels keep at most 8 per thread in registers (LN_MAXV).
fn ln_threads(n: usize) -> Result<u32> {
    let t = n.div_ceil(4).div_ceil(32).clamp(1, 32) * 32;
    if n > 8 * t {
        return Err(err(format!(
            "row width {n} exceeds the row kernels' limit of 8192"
        )));
    }
    Ok(t as u32)
}

/// Whether the plan reads or writes slot states.
fn uses_state(plan: &Plan) -> bool {
    plan.ops
        .iter()
        .any(|op| matches!(op, Op::TokenShift { .. } | Op::Wkv7(_)))
}

fn invalid(what: impl Into<String>) -> Error {
    Error::backend_kind("cuda", BackendErrorKind::InvalidArgument, what)
}

fn i32_of(v: usize, what: &str) -> Result<i32> {
    i32::try_from(v).map_err(|_| err(format!("{what} {v} too large for the kernels")))
}

impl CudaBackend {
    /// Opens CUDA device `device_index`. Fails with `Error::Backend` saying why: no driver, no
    /// NVRTC, no such device, too little memory, kernels failed to compile.
    pub fn new(device_index: usize) -> Result<CudaBackend> {
        let gpu = std::panic::catch_unwind(|| Gpu::open(device_index)).unwrap_or_else(|_| {
            Err(err(
                "the CUDA driver library misbehaved (panic while opening the device)",
            ))
        })?;
        let use_graphs = std::env::var("RWKV_CUDA_GRAPHS")
            .map(|v| v != "0")
            .unwrap_or(true);
        Ok(CudaBackend {
            weights: Vec::new(),
            metas: Vec::new(),
            sparse: HashMap::new(),
            states: None,
            n_slots: 0,
            state_len: 0,
            state_gen: 0,
            plans: Vec::new(),
            use_graphs,
            gpu,
        })
    }

    /// Times each launch of a compiled plan on its own (after one normal step with these inputs):
    /// (kernel and job shapes, milliseconds). For benchmarks; states of `slots` advance.
    pub fn profile_step(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<(String, f32)>> {
        self.execute(plan, tokens, slots, StepOutput::None)?;
        let cp = &self.plans[plan.0];
        self.gpu.profile(&cp.launches)
    }

    /// How the kernels were obtained (compiled now / loaded from the disk cache).
    pub fn kernel_cache(&self) -> &str {
        &self.gpu.kernel_cache
    }

    fn matrix(&self, id: WeightId) -> Result<(GpuDType, usize, usize, u64, u64)> {
        match self.weights.get(id).and_then(|w| w.as_ref()) {
            Some(GpuWeight::Matrix {
                dtype,
                rows,
                cols,
                q,
                m,
            }) => Ok((*dtype, *rows, *cols, q.ptr, m.ptr)),
            Some(_) => Err(err(format!("weight {id} is a vector, a matrix is needed"))),
            None => Err(err(format!("weight {id} was not uploaded"))),
        }
    }

    /// Device address of state `slot`, after checking the slot and a host buffer of `len` values.
    fn slot_ptr(&self, what: &str, slot: usize, len: usize) -> Result<u64> {
        let st = self
            .states
            .as_ref()
            .ok_or_else(|| err(format!("{what}: no states allocated")))?;
        if slot >= self.n_slots || len != self.state_len {
            return Err(invalid(format!(
                "{what}: slot {slot} of {} or length {len} != {}",
                self.n_slots, self.state_len
            )));
        }
        Ok(st.ptr + (slot * self.state_len * 4) as u64)
    }

    /// Builds the column layouts (sparse.cu) of the matrices whose batch-1 products in `plan`
    /// can skip zero inputs. Skipped, and the row layout used, when the device lacks the memory.
    fn ensure_sparse(&mut self, plan: &Plan) -> Result<()> {
        if plan.shape.rows() != 1 || sparse_mode().is_none() {
            return Ok(());
        }
        let mut built = false;
        for op in &plan.ops {
            let Op::MatMul { jobs } = op else { continue };
            for j in jobs {
                if self.sparse.contains_key(&j.weight) {
                    continue;
                }
                let (dtype, out_dim, in_dim, q, m) = self.matrix(j.weight)?;
                if !sparse_eligible(plan, j, dtype, in_dim, out_dim) {
                    continue;
                }
                let nib = in_dim * out_dim / 2;
                let sc = in_dim / 32 * out_dim * 2;
                let dd = in_dim / 256 * out_dim * 4;
                // Keep a quarter of the free memory for plans and states.
                if (nib + sc + dd) * 4 / 3 > self.gpu.free_mem() {
                    continue;
                }
                let (max_blocks, chunks) = sparse_grid(in_dim, out_dim, 1);
                let cols = SparseCols {
                    nib: DevBuf::alloc(nib)?,
                    sc: DevBuf::alloc(sc)?,
                    dd: DevBuf::alloc(dd)?,
                    scratch: DevBuf::alloc(max_blocks * out_dim * 4)?,
                    counters: DevBuf::zeroed(chunks * 4)?,
                };
                let sms = self.gpu.sm_count.max(1) as usize;
                let l = Launch {
                    name: "q4k_transpose_kernel".into(),
                    func: self.gpu.func("q4k_transpose_kernel")?,
                    grid: ((nib / 4).div_ceil(256).min(sms * 16) as u32, 1, 1),
                    block: (256, 1, 1),
                    smem: 0,
                    args: ArgList::default()
                        .ptr(q)
                        .ptr(m)
                        .i32(i32_of(out_dim, "rows")?)
                        .i32(i32_of(in_dim, "cols")?)
                        .ptr(cols.nib.ptr)
                        .ptr(cols.sc.ptr)
                        .ptr(cols.dd.ptr)
                        .0,
                };
                self.gpu.launch(&l)?;
                self.sparse.insert(j.weight, cols);
                built = true;
            }
        }
        if built {
            self.gpu.sync()?;
        }
        Ok(())
    }

    /// Builds the launch list of plan `pi` for the current state buffer.
    fn build(&mut self, pi: usize) -> Result<()> {
        let state_ptr = self.states.as_ref().map(|s| s.ptr).unwrap_or(0);
        let state_len = self.state_len;
        let cp = &self.plans[pi];
        let plan = &cp.plan;
        let shape = plan.shape;
        let rows = shape.rows();
        let n_tok = shape.n_tok;
        let bp = |b: BufId| -> Result<u64> {
            cp.bufs
                .get(b)
                .map(|d| d.ptr)
                .ok_or_else(|| err(format!("plan names buffer {b}, which it does not declare")))
        };
        let width = |b: BufId| plan.buffers.get(b).map(|d| d.width).unwrap_or(0);
        let rows_of = |b: BufId| plan.rows_of(b);

        // Layer geometry from the plan's state layout (validated at compile).
        let head = plan.state.head_size;
        let layer_len = plan.state.layer_len();
        let matrix_offset = plan.state.part_offset(StatePart::WkvMatrix);
        let slots_ptr = cp.slots.ptr;

        let mut launches: Vec<Launch> = Vec::new();
        let tables: Vec<DevBuf> = Vec::new();
        let gpu = &mut self.gpu;
        let ops = &plan.ops;
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                Op::Embed { table, out } => {
                    let (dt, vocab, cols, q, m) = {
                        match self.weights.get(*table).and_then(|w| w.as_ref()) {
                            Some(GpuWeight::Matrix {
                                dtype,
                                rows,
                                cols,
                                q,
                                m,
                            }) => (*dtype, *rows, *cols, q.ptr, m.ptr),
                            _ => return Err(err("Embed: the table must be an uploaded matrix")),
                        }
                    };
                    let _ = vocab;
                    if width(*out) != cols || rows_of(*out) != rows {
                        return Err(err("Embed: output buffer shape disagrees with the table"));
                    }
                    let mut ln = (0u64, 0u64, 0f32);
                    let mut step = 1;
                    if let Some(Op::LayerNorm {
                        x,
                        w,
                        b,
                        out: o2,
                        eps,
                    }) = ops.get(i + 1)
                    {
                        if x == out && o2 == out {
                            ln = (
                                self_vec(&self.weights, *w, cols)?,
                                self_vec(&self.weights, *b, cols)?,
                                *eps,
                            );
                            step = 2;
                        }
                    }
                    let f = gpu.func("embed_kernel")?;
                    launches.push(Launch {
                        name: "embed_kernel".to_string(),
                        func: f,
                        grid: (rows as u32, 1, 1),
                        block: (ln_threads(cols)?, 1, 1),
                        smem: 0,
                        args: ArgList::default()
                            .ptr(cp.tokens.ptr)
                            .i32(dt as i32)
                            .ptr(q)
                            .ptr(m)
                            .i32(i32_of(cols, "width")?)
                            .ptr(bp(*out)?)
                            .ptr(ln.0)
                            .ptr(ln.1)
                            .f32(ln.2)
                            .0,
                    });
                    i += step;
                }
                Op::LayerNorm { x, w, b, out, eps } => {
                    let n = width(*x);
                    if width(*out) != n || rows_of(*x) != rows_of(*out) {
                        return Err(err("LayerNorm: input and output shapes differ"));
                    }
                    let wp = self_vec(&self.weights, *w, n)?;
                    let bpp = self_vec(&self.weights, *b, n)?;
                    if let Some(Op::TokenShift {
                        x: sx,
                        layer,
                        kind,
                        mixes,
                    }) = ops.get(i + 1)
                    {
                        if sx == out && x != out && rows_of(*x) == rows {
                            push_shift(
                                gpu,
                                &mut launches,
                                &self.weights,
                                cp,
                                bp(*x)?,
                                bp(*out)?,
                                (wp, bpp, *eps),
                                n,
                                *layer,
                                *kind,
                                mixes,
                                state_ptr,
                                state_len,
                                slots_ptr,
                                &bp,
                                &width,
                            )?;
                            i += 2;
                            continue;
                        }
                    }
                    let f = gpu.func("layernorm_kernel")?;
                    launches.push(Launch {
                        name: "layernorm_kernel".to_string(),
                        func: f,
                        grid: (rows_of(*x) as u32, 1, 1),
                        block: (ln_threads(n)?, 1, 1),
                        smem: 0,
                        args: ArgList::default()
                            .ptr(bp(*x)?)
                            .ptr(bp(*out)?)
                            .ptr(wp)
                            .ptr(bpp)
                            .i32(i32_of(n, "width")?)
                            .f32(*eps)
                            .i32(1)
                            .i32(0)
                            .ptr(0)
                            .0,
                    });
                    i += 1;
                }
                Op::TokenShift {
                    x,
                    layer,
                    kind,
                    mixes,
                } => {
                    let n = width(*x);
                    if rows_of(*x) != rows {
                        return Err(err("TokenShift: input must have one row per token"));
                    }
                    push_shift(
                        gpu,
                        &mut launches,
                        &self.weights,
                        cp,
                        bp(*x)?,
                        bp(*x)?,
                        (0, 0, 0.0),
                        n,
                        *layer,
                        *kind,
                        mixes,
                        state_ptr,
                        state_len,
                        slots_ptr,
                        &bp,
                        &width,
                    )?;
                    i += 1;
                }
                Op::MatMul { jobs } => {
                    // Independent MatMul ops that follow (reading nothing this launch writes, and
                    // writing nothing it touches) join the same launch.
                    let mut jobs: Vec<MatJob> = jobs.clone();
                    while let Some(Op::MatMul { jobs: next }) = ops.get(i + 1) {
                        let writes: Vec<BufId> = jobs.iter().map(|j| j.out).collect();
                        let reads: Vec<BufId> = jobs.iter().map(|j| j.x).collect();
                        let independent = next.iter().all(|n| {
                            !writes.contains(&n.x)
                                && !writes.contains(&n.out)
                                && !reads.contains(&n.out)
                        });
                        let same_rows = jobs
                            .first()
                            .is_some_and(|f| next.iter().all(|n| rows_of(n.x) == rows_of(f.x)));
                        if !independent || !same_rows {
                            break;
                        }
                        jobs.extend(next.iter().cloned());
                        i += 1;
                    }
                    let jobs = &jobs;
                    let sms = gpu.sm_count.max(1) as usize;
                    push_matmul(
                        gpu,
                        &mut launches,
                        &self.weights,
                        &self.sparse,
                        plan,
                        jobs,
                        &bp,
                        sms,
                    )?;
                    i += 1;
                }
                Op::Wkv7(wa) => {
                    let Wkv7Args {
                        layer,
                        r,
                        w,
                        k,
                        v,
                        a,
                        g,
                        v_first,
                        v_mix,
                        out,
                        ..
                    } = wa;
                    let c = width(*r);
                    for bb in [*r, *w, *k, *v, *a, *g, *v_first, *out]
                        .iter()
                        .chain(v_mix.iter())
                    {
                        if width(*bb) != c || rows_of(*bb) != rows {
                            return Err(err("Wkv7: every input must be [rows, C]"));
                        }
                    }
                    if ![16, 32, 64, 128].contains(&head) || c % head != 0 {
                        return Err(err(format!(
                            "Wkv7: head size {head} is not supported (16, 32, 64, 128)"
                        )));
                    }
                    let h = c / head;
                    let s_off = layer * layer_len
                        + matrix_offset.ok_or_else(|| err("Wkv7: the state has no WKV matrix"))?;
                    let mut args: Vec<u8> = Vec::with_capacity(184);
                    let vm = match v_mix {
                        Some(b) => bp(*b)?,
                        None => 0,
                    };
                    for p in [
                        bp(*r)?,
                        bp(*w)?,
                        bp(*k)?,
                        bp(*v)?,
                        bp(*a)?,
                        bp(*g)?,
                        bp(*v_first)?,
                        vm,
                        self_vec(&self.weights, wa.k_k, c)?,
                        self_vec(&self.weights, wa.k_a, c)?,
                        self_vec(&self.weights, wa.r_k, c)?,
                        self_vec(&self.weights, wa.ln_x_w, c)?,
                        self_vec(&self.weights, wa.ln_x_b, c)?,
                        bp(*out)?,
                        state_ptr,
                        slots_ptr,
                        cp.wkv_kk.ptr,
                        cp.wkv_b.ptr,
                        cp.wkv_bonus.ptr,
                    ] {
                        args.extend_from_slice(&p.to_ne_bytes());
                    }
                    args.extend_from_slice(&(state_len as i64).to_ne_bytes());
                    args.extend_from_slice(&(s_off as i64).to_ne_bytes());
                    args.extend_from_slice(&i32_of(c, "width")?.to_ne_bytes());
                    args.extend_from_slice(&i32_of(n_tok, "tokens")?.to_ne_bytes());
                    args.extend_from_slice(&wa.gn_eps.to_ne_bytes());
                    args.resize(184, 0);
                    let wide = head.max(32) as u32;
                    if n_tok == 1 {
                        launches.push(Launch {
                            name: format!("wkv7_fused_{head}").to_string(),
                            func: gpu.func(&format!("wkv7_fused_{head}"))?,
                            grid: (h as u32, shape.n_seq as u32, 1),
                            // Four lanes per row of S (wkv7.cu).
                            block: (4 * head as u32, 1, 1),
                            smem: 0,
                            args: vec![args],
                        });
                    } else {
                        if cp.wkv_kk.bytes < rows * c * 4 || cp.wkv_bonus.bytes < rows * h * 4 {
                            return Err(err("Wkv7: scratch buffers too small"));
                        }
                        launches.push(Launch {
                            name: format!("wkv7_pre_{head}").to_string(),
                            func: gpu.func(&format!("wkv7_pre_{head}"))?,
                            grid: (h as u32, rows as u32, 1),
                            block: (wide, 1, 1),
                            smem: 0,
                            args: vec![args.clone()],
                        });
                        launches.push(Launch {
                            name: format!("wkv7_scan_{head}").to_string(),
                            func: gpu.func(&format!("wkv7_scan_{head}"))?,
                            // wkv7.cu's WKV_SCAN_ROWS rows of S per block.
                            grid: (h as u32, shape.n_seq as u32, (head / 16).max(1) as u32),
                            block: (64, 1, 1),
                            smem: 0,
                            args: vec![args.clone()],
                        });
                        launches.push(Launch {
                            name: format!("wkv7_post_{head}").to_string(),
                            func: gpu.func(&format!("wkv7_post_{head}"))?,
                            grid: (h as u32, rows as u32, 1),
                            block: (wide, 1, 1),
                            smem: 0,
                            args: vec![args],
                        });
                    }
                    i += 1;
                }
                Op::LastRows { x, out } => {
                    let n = width(*x);
                    if width(*out) != n || rows_of(*out) != shape.n_seq || rows_of(*x) != rows {
                        return Err(err("LastRows: shapes disagree"));
                    }
                    if let Some(Op::LayerNorm {
                        x: lx,
                        w,
                        b,
                        out: lo,
                        eps,
                    }) = ops.get(i + 1)
                    {
                        if lx == out && lo != out && width(*lo) == n && rows_of(*lo) == shape.n_seq
                        {
                            let f = gpu.func("layernorm_kernel")?;
                            launches.push(Launch {
                                name: "layernorm_kernel".to_string(),
                                func: f,
                                grid: (shape.n_seq as u32, 1, 1),
                                block: (ln_threads(n)?, 1, 1),
                                smem: 0,
                                args: ArgList::default()
                                    .ptr(bp(*x)?)
                                    .ptr(bp(*lo)?)
                                    .ptr(self_vec(&self.weights, *w, n)?)
                                    .ptr(self_vec(&self.weights, *b, n)?)
                                    .i32(i32_of(n, "width")?)
                                    .f32(*eps)
                                    .i32(i32_of(n_tok, "tokens")?)
                                    .i32(i32_of(n_tok - 1, "tokens")?)
                                    .ptr(bp(*out)?)
                                    .0,
                            });
                            i += 2;
                            continue;
                        }
                    }
                    let f = gpu.func("last_rows_kernel")?;
                    launches.push(Launch {
                        name: "last_rows_kernel".to_string(),
                        func: f,
                        grid: (shape.n_seq as u32, 1, 1),
                        block: (256, 1, 1),
                        smem: 0,
                        args: ArgList::default()
                            .ptr(bp(*x)?)
                            .ptr(bp(*out)?)
                            .i32(i32_of(n, "width")?)
                            .i32(i32_of(n_tok, "tokens")?)
                            .0,
                    });
                    i += 1;
                }
            }
        }
        let graph = if self.use_graphs && state_ptr != 0 {
            Some(self.gpu.capture(&launches)?)
        } else {
            None
        };
        let cp = &mut self.plans[pi];
        cp.launches = launches;
        cp.tables = tables;
        cp.graph = graph;
        cp.built_gen = if state_ptr != 0 { self.state_gen } else { 0 };
        Ok(())
    }
}

fn self_vec(weights: &[Option<GpuWeight>], id: WeightId, len: usize) -> Result<u64> {
    match weights.get(id).and_then(|w| w.as_ref()) {
        Some(GpuWeight::Vector { len: l, buf }) if *l == len => Ok(buf.ptr),
        Some(GpuWeight::Vector { len: l, .. }) => Err(err(format!(
            "weight {id} has {l} values, the op needs {len}"
        ))),
        Some(_) => Err(err(format!(
            "weight {id} is a matrix, the op needs a vector"
        ))),
        None => Err(err(format!("weight {id} was not uploaded"))),
    }
}

#[allow(clippy::too_many_arguments)]
fn push_shift(
    gpu: &mut Gpu,
    launches: &mut Vec<Launch>,
    weights: &[Option<GpuWeight>],
    cp: &CompiledPlan,
    x: u64,
    xn: u64,
    ln: (u64, u64, f32),
    n: usize,
    layer: usize,
    kind: ShiftKind,
    mixes: &[(WeightId, BufId)],
    state_ptr: u64,
    state_len: usize,
    slots_ptr: u64,
    bp: &dyn Fn(BufId) -> Result<u64>,
    width: &dyn Fn(BufId) -> usize,
) -> Result<()> {
    let plan = &cp.plan;
    let rows = plan.shape.rows();
    let n_tok = plan.shape.n_tok;
    if mixes.len() > 6 {
        return Err(err("TokenShift: at most 6 mixes"));
    }
    let register = plan
        .state
        .range(
            layer,
            match kind {
                ShiftKind::Ffn => StatePart::FfnShift,
                ShiftKind::Att => StatePart::AttShift,
            },
        )
        .filter(|r| r.end <= state_len || state_len == 0)
        .ok_or_else(|| err(format!("TokenShift: layer {layer} is beyond the state")))?;
    let mut sa: Vec<u8> = Vec::with_capacity(104);
    let mut outs = [0u64; 6];
    let mut mixp = [0u64; 6];
    for (j, (wid, ob)) in mixes.iter().enumerate() {
        if width(*ob) != n || plan.rows_of(*ob) != rows {
            return Err(err("TokenShift: output buffer shape"));
        }
        mixp[j] = self_vec(weights, *wid, n)?;
        outs[j] = bp(*ob)?;
    }
    for p in mixp.iter().chain(outs.iter()) {
        sa.extend_from_slice(&p.to_ne_bytes());
    }
    sa.extend_from_slice(&(mixes.len() as i32).to_ne_bytes());
    sa.resize(104, 0);
    let reg_off = register.start;
    let v = if n <= 2048 {
        2
    } else if n <= 4096 {
        4
    } else {
        8
    };
    if n > 8 * 1024 {
        return Err(err(format!("TokenShift: width {n} exceeds 8192")));
    }
    // Widths that are a multiple of 4, up to 4096 (every released model), take the float4
    // kernel, 8 values per thread.
    let (kname, per_thread) = if n % 4 == 0 && n <= 4096 && ln_shift_vec() {
        ("ln_shift_vec_kernel".to_string(), 8)
    } else {
        (format!("ln_shift{v}_kernel"), v)
    };
    let f = gpu.func(&kname)?;
    launches.push(Launch {
        name: kname,
        func: f,
        grid: (rows as u32, 1, 1),
        block: ((n.div_ceil(per_thread).div_ceil(32) * 32) as u32, 1, 1),
        smem: 0,
        args: ArgList::default()
            .ptr(x)
            .ptr(xn)
            .ptr(ln.0)
            .ptr(ln.1)
            .f32(ln.2)
            .i32(i32_of(n, "width")?)
            .i32(i32_of(n_tok, "tokens")?)
            .ptr(slots_ptr)
            .ptr(state_ptr)
            .i64(state_len as i64)
            .i64(reg_off as i64)
            .bytes(sa)
            .0,
    });
    if n_tok > 1 {
        let f = gpu.func("shift_store_kernel")?;
        launches.push(Launch {
            name: "shift_store_kernel".to_string(),
            func: f,
            grid: (plan.shape.n_seq as u32, 1, 1),
            block: (256, 1, 1),
            smem: 0,
            args: ArgList::default()
                .ptr(xn)
                .i32(i32_of(n, "width")?)
                .i32(i32_of(n_tok, "tokens")?)
                .ptr(slots_ptr)
                .ptr(state_ptr)
                .i64(state_len as i64)
                .i64(reg_off as i64)
                .0,
        });
    }
    Ok(())
}

/// Serialized `MatJob` of matvec.cu (72 bytes).
#[allow(clippy::too_many_arguments)]
fn job_bytes(
    wq: u64,
    wm: u64,
    bias: u64,
    x: u64,
    out: u64,
    dtype: GpuDType,
    in_dim: i32,
    out_dim: i32,
    act: i32,
    acc: bool,
    block_start: i32,
    n_tiles_n: i32,
    pad: i32,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(72);
    for p in [wq, wm, bias, x, out] {
        v.extend_from_slice(&p.to_ne_bytes());
    }
    for i in [
        dtype as i32,
        in_dim,
        out_dim,
        act,
        acc as i32,
        block_start,
        n_tiles_n,
        pad,
    ] {
        v.extend_from_slice(&i.to_ne_bytes());
    }
    v
}

/// Whether the tensor-core kernel can take a job: enough rows, and K a whole number of its steps.
fn mma_ok(dtype: GpuDType, in_dim: usize, rows: usize) -> bool {
    rows >= mma_min_rows()
        && match dtype {
            GpuDType::Q4K | GpuDType::Q6K => in_dim % 256 == 0,
            _ => in_dim % 32 == 0,
        }
}

/// SIMT layout of a job: (lanes per weight row, warps per weight row), see matvec.cu. Long rows
/// are split across warps only when the matrix has too few rows to give the GPU ~1024 warps.
fn matvec_layout(dtype: GpuDType, in_dim: usize, out_dim: usize) -> (usize, usize) {
    let vals = if matches!(dtype, GpuDType::F16 | GpuDType::F32) {
        8
    } else {
        32
    };
    let fast = in_dim % vals == 0
        && (!matches!(dtype, GpuDType::Q4K | GpuDType::Q6K) || in_dim % 256 == 0);
    if !fast {
        return (32, 1);
    }
    let units = in_dim / vals;
    let pow2_floor = |v: usize| {
        if v <= 1 {
            1
        } else {
            1 << (usize::BITS - 1 - v.leading_zeros())
        }
    };
    let lpr = if units >= 64 {
        32
    } else {
        pow2_floor((units / 2).max(1)).min(32)
    };
    let per_lane = (units / lpr).max(1);
    let warps = out_dim.div_ceil(32 / lpr);
    let ks = pow2_floor((1024 / warps.max(1)).clamp(1, 8)).min(pow2_floor(per_lane));
    (lpr, ks)
}

/// Shared-memory bytes per 32 activations of matvec.cu's int8 staging (`Q8_UNIT_BYTES`).
const Q8_UNIT_BYTES: usize = 48;

/// Batch-1 Q4_K products with int8 activations (matvec.cu's int8 path): on by default,
/// `RWKV_CUDA_Q8X=0` keeps the f32 path. Tuning words, comma-separated, for measurements (each
/// measured slower than the default on the H100, see NOTES.md): `pf4` (4 units in flight per
/// lane), `pre` (first weight loads before the PDL wait), `lb3` (int8-only launches at 3 blocks
/// per SM), `mixed` (int8 jobs always in the kernel with both paths). Read when a plan's launches are built.
#[derive(Clone, Copy, Default)]
struct Q8Mode {
    pf4: bool,
    pre: bool,
    lb3: bool,
    mixed: bool,
}

fn q8x_mode() -> Option<Q8Mode> {
    let v = std::env::var("RWKV_CUDA_Q8X").unwrap_or_default();
    if v == "0" {
        return None;
    }
    let has = |w: &str| v.split(',').any(|t| t.trim() == w);
    Some(Q8Mode {
        pf4: has("pf4"),
        pre: has("pre"),
        lb3: has("lb3"),
        mixed: has("mixed"),
    })
}

/// Flag bits of matvec.cu's lanes field: int8 path, 4 units in flight, no early loads.
const Q8_BIT: i32 = 1 << 24;
const Q8_PF4_BIT: i32 = 1 << 25;
const Q8_NOPRE_BIT: i32 = 1 << 26;

const MAX_JOBS: usize = 8;
/// Size of matvec.cu's `JobTable` (8 jobs of 72 bytes, the count, padding to 8).
const JOB_TABLE_BYTES: usize = MAX_JOBS * 72 + 8;

fn job_table(jobs: &[Vec<u8>]) -> Vec<u8> {
    let mut t: Vec<u8> = jobs.concat();
    t.resize(MAX_JOBS * 72, 0);
    t.extend_from_slice(&(jobs.len() as i32).to_ne_bytes());
    t.resize(JOB_TABLE_BYTES, 0);
    t
}

#[allow(clippy::too_many_arguments)]
fn push_matmul(
    gpu: &mut Gpu,
    launches: &mut Vec<Launch>,
    weights: &[Option<GpuWeight>],
    sparse: &HashMap<WeightId, SparseCols>,
    plan: &Plan,
    jobs: &[MatJob],
    bp: &dyn Fn(BufId) -> Result<u64>,
    sm_count: usize,
) -> Result<()> {
    // (job bytes without block_start, blocks, description)
    let mut mv: Vec<(MatJob, Vec<u8>, usize, String)> = Vec::new();
    let mut mm: Vec<(MatJob, Vec<u8>, usize, String)> = Vec::new();
    let mut rows_all = None;
    let mut pre: Vec<Launch> = Vec::new();
    let mut post: Vec<Launch> = Vec::new();
    let mut sp: Vec<Launch> = Vec::new();
    // Activations staged in shared memory by the SIMT kernel (up to 96 KiB per block).
    let smem_cap = (96 * 1024).min(gpu.smem_optin.saturating_sub(12 * 1024));
    let mut mv_smem = 0usize;
    let q8_mode = q8x_mode();
    for j in jobs {
        let (dtype, out_dim, in_dim, q, m) = match weights.get(j.weight).and_then(|w| w.as_ref()) {
            Some(GpuWeight::Matrix {
                dtype,
                rows,
                cols,
                q,
                m,
            }) => (*dtype, *rows, *cols, q.ptr, m.ptr),
            _ => {
                return Err(err(format!(
                    "MatMul: weight {} is not an uploaded matrix",
                    j.weight
                )))
            }
        };
        let xw = plan.buffers.get(j.x).map(|b| b.width);
        let ow = plan.buffers.get(j.out).map(|b| b.width);
        if xw != Some(in_dim) || ow != Some(out_dim) {
            return Err(err(format!(
                "MatMul: weight {} is [{out_dim}, {in_dim}] but x/out widths are {xw:?}/{ow:?}",
                j.weight
            )));
        }
        let rows = plan.rows_of(j.x);
        if plan.rows_of(j.out) != rows {
            return Err(err("MatMul: x and out have different row counts"));
        }
        if *rows_all.get_or_insert(rows) != rows {
            return Err(err("MatMul: jobs of one op have different row counts"));
        }
        let bias = match j.bias {
            Some(b) => self_vec(weights, b, out_dim)?,
            None => 0,
        };
        let (ii, oi) = (i32_of(in_dim, "in")?, i32_of(out_dim, "out")?);
        let mut d = format!(" {out_dim}x{in_dim}:{dtype:?}");
        let (xp, op) = (bp(j.x)?, bp(j.out)?);
        if let Some(sc) = sparse
            .get(&j.weight)
            .filter(|_| sparse_eligible(plan, j, dtype, in_dim, out_dim))
        {
            let gpw = sparse_groups_per_warp(in_dim, out_dim, sm_count);
            let (col_blocks, chunks) = sparse_grid(in_dim, out_dim, gpw);
            // u8 inputs with integer products unless RWKV_CUDA_Q8X=0 (as for the dense path).
            let kname = if q8_mode.is_some() {
                "sparse_q4k_q8_kernel"
            } else {
                "sparse_q4k_kernel"
            };
            sp.push(Launch {
                name: format!("{kname}{d}/g{gpw}"),
                func: gpu.func(kname)?,
                grid: (col_blocks as u32, chunks as u32, 1),
                block: (SPARSE_WARPS as u32 * 32, 1, 1),
                smem: 0,
                args: ArgList::default()
                    .ptr(xp)
                    .i32(ii)
                    .i32(oi)
                    .ptr(sc.nib.ptr)
                    .ptr(sc.sc.ptr)
                    .ptr(sc.dd.ptr)
                    .ptr(op)
                    .i32(j.accumulate as i32)
                    .i32(gpw as i32)
                    .ptr(sc.scratch.ptr)
                    .ptr(sc.counters.ptr)
                    .0,
            });
            continue;
        }
        if mma_ok(dtype, in_dim, rows) {
            let tn = out_dim.div_ceil(MM_BN);
            let tiles = tn * rows.div_ceil(MM_BM);
            let steps = in_dim.div_ceil(64);
            // Few tiles: split K over blocks that add into a cleared output. An activation is
            // then applied by a separate pass (only when not accumulating, as in every plan).
            let splittable = j.act == Act::None || !j.accumulate;
            let splits = if splittable && tiles < sm_count {
                (2 * sm_count).div_ceil(tiles).min(steps / 4).max(1)
            } else {
                1
            };
            let mut act = act_code(j.act);
            if splits > 1 {
                d.push_str(&format!("/k{splits}"));
                if !j.accumulate {
                    pre.push(Launch {
                        name: "zero_kernel".into(),
                        func: gpu.func("zero_kernel")?,
                        grid: ((rows * out_dim).div_ceil(256).min(1024) as u32, 1, 1),
                        block: (256, 1, 1),
                        smem: 0,
                        args: ArgList::default().ptr(op).i64((rows * out_dim) as i64).0,
                    });
                }
                if j.act != Act::None {
                    post.push(Launch {
                        name: "act_kernel".into(),
                        func: gpu.func("act_kernel")?,
                        grid: ((rows * out_dim).div_ceil(256).min(1024) as u32, 1, 1),
                        block: (256, 1, 1),
                        smem: 0,
                        args: ArgList::default()
                            .ptr(op)
                            .i64((rows * out_dim) as i64)
                            .i32(act)
                            .0,
                    });
                    act = 0;
                }
            }
            let job = job_bytes(
                q,
                m,
                bias,
                xp,
                op,
                dtype,
                ii,
                oi,
                act,
                j.accumulate,
                0,
                tn as i32,
                splits as i32,
            );
            mm.push((j.clone(), job, tiles * splits, d));
        } else {
            let (lpr, ks) = matvec_layout(dtype, in_dim, out_dim);
            // Batch 1, Q4_K: activations quantized to int8 per 32 values in the kernel's
            // prologue, products by dp4a (matvec.cu, flag bit 24 of the lanes field).
            let q8 = match q8_mode {
                Some(m) if rows == 1 && dtype == GpuDType::Q4K && in_dim % 256 == 0 => {
                    d.push_str("/q8");
                    Q8_BIT
                        | if m.pf4 { Q8_PF4_BIT } else { 0 }
                        | if m.pre { 0 } else { Q8_NOPRE_BIT }
                }
                _ => 0,
            };
            // Rows per block pass; the number of passes is set below for the whole launch.
            let base_blocks = out_dim.div_ceil((8 / ks) * (32 / lpr));
            let job = job_bytes(
                q,
                m,
                bias,
                xp,
                op,
                dtype,
                ii,
                oi,
                act_code(j.act),
                j.accumulate,
                0,
                lpr as i32 | q8,
                ks as i32,
            );
            mv.push((j.clone(), job, base_blocks, format!("{d}/l{lpr}k{ks}")));
            let r_eff = rows.min(8);
            let need = if q8 != 0 {
                in_dim / 32 * Q8_UNIT_BYTES
            } else {
                r_eff * (in_dim + in_dim / 64 * 4) * 4
            };
            if need <= smem_cap {
                mv_smem = mv_smem.max(need);
            }
        }
    }
    let rows = rows_all.unwrap_or(0);
    // Several row groups per block, so that the launch is about one wave of blocks (four 256-
    // thread blocks per SM) and each block's staged activations serve more weight rows.
    let total: usize = mv.iter().map(|m| m.2).sum();
    let per_sm = if rows == 1 && q8_mode.is_some_and(|m| m.lb3) {
        3
    } else {
        4
    };
    let passes = total.div_ceil(per_sm * sm_count).clamp(1, 64);
    for (_, job, nblocks, d) in mv.iter_mut() {
        let lpr = i32::from_ne_bytes([job[64], job[65], job[66], job[67]]);
        job[64..68].copy_from_slice(&(lpr | ((passes as i32) << 8)).to_ne_bytes());
        *nblocks = nblocks.div_ceil(passes);
        d.push_str(&format!("p{passes}"));
    }
    launches.extend(pre);
    let (mv_name, r) = match rows {
        1 => ("matvec1_kernel", 1),
        2 => ("matvec2_kernel", 2),
        3 | 4 => ("matvec4_kernel", 4),
        _ => ("matvec8_kernel", 8),
    };
    if mv_smem > 48 * 1024 {
        let f = gpu.func(mv_name)?;
        gpu.allow_smem(f, mv_smem)?;
    }
    for (list, kernel, block, gy) in [
        (&mv, mv_name, 256u32, rows.div_ceil(r)),
        (&mm, "matmul_mma_kernel", 128, 1),
    ] {
        let is_mv = kernel == mv_name;
        for chunk in list.chunks(MAX_JOBS) {
            let mut blocks = 0usize;
            let mut bytes = Vec::new();
            // Batch-1 launches get the kernel with only the paths their jobs take: int8 only,
            // both (int8 and f32 jobs), or f32 only (matvec1_kernel).
            let is_q8 = |job: &Vec<u8>| {
                i32::from_ne_bytes([job[64], job[65], job[66], job[67]]) & Q8_BIT != 0
            };
            let all_q8 = chunk.iter().all(|(_, job, _, _)| is_q8(job));
            let any_q8 = chunk.iter().any(|(_, job, _, _)| is_q8(job));
            let kernel = match q8_mode {
                Some(m) if is_mv && rows == 1 && all_q8 && !m.mixed => {
                    if m.lb3 {
                        "matvec1q8w_kernel"
                    } else {
                        "matvec1q8_kernel"
                    }
                }
                Some(_) if is_mv && rows == 1 && any_q8 => "matvec1mix_kernel",
                _ => kernel,
            };
            if is_mv && mv_smem > 48 * 1024 && kernel != mv_name {
                let f = gpu.func(kernel)?;
                gpu.allow_smem(f, mv_smem)?;
            }
            let mut name = kernel.to_string();
            for (_, job, nblocks, d) in chunk {
                let mut job = job.clone();
                // block_start sits after 5 pointers and 5 ints.
                job[60..64].copy_from_slice(&i32_of(blocks, "blocks")?.to_ne_bytes());
                bytes.push(job);
                blocks += nblocks;
                name.push_str(d);
            }
            launches.push(Launch {
                name,
                func: gpu.func(kernel)?,
                grid: (blocks as u32, gy as u32, 1),
                block: (block, 1, 1),
                smem: if is_mv { mv_smem as u32 } else { 0 },
                args: if is_mv {
                    ArgList::default()
                        .bytes(job_table(&bytes))
                        .i32(i32_of(rows, "rows")?)
                        .i32((mv_smem / 4) as i32)
                        .0
                } else {
                    ArgList::default()
                        .bytes(job_table(&bytes))
                        .i32(i32_of(rows, "rows")?)
                        .0
                },
            });
        }
    }
    launches.extend(sp);
    launches.extend(post);
    Ok(())
}

/// The float4 token-shift kernel (`RWKV_CUDA_LNVEC=0`: the scalar one, for A/B runs).
fn ln_shift_vec() -> bool {
    std::env::var("RWKV_CUDA_LNVEC").map_or(true, |v| v.trim() != "0")
}

/// Warps per block of sparse.cu (`SP_WARPS`).
const SPARSE_WARPS: usize = 8;

/// Zero-skipping batch-1 products (sparse.cu): on by default, `RWKV_CUDA_SPARSE=0` keeps the
/// row layout; `RWKV_CUDA_SPARSE=g<N>` sets the 32-column groups per warp (for measurements).
fn sparse_mode() -> Option<Option<usize>> {
    match std::env::var("RWKV_CUDA_SPARSE") {
        Ok(v) if v.trim() == "0" => None,
        Ok(v) => Some(
            v.trim()
                .strip_prefix('g')
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&n| n > 0),
        ),
        Err(_) => Some(None),
    }
}

/// Whether a MatMul job takes the zero-skipping product: batch 1, Q4_K, no bias or activation,
/// and an input produced by a relu² product (the channel mix's value matrix), whose zeros are
/// what it skips. The result does not depend on this choice beyond rounding.
fn sparse_eligible(
    plan: &Plan,
    j: &MatJob,
    dtype: GpuDType,
    in_dim: usize,
    out_dim: usize,
) -> bool {
    dtype == GpuDType::Q4K
        && in_dim % 256 == 0
        && out_dim % 8 == 0
        && j.act == Act::None
        && j.bias.is_none()
        && plan.rows_of(j.x) == 1
        && plan.ops.iter().any(|op| {
            matches!(op, Op::MatMul { jobs } if jobs.iter().any(|p| p.out == j.x && p.act == Act::ReluSq))
        })
}

/// sparse.cu's grid: (column blocks, 256-row chunks) for `gpw` groups per warp.
fn sparse_grid(in_dim: usize, out_dim: usize, gpw: usize) -> (usize, usize) {
    (
        (in_dim / 32).div_ceil(SPARSE_WARPS * gpw.max(1)),
        out_dim.div_ceil(256),
    )
}

/// Groups of 32 columns per warp: the fewest that keep the launch within one wave of four
/// 256-thread blocks per SM.
fn sparse_groups_per_warp(in_dim: usize, out_dim: usize, sm_count: usize) -> usize {
    if let Some(Some(g)) = sparse_mode() {
        return g;
    }
    let mut gpw = 1;
    while gpw < 64 && {
        let (x, y) = sparse_grid(in_dim, out_dim, gpw);
        x * y > 4 * sm_count.max(1)
    } {
        gpw *= 2;
    }
    gpw
}

impl Backend for CudaBackend {
    fn info(&self) -> DeviceInfo {
        let g = &self.gpu;
        DeviceInfo {
            backend: "cuda".into(),
            device: g.name.clone(),
            properties: vec![
                (
                    "compute_capability".into(),
                    format!("{}.{}", g.cc.0, g.cc.1),
                ),
                ("multiprocessors".into(), g.sm_count.to_string()),
                ("memory".into(), format!("{} MiB", g.total_mem >> 20)),
                (
                    "driver".into(),
                    format!(
                        "{}.{}",
                        g.driver_version / 1000,
                        (g.driver_version % 1000) / 10
                    ),
                ),
                (
                    "nvrtc".into(),
                    format!("{}.{}", g.nvrtc_version.0, g.nvrtc_version.1),
                ),
                ("kernels".into(), g.kernel_cache.clone()),
                ("graphs".into(), self.use_graphs.to_string()),
                ("pdl".into(), g.pdl.to_string()),
                ("q8x".into(), q8x_mode().is_some().to_string()),
            ],
        }
    }

    fn upload_weight(&mut self, id: usize, name: &str, tensor: &Tensor) -> Result<()> {
        self.gpu.bind()?;
        if id != self.weights.len() {
            return Err(invalid(format!(
                "upload_weight: expected id {}, got {id} ('{name}')",
                self.weights.len()
            )));
        }
        // Streamed tensors (TensorBytes::Source) are fetched here; in-memory ones are borrowed.
        let data = tensor.data.read()?;
        let data: &[u8] = &data;
        let w = match tensor.shape.len() {
            1 => {
                let n = tensor.shape[0];
                if tensor.dtype.tensor_bytes(&tensor.shape) != Some(data.len()) {
                    return Err(err(format!(
                        "'{name}': byte length does not match its shape"
                    )));
                }
                let v = repack::to_f32(tensor.dtype, data, n)?;
                GpuWeight::Vector {
                    len: n,
                    buf: DevBuf::from_bytes(&repack::f32_bytes(&v))?,
                }
            }
            2 => {
                let (rows, cols) = (tensor.shape[0], tensor.shape[1]);
                let r = repack::repack_matrix(tensor.dtype, data, rows, cols)
                    .map_err(|e| err(format!("'{name}': {e}")))?;
                let need = r.q.len() + r.m.len();
                let free = self.gpu.free_mem();
                if need > free {
                    return Err(Error::backend_kind(
                        "cuda",
                        BackendErrorKind::OutOfMemory,
                        format!(
                            "'{name}' needs {} MiB, the device has {} MiB free",
                            need >> 20,
                            free >> 20
                        ),
                    ));
                }
                GpuWeight::Matrix {
                    dtype: r.dtype,
                    rows,
                    cols,
                    q: DevBuf::from_bytes(&r.q)?,
                    m: DevBuf::from_bytes(&r.m)?,
                }
            }
            n => {
                return Err(err(format!(
                    "'{name}': {n}-dimensional tensors are not supported"
                )))
            }
        };
        self.weights.push(Some(w));
        self.metas.push(WeightMeta::of(name, tensor));
        Ok(())
    }

    fn alloc_states(&mut self, n_slots: usize, state_len: usize) -> Result<()> {
        self.gpu.bind()?;
        self.states = None;
        let bytes = n_slots
            .checked_mul(state_len)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(|| err("state size overflows"))?;
        self.states = Some(DevBuf::zeroed(bytes)?);
        self.n_slots = n_slots;
        self.state_len = state_len;
        self.state_gen += 1;
        Ok(())
    }

    fn compile(&mut self, plan: &Plan) -> Result<PlanId> {
        self.gpu.bind()?;
        let facts = plan.validate("cuda", &self.metas)?;
        if uses_state(plan) && self.states.is_some() && plan.state.len() > self.state_len {
            return Err(invalid(format!(
                "the plan's state has {} values, the allocated states {}",
                plan.state.len(),
                self.state_len
            )));
        }
        let shape = plan.shape;
        let rows = shape.rows();
        let mut bufs = Vec::with_capacity(plan.buffers.len());
        for b in 0..plan.buffers.len() {
            let n = plan
                .rows_of(b)
                .checked_mul(plan.buffers[b].width)
                .and_then(|v| v.checked_mul(4))
                .ok_or_else(|| err("buffer size overflows"))?;
            bufs.push(DevBuf::zeroed(n)?);
        }
        let c = if plan.ops.iter().any(|op| matches!(op, Op::Wkv7(_))) {
            plan.state.width
        } else {
            0
        };
        let logit_rows = plan.rows_of(plan.logits);
        let (kk_n, bonus_n) = if shape.n_tok > 1 {
            (rows * c, rows * c.div_ceil(16))
        } else {
            (1, 1)
        };
        let cp = CompiledPlan {
            plan: plan.clone(),
            bufs,
            tokens: DevBuf::zeroed(rows * 4)?,
            slots: DevBuf::zeroed(shape.n_seq * 4)?,
            argmax: DevBuf::zeroed(logit_rows * 4)?,
            wkv_kk: DevBuf::zeroed(kk_n * 4)?,
            wkv_b: DevBuf::zeroed(kk_n * 4)?,
            wkv_bonus: DevBuf::zeroed(bonus_n * 4)?,
            tables: Vec::new(),
            launches: Vec::new(),
            graph: None,
            built_gen: 0,
            facts,
        };
        self.ensure_sparse(plan)?;
        self.plans.push(cp);
        let pi = self.plans.len() - 1;
        // Validates every op now (with the current states, if any); rebuilt when states change.
        if let Err(e) = self.build(pi) {
            self.plans.pop();
            return Err(e);
        }
        Ok(PlanId(pi))
    }

    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()> {
        self.gpu.bind()?;
        let pi = plan.0;
        let cp = self
            .plans
            .get(pi)
            .ok_or_else(|| invalid(format!("unknown plan {pi}")))?;
        if self.states.is_none() {
            return Err(invalid("execute: no states allocated"));
        }
        cp.plan
            .check_step("cuda", &cp.facts, tokens, slots, self.n_slots, &out)?;
        if uses_state(&cp.plan) && cp.plan.state.len() > self.state_len {
            return Err(invalid(format!(
                "the plan's state has {} values, the allocated states {}",
                cp.plan.state.len(),
                self.state_len
            )));
        }
        if cp.built_gen != self.state_gen {
            self.build(pi)?;
        }
        let cp = &self.plans[pi];
        let slots32: Vec<i32> = slots.iter().map(|&s| s as i32).collect();
        self.gpu.htod(cp.tokens.ptr, tokens)?;
        self.gpu.htod(cp.slots.ptr, &slots32)?;
        match &cp.graph {
            Some(g) => g.launch(&self.gpu)?,
            None => {
                for l in &cp.launches {
                    self.gpu.launch(l)?;
                }
            }
        }
        let logit_rows = cp.plan.rows_of(cp.plan.logits);
        let width = cp.plan.buffers[cp.plan.logits].width;
        let logits_ptr = cp.bufs[cp.plan.logits].ptr;
        match out {
            StepOutput::None => self.gpu.sync(),
            StepOutput::Logits(buf) => self.gpu.dtoh(buf, logits_ptr),
            StepOutput::Argmax(buf) => {
                let f = self.gpu.func("argmax_kernel")?;
                let l = Launch {
                    name: "argmax_kernel".to_string(),
                    func: f,
                    grid: (logit_rows as u32, 1, 1),
                    block: (1024, 1, 1),
                    smem: 0,
                    args: ArgList::default()
                        .ptr(logits_ptr)
                        .i32(i32_of(width, "vocab")?)
                        .ptr(cp.argmax.ptr)
                        .0,
                };
                self.gpu.launch(&l)?;
                self.gpu.dtoh(buf, cp.argmax.ptr)
            }
        }
    }

    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> Result<()> {
        self.gpu.bind()?;
        let ptr = self.slot_ptr("read_state", slot, out.len())?;
        self.gpu.dtoh(out, ptr)
    }

    fn write_state(&mut self, slot: usize, values: &[f32]) -> Result<()> {
        self.gpu.bind()?;
        let ptr = self.slot_ptr("write_state", slot, values.len())?;
        self.gpu.htod(ptr, values)?;
        self.gpu.sync()
    }
}
