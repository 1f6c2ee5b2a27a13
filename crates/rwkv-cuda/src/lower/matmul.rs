//! `Op::MatMul`: job merging, kernel choice (zero-skipping, tensor-core or SIMT product) and
//! the job tables. Each launch of a table kernel takes up to [`MAX_JOBS`] products at once.

use rwkv_core::backend::{Act, BufId, MatJob, Op};
use rwkv_core::Result;

use super::Lowering;
use crate::gpu::{ArgList, Launch};
use crate::kernels::{JobTable, Kernel, MatJobArgs, MatVecRows, MAX_JOBS, Q8_BIT};
use crate::repack::GpuDType;
use crate::sparse::{
    sparse_eligible, sparse_grid, sparse_groups_per_warp, SparseCols, SPARSE_WARPS,
};
use crate::upload::MatrixRef;
use crate::{i32_of, invalid};

/// mma.cu tile sizes (`MM_BM`, `MM_BN`).
const MM_BM: usize = 64;
const MM_BN: usize = 64;

/// Shared-memory bytes per 32 activations of matvec.cu's int8 staging (`Q8_UNIT_BYTES`).
const Q8_UNIT_BYTES: usize = 48;

/// SIMT product blocks per SM the launch-wide passes aim at (one wave; matvec.cu is capped at
/// 4 blocks per SM by its launch bounds).
const MATVEC_BLOCKS_PER_SM: usize = 4;

/// The activation codes of kernels/common.cuh (`apply_act`).
fn act_code(a: Act) -> i32 {
    match a {
        Act::None => 0,
        Act::Tanh => 1,
        Act::Sigmoid => 2,
        Act::ReluSq => 3,
        Act::Decay => 4,
    }
}

/// `Op::MatMul` at `ops[i]`, with the independent MatMul ops after it in the same launches.
pub(super) fn matmul(lw: &mut Lowering, ops: &[Op], i: usize) -> Result<usize> {
    let (jobs, consumed) = merged_jobs(lw, ops, i)?;
    push_matmul(lw, &jobs)?;
    Ok(consumed)
}

/// The jobs of `ops[i]` and of the MatMul ops right after it that read nothing it writes,
/// write nothing it touches and have as many rows; and how many ops that is.
fn merged_jobs(lw: &Lowering, ops: &[Op], i: usize) -> Result<(Vec<MatJob>, usize)> {
    let Op::MatMul { jobs } = &ops[i] else {
        return Err(invalid("matmul: not a MatMul op"));
    };
    let mut jobs: Vec<MatJob> = jobs.clone();
    let mut consumed = 1;
    while let Some(Op::MatMul { jobs: next }) = ops.get(i + consumed) {
        let writes: Vec<BufId> = jobs.iter().map(|j| j.out).collect();
        let reads: Vec<BufId> = jobs.iter().map(|j| j.x).collect();
        let independent = next
            .iter()
            .all(|n| !writes.contains(&n.x) && !writes.contains(&n.out) && !reads.contains(&n.out));
        let same_rows = jobs
            .first()
            .is_some_and(|f| next.iter().all(|n| lw.rows_of(n.x) == lw.rows_of(f.x)));
        if !independent || !same_rows {
            break;
        }
        jobs.extend(next.iter().cloned());
        consumed += 1;
    }
    Ok((jobs, consumed))
}

