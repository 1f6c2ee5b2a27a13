//! Compiled pipelines, built on first use, with the plain or tiled fallback of a module the
//! device rejects.

use std::collections::HashMap;

use rwkv_core::Result;

use crate::gpu::Gpu;

use super::source::{coop_emulated_source, source};
use super::Kernel;

/// Compiled pipelines, built on first use.
#[derive(Default)]
pub(crate) struct Kernels {
    pipelines: HashMap<Kernel, wgpu::ComputePipeline>,
    /// Kernels whose subgroup / f16 variant the device rejected, with the reason; they run
    /// their plain variant instead.
    pub fallbacks: Vec<String>,
}

impl Kernels {
    pub async fn get(&mut self, gpu: &Gpu, kernel: Kernel) -> Result<wgpu::ComputePipeline> {
        if let Some(p) = self.pipelines.get(&kernel) {
            return Ok(p.clone());
        }
        let fast = match kernel {
            Kernel::MatMulCoop(_) | Kernel::GemmF16 { .. } if gpu.coop_emulated => {
                coop_emulated_source(kernel)
            }
            _ => source(kernel, gpu.subgroups, gpu.f16),
        };
        let plain = source(kernel, false, false);
        let pipeline = match compile(gpu, kernel, &fast).await {
            Ok(p) => p,
            // The tensor-core kernel is experimental in wgpu: a rejected module runs the tiled
            // kernel with the same tile, parameters and grid instead.
            Err(e) if matches!(kernel, Kernel::MatMulCoop(_)) => {
                self.fallbacks.push(format!("{kernel:?}: {e}"));
                let Kernel::MatMulCoop(k) = kernel else {
                    return Err(e);
                };
                let tiled = source(Kernel::MatMulTiled(k, 4), gpu.subgroups, gpu.f16);
                compile(gpu, Kernel::MatMulTiled(k, 4), &tiled).await?
            }
            // A shader compiler that rejects a feature it advertised must not cost the device.
            Err(e) if fast != plain => {
                self.fallbacks.push(format!("{kernel:?}: {e}"));
                compile(gpu, kernel, &plain).await?
            }
            Err(e) => return Err(e),
        };
        self.pipelines.insert(kernel, pipeline.clone());
        Ok(pipeline)
    }
}

async fn compile(gpu: &Gpu, kernel: Kernel, src: &str) -> Result<wgpu::ComputePipeline> {
    let label = format!("{kernel:?}");
    gpu.scoped(&format!("compiling kernel {label}"), || {
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(&label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        let module = if gpu.index_checks {
            gpu.device.create_shader_module(descriptor)
        } else {
            // SAFETY: only this crate's kernels get here, on a platform that bounds-checks
            // buffer accesses itself, and their loops all end (`gpu::index_checks_needed` gives
            // the reasoning). Division guards stay: dropping them gained nothing measurable
            // (H100 7.2B pp512 4,180 vs 4,153 tok/s).
            unsafe {
                gpu.device.create_shader_module_trusted(
                    descriptor,
                    wgpu::ShaderRuntimeChecks {
                        bounds_checks: false,
                        force_loop_bounding: false,
                        int_div_checks: true,
                        ..wgpu::ShaderRuntimeChecks::checked()
                    },
                )
            }
        };
        gpu.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&label),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
    })
    .await
}
