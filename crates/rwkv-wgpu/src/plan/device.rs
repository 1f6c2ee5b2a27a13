//! The device side of a lowered plan: a pipeline and a bind group per dispatch record, the
//! arena, token, scratch, working-state, parameter and read-back buffers.

use rwkv_core::Result;

use crate::gpu::{backend_err, Gpu};
use crate::kernels::Kernels;

use super::layout::{StateChunk, WorkState};
use super::matmul::ScratchBytes;
use super::record::{Bind, Rec, PARAM_BYTES, PARAM_STRIDE};
use super::{Built, Compiled, Dispatch};

impl Compiled {
    /// Pipelines, buffers and bind groups for `recs` (the argmax last).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn device_objects(
        &self,
        gpu: &Gpu,
        kernels: &mut Kernels,
        recs: Vec<Rec>,
        scratch: ScratchBytes,
        work: &WorkState<'_>,
        vecs: &wgpu::Buffer,
        weights_generation: u64,
        state_len: usize,
    ) -> Result<Built> {
        let shape = self.plan.shape;
        let rows = shape.rows();
        let logit_rows = self.logit_rows();
        let chunk_spans = &work.chunk_spans;
        let mut pipelines = Vec::with_capacity(recs.len());
        for r in &recs {
            pipelines.push(kernels.get(gpu, r.kernel).await?);
        }
        let storage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let built = gpu
            .scoped("building plan", || -> Result<Built> {
                let arena = gpu.buffer("activations", self.arena.len as u64 * 4, storage)?;
                let tokens = gpu.buffer("tokens", rows as u64 * 4, storage)?;
                // f16 operands of the products on gemm_f16.wgsl (none in plans without them).
                let scratch_buffer = |label, bytes: u64| gpu.buffer(label, bytes.max(16), storage);
                let x16 = scratch_buffer("f16 activations", scratch.x16)?;
                let w16 = scratch_buffer("f16 weights", scratch.w16)?;
                let part = scratch_buffer("partial sums", scratch.part)?;
                let work_states = chunk_spans
                    .iter()
                    .map(|&(first, len)| {
                        let bytes = (shape.n_seq as u64) * (len as u64) * 4;
                        Ok(StateChunk {
                            buffer: gpu.buffer("step states", bytes, storage)?,
                            first,
                            len,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let staging_len = (self.logits_len().max(logit_rows) as u64) * 4;
                let staging = gpu.buffer(
                    "read-back",
                    staging_len,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                )?;
                let param_buf = gpu.buffer(
                    "params",
                    recs.len() as u64 * PARAM_STRIDE,
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                )?;
                let mut bytes = vec![0u8; recs.len() * PARAM_STRIDE as usize];
                for (i, rec) in recs.iter().enumerate() {
                    let at = i * PARAM_STRIDE as usize;
                    bytes[at..at + PARAM_BYTES as usize]
                        .copy_from_slice(bytemuck::cast_slice(&rec.params));
                }
                gpu.queue.write_buffer(&param_buf, 0, &bytes);
                let mut dispatches = Vec::with_capacity(recs.len());
                for (i, (rec, pipeline)) in recs.iter().zip(pipelines).enumerate() {
                    let layout = pipeline.get_bind_group_layout(0);
                    let mut entries = vec![wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &param_buf,
                            offset: i as u64 * PARAM_STRIDE,
                            size: wgpu::BufferSize::new(PARAM_BYTES),
                        }),
                    }];
                    for (j, b) in rec.binds.iter().enumerate() {
                        let buffer = match b {
                            Bind::Arena => &arena,
                            Bind::Vecs => vecs,
                            Bind::State(c) => &work_states[*c].buffer,
                            Bind::Tokens => &tokens,
                            Bind::Weight(w) => w,
                            Bind::X16 => &x16,
                            Bind::W16 => &w16,
                            Bind::Part => &part,
                        };
                        entries.push(wgpu::BindGroupEntry {
                            binding: j as u32 + 1,
                            resource: buffer.as_entire_binding(),
                        });
                    }
                    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &layout,
                        entries: &entries,
                    });
                    dispatches.push(Dispatch {
                        pipeline,
                        bind_group,
                        groups: rec.groups,
                        op: rec.op,
                        kernel: rec.kernel,
                    });
                }
                let argmax = dispatches
                    .pop()
                    .ok_or_else(|| backend_err("no argmax dispatch"))?;
                Ok(Built {
                    _scratch: [x16, w16, part],
                    state_len,
                    weights_generation,
                    tokens,
                    work_states,
                    arena,
                    _params: param_buf,
                    dispatches,
                    argmax,
                    staging,
                })
            })
            .await??;
        Ok(built)
    }
}