/// Whether the tensor-core kernel can take a job: enough rows, and K a whole number of its steps.
fn mma_ok(dtype: GpuDType, in_dim: usize, rows: usize, min_rows: usize) -> bool {
    rows >= min_rows
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

/// A job for a table kernel: its entry (block_start set at launch assembly), its blocks, and
/// the shape description the profile shows.
struct TableJob {
    args: MatJobArgs,
    blocks: usize,
    desc: String,
}

/// One product's operands, checked against the plan.
struct Operands {
    w: MatrixRef,
    rows: usize,
    bias: u64,
    x: u64,
    out: u64,
    in_dim: i32,
    out_dim: i32,
}

impl Operands {
    fn job_args(&self, act: i32, accumulate: bool, n_tiles_n: i32, pad: i32) -> MatJobArgs {
        MatJobArgs {
            wq: self.w.q,
            wm: self.w.m,
            bias: self.bias,
            x: self.x,
            out: self.out,
            dtype: self.w.dtype as i32,
            in_dim: self.in_dim,
            out_dim: self.out_dim,
            act,
            accumulate: accumulate as i32,
            block_start: 0,
            n_tiles_n,
            pad,
        }
    }
}

fn operands(lw: &Lowering, j: &MatJob) -> Result<Operands> {
    let w = lw.matrix(j.weight, "MatMul")?;
    let (out_dim, in_dim) = (w.rows, w.cols);
    let xw = lw.plan.buffers.get(j.x).map(|b| b.width);
    let ow = lw.plan.buffers.get(j.out).map(|b| b.width);
    if xw != Some(in_dim) || ow != Some(out_dim) {
        return Err(invalid(format!(
            "MatMul: weight {} is [{out_dim}, {in_dim}] but x/out widths are {xw:?}/{ow:?}",
            j.weight
        )));
    }
    let rows = lw.rows_of(j.x);
    if lw.rows_of(j.out) != rows {
        return Err(invalid("MatMul: x and out have different row counts"));
    }
    Ok(Operands {
        w,
        rows,
        bias: match j.bias {
            Some(b) => lw.vector(b, out_dim)?,
            None => 0,
        },
        x: lw.buf(j.x)?,
        out: lw.buf(j.out)?,
        in_dim: i32_of(in_dim, "in")?,
        out_dim: i32_of(out_dim, "out")?,
    })
}

/// The zero-skipping product of a batch-1 job over its column layout.
fn sparse_launch(
    lw: &mut Lowering,
    j: &MatJob,
    o: &Operands,
    cols: &SparseCols,
    desc: &str,
) -> Result<Launch> {
    let (in_dim, out_dim) = (o.w.cols, o.w.rows);
    let sm_count = lw.gpu.sm_count.max(1) as usize;
    let gpw = sparse_groups_per_warp(in_dim, out_dim, sm_count);
    let (col_blocks, chunks) = sparse_grid(in_dim, out_dim, gpw);
    // u8 inputs with integer products when int8 activations are on (as for the dense path).
    let kernel = Kernel::SparseQ4k { q8: lw.options.q8x };
    let args = ArgList::default()
        .ptr(o.x)
        .i32(o.in_dim)
        .i32(o.out_dim)
        .ptr(cols.nib.ptr)
        .ptr(cols.sc.ptr)
        .ptr(cols.dd.ptr)
        .ptr(o.out)
        .i32(j.accumulate as i32)
        .i32(gpw as i32)
        .ptr(cols.scratch.ptr)
        .ptr(cols.counters.ptr)
        .0;
    Ok(Launch::new(
        lw.gpu,
        kernel,
        (col_blocks as u32, chunks as u32, 1),
        (SPARSE_WARPS as u32 * 32, 1, 1),
        0,
        args,
    )?
    .described(&format!("{desc}/g{gpw}")))
}

/// Grid of the element-wise kernels (zero, act) over `n` values.
fn elementwise_grid(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(256).min(1024) as u32, 1, 1)
}

