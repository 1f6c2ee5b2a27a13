//! Encoding of one step (one command buffer: states in, every dispatch in one compute pass,
//! states out, result to the read-back buffer), and the profiled variant with a timestamp pair
//! around every dispatch.

use rwkv_core::Result;

use crate::gpu::{backend_err, Gpu};
use crate::kernels::Kernel;

use super::{Compiled, Dispatch};

/// What the step copies back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadBack {
    None,
    Logits,
    Argmax,
}

impl Compiled {
    /// Encodes one step into one command buffer: states in, every dispatch, states out, result
    /// to the read-back buffer. Returns the read-back buffer and its byte length.
    pub fn encode(
        &self,
        gpu: &Gpu,
        states: &[wgpu::Buffer],
        slots: &[usize],
        read: ReadBack,
        profile: Option<&Profiler>,
    ) -> Result<(wgpu::CommandBuffer, u64)> {
        let built = self
            .built
            .as_ref()
            .ok_or_else(|| backend_err("plan not built"))?;
        let mut enc = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("rwkv step"),
            });
        // One copy per (sequence, chunk) and direction: a sequence's part of a chunk is
        // contiguous both in its slot and in the chunk.
        let state_copies = || {
            slots.iter().enumerate().flat_map(move |(s, &slot)| {
                built
                    .work_states
                    .iter()
                    .filter(|c| c.len > 0)
                    .map(move |c| {
                        let bytes = c.len as u64 * 4;
                        (
                            &states[slot],
                            c.first as u64 * 4,
                            &c.buffer,
                            s as u64 * bytes,
                            bytes,
                        )
                    })
            })
        };
        for (slot, slot_at, chunk, chunk_at, bytes) in state_copies() {
            enc.copy_buffer_to_buffer(slot, slot_at, chunk, chunk_at, bytes);
        }
        let run = |pass: &mut wgpu::ComputePass<'_>, d: &Dispatch| {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        };
        if let Some(p) = profile {
            // One pass per dispatch with timestamps at its start and end: pass-level timestamps
            // are what WebGPU offers (in-pass ones are a native extension).
            for (i, d) in built.dispatches.iter().enumerate() {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("rwkv op (profiled)"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &p.queries,
                        beginning_of_pass_write_index: Some(2 * i as u32),
                        end_of_pass_write_index: Some(2 * i as u32 + 1),
                    }),
                });
                run(&mut pass, d);
            }
            let n = 2 * built.dispatches.len() as u32;
            enc.resolve_query_set(&p.queries, 0..n, &p.resolve, 0);
            enc.copy_buffer_to_buffer(&p.resolve, 0, &p.staging, 0, n as u64 * 8);
        } else {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("rwkv ops"),
                timestamp_writes: None,
            });
            for d in &built.dispatches {
                run(&mut pass, d);
            }
            if read == ReadBack::Argmax {
                run(&mut pass, &built.argmax);
            }
        }
        for (slot, slot_at, chunk, chunk_at, bytes) in state_copies() {
            enc.copy_buffer_to_buffer(chunk, chunk_at, slot, slot_at, bytes);
        }
        let len = match read {
            ReadBack::None => 0,
            ReadBack::Logits => {
                let len = self.logits_len() as u64 * 4;
                enc.copy_buffer_to_buffer(
                    &built.arena,
                    self.arena.offsets[self.plan.logits] as u64 * 4,
                    &built.staging,
                    0,
                    len,
                );
                len
            }
            ReadBack::Argmax => {
                let len = self.logit_rows() as u64 * 4;
                enc.copy_buffer_to_buffer(
                    &built.arena,
                    self.arena.argmax_off as u64 * 4,
                    &built.staging,
                    0,
                    len,
                );
                len
            }
        };
        Ok((enc.finish(), len))
    }

    /// (op index, kernel) of every dispatch of a step, in order (without the argmax).
    pub fn dispatch_ops(&self) -> Vec<(usize, Kernel)> {
        self.built
            .as_ref()
            .map(|b| b.dispatches.iter().map(|d| (d.op, d.kernel)).collect())
            .unwrap_or_default()
    }

    pub fn staging(&self) -> Option<&wgpu::Buffer> {
        self.built.as_ref().map(|b| &b.staging)
    }
}

/// Timestamp queries around every dispatch of one step (see `WgpuBackend::profile_step`).
pub(crate) struct Profiler {
    pub queries: wgpu::QuerySet,
    pub resolve: wgpu::Buffer,
    pub staging: wgpu::Buffer,
}