/// A tensor-core job. With few tiles K is split over blocks that add into a cleared output
/// (a zero launch in `pre`); an activation is then applied by a separate pass (in `post`, only
/// when not accumulating, as in every plan).
fn mma_job(
    lw: &mut Lowering,
    j: &MatJob,
    o: &Operands,
    mut desc: String,
    pre: &mut Vec<Launch>,
    post: &mut Vec<Launch>,
) -> Result<TableJob> {
    let (in_dim, out_dim, rows) = (o.w.cols, o.w.rows, o.rows);
    let sm_count = lw.gpu.sm_count.max(1) as usize;
    let tn = out_dim.div_ceil(MM_BN);
    let tiles = tn * rows.div_ceil(MM_BM);
    let steps = in_dim.div_ceil(64);
    let splittable = j.act == Act::None || !j.accumulate;
    let splits = if splittable && tiles < sm_count {
        (2 * sm_count).div_ceil(tiles).min(steps / 4).max(1)
    } else {
        1
    };
    let mut act = act_code(j.act);
    if splits > 1 {
        desc.push_str(&format!("/k{splits}"));
        let n = rows * out_dim;
        if !j.accumulate {
            let args = ArgList::default().ptr(o.out).i64(n as i64).0;
            pre.push(Launch::new(
                lw.gpu,
                Kernel::Zero,
                elementwise_grid(n),
                (256, 1, 1),
                0,
                args,
            )?);
        }
        if j.act != Act::None {
            let args = ArgList::default().ptr(o.out).i64(n as i64).i32(act).0;
            post.push(Launch::new(
                lw.gpu,
                Kernel::Act,
                elementwise_grid(n),
                (256, 1, 1),
                0,
                args,
            )?);
            act = 0;
        }
    }
    Ok(TableJob {
        args: o.job_args(act, j.accumulate, tn as i32, splits as i32),
        blocks: tiles * splits,
        desc,
    })
}

/// A SIMT job and the shared memory its activations need (0: not staged). Batch-1 Q4_K jobs
/// quantize their activations to int8 per 32 values in the kernel's prologue and multiply by
/// dp4a (matvec.cu, flag bit 24 of the lanes field) when the options allow.
fn matvec_job(lw: &Lowering, j: &MatJob, o: &Operands, mut desc: String) -> (TableJob, usize) {
    let (in_dim, out_dim, rows, dtype) = (o.w.cols, o.w.rows, o.rows, o.w.dtype);
    let (lpr, ks) = matvec_layout(dtype, in_dim, out_dim);
    let q8 = if lw.options.q8x && rows == 1 && dtype == GpuDType::Q4K && in_dim % 256 == 0 {
        desc.push_str("/q8");
        Q8_BIT
    } else {
        0
    };
    // Rows per block pass; the number of passes is set for the whole launch.
    let base_blocks = out_dim.div_ceil((8 / ks) * (32 / lpr));
    let job = TableJob {
        args: o.job_args(act_code(j.act), j.accumulate, lpr as i32 | q8, ks as i32),
        blocks: base_blocks,
        desc: format!("{desc}/l{lpr}k{ks}"),
    };
    let smem = if q8 != 0 {
        in_dim / 32 * Q8_UNIT_BYTES
    } else {
        rows.min(8) * (in_dim + in_dim / 64 * 4) * 4
    };
    (job, smem)
}

/// The launches of one merged MatMul: split-K clears, the SIMT table launches, the tensor-core
/// table launches, the zero-skipping products, split-K activations, in that order.
fn push_matmul(lw: &mut Lowering, jobs: &[MatJob]) -> Result<()> {
    let mut mv: Vec<TableJob> = Vec::new();
    let mut mm: Vec<TableJob> = Vec::new();
    let mut rows_all = None;
    let mut pre: Vec<Launch> = Vec::new();
    let mut post: Vec<Launch> = Vec::new();
    let mut sp: Vec<Launch> = Vec::new();
    // Activations staged in shared memory by the SIMT kernel (up to 96 KiB per block).
    let smem_cap = (96 * 1024).min(lw.gpu.smem_optin.saturating_sub(12 * 1024));
    let mut mv_smem = 0usize;
    for j in jobs {
        let o = operands(lw, j)?;
        if *rows_all.get_or_insert(o.rows) != o.rows {
            return Err(invalid("MatMul: jobs of one op have different row counts"));
        }
        let desc = format!(" {}x{}:{:?}", o.w.rows, o.w.cols, o.w.dtype);
        // Layouts built for an earlier plan exist whatever this plan's options say.
        let sparse = lw.sparse;
        if let Some(cols) = sparse
            .get(&j.weight)
            .filter(|_| lw.options.sparse)
            .filter(|_| sparse_eligible(lw.plan, j, o.w.dtype, o.w.cols, o.w.rows))
        {
            sp.push(sparse_launch(lw, j, &o, cols, &desc)?);
            continue;
        }
        if mma_ok(o.w.dtype, o.w.cols, o.rows, lw.options.mma_min_rows) {
            mm.push(mma_job(lw, j, &o, desc, &mut pre, &mut post)?);
        } else {
            let (job, need) = matvec_job(lw, j, &o, desc);
            mv.push(job);
            if need <= smem_cap {
                mv_smem = mv_smem.max(need);
            }
        }
    }
    let rows = rows_all.unwrap_or(0);
    // Several row groups per block, so that the launch is about one wave of blocks and each
    // block's staged activations serve more weight rows.
    let sm_count = lw.gpu.sm_count.max(1) as usize;
    let total: usize = mv.iter().map(|m| m.blocks).sum();
    let passes = total.div_ceil(MATVEC_BLOCKS_PER_SM * sm_count).clamp(1, 64);
    for job in mv.iter_mut() {
        job.args.n_tiles_n |= (passes as i32) << 8;
        job.blocks = job.blocks.div_ceil(passes);
        job.desc.push_str(&format!("p{passes}"));
    }
    lw.launches.extend(pre);
    let rows_kernel = MatVecRows::for_rows(rows);
    let mv_kernel = Kernel::MatVec { rows: rows_kernel };
    if mv_smem > 48 * 1024 {
        let f = lw.gpu.kernel(mv_kernel)?;
        lw.gpu.allow_smem(f, mv_smem)?;
    }
    for chunk in mv.chunks(MAX_JOBS) {
        // Batch-1 launches get the kernel with only the paths their jobs take: int8 only,
        // both (int8 and f32 jobs), or f32 only (matvec1_kernel).
        let is_q8 = |job: &TableJob| job.args.n_tiles_n & Q8_BIT != 0;
        let kernel = if rows == 1 && chunk.iter().all(is_q8) {
            Kernel::MatVec1Q8
        } else if rows == 1 && chunk.iter().any(is_q8) {
            Kernel::MatVec1Mix
        } else {
            mv_kernel
        };
        if mv_smem > 48 * 1024 && kernel != mv_kernel {
            let f = lw.gpu.kernel(kernel)?;
            lw.gpu.allow_smem(f, mv_smem)?;
        }
        let (table, blocks, desc) = table_of(chunk)?;
        let args = ArgList::default()
            .bytes(table.to_bytes())
            .i32(i32_of(rows, "rows")?)
            .i32((mv_smem / 4) as i32)
            .0;
        let gy = rows.div_ceil(rows_kernel.count());
        let l = Launch::new(
            lw.gpu,
            kernel,
            (blocks as u32, gy as u32, 1),
            (256, 1, 1),
            mv_smem as u32,
            args,
        )?;
        lw.launches.push(l.described(&desc));
    }
    for chunk in mm.chunks(MAX_JOBS) {
        let (table, blocks, desc) = table_of(chunk)?;
        let args = ArgList::default()
            .bytes(table.to_bytes())
            .i32(i32_of(rows, "rows")?)
            .0;
        let l = Launch::new(
            lw.gpu,
            Kernel::MatMulMma,
            (blocks as u32, 1, 1),
            (128, 1, 1),
            0,
            args,
        )?;
        lw.launches.push(l.described(&desc));
    }
    lw.launches.extend(sp);
    lw.launches.extend(post);
    Ok(())
}

/// The job table of up to [`MAX_JOBS`] jobs, each starting after the blocks of those before it:
/// (table, blocks in all, the jobs' descriptions).
fn table_of(chunk: &[TableJob]) -> Result<(JobTable, usize, String)> {
    let mut blocks = 0usize;
    let mut desc = String::new();
    let mut entries = Vec::with_capacity(chunk.len());
    for job in chunk {
        let mut args = job.args;
        args.block_start = i32_of(blocks, "blocks")?;
        entries.push(args);
        blocks += job.blocks;
        desc.push_str(&job.desc);
    }
    Ok((JobTable::of(&entries), blocks, desc))
}
