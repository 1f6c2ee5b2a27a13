//! WebGPU backend: one set of WGSL kernels (`shaders/*.wgsl`) for every non-NVIDIA GPU and,
//! later, the browser. Implements [`rwkv_core::backend::Backend`]; design notes in NOTES.md.
//!
//! - Weights: matrices repacked to `u32` words per dtype (F32, F16, BF16, Q8_0, Q4_K, Q6_K;
//!   other quants are converted to F32), split by rows to respect the device's binding limits;
//!   vectors in one f32 buffer.
//! - A step is one command buffer: slot states copied in, every op's dispatch in one compute
//!   pass, states copied out, logits or argmax copied to a read-back buffer.
//! - Optional features are used when present (`shader-f16` to read F16 weights, subgroups for
//!   reductions); every kernel has a plain fallback, selected with [`WgpuOptions`].

mod gpu;
mod kernels;
mod plan;
mod weights;

#[cfg(not(target_arch = "wasm32"))]
use rwkv_core::backend::Backend;
use rwkv_core::backend::{DeviceInfo, Op, Plan, PlanId, StepOutput, WeightMeta};
use rwkv_core::model::Tensor;
use rwkv_core::{Error, Result};

#[cfg(not(target_arch = "wasm32"))]
use gpu::block_on;
use gpu::{backend_err, invalid, Gpu, BACKEND_NAME};
pub use gpu::{probe_async, AdapterChoice, AdapterReport, MatVecChoice, WgpuOptions};
use kernels::Kernels;
use plan::{Compiled, Profiler, ReadBack};
use weights::DeviceWeight;

/// Every adapter wgpu can see (name, API, device type, features, limits), for the router and
/// `rwkv doctor`. Empty when there is none.
#[cfg(not(target_arch = "wasm32"))]
pub fn probe() -> Vec<AdapterReport> {
    block_on(probe_async())
}

/// GPU time of one op of a profiled step ([`WgpuBackend::profile_step`]). An op done by the
/// dispatch of the op before it (a TokenShift fused into its LayerNorm: kernel `LnShift` with
/// `shift: true`) has no entry; its time is in that op's.
#[derive(Debug, Clone)]
pub struct OpTime {
    /// Index in `Plan::ops`.
    pub op: usize,
    /// Its kernels, each once in order of first dispatch, joined by " + ", e.g.
    /// `MatMul(Q4K, 64)`, `ToF16 + DequantF16(Q4K) + GemmF16 { .. }` or (prefill WKV)
    /// `Wkv7Prep { .. } + Wkv7Scan { .. } + Wkv7Post { .. }`.
    pub kernel: String,
    /// Dispatches of the op (jobs x chunks for matrix products).
    pub dispatches: usize,
    pub micros: f64,
    /// Time per kernel of the op (one entry per distinct kernel, in order of first use).
    pub parts: Vec<(String, f64)>,
}

/// The WebGPU backend.
pub struct WgpuBackend {
    gpu: Gpu,
    kernels: Kernels,
    weights: Vec<Option<DeviceWeight>>,
    /// Names, dtypes and shapes of the uploads, for [`Plan::validate`].
    metas: Vec<Option<WeightMeta>>,
    vec_host: Vec<f32>,
    vec_buffer: Option<wgpu::Buffer>,
    /// Bumped when weights change after plans were built (their bind groups hold the buffers).
    weights_generation: u64,
    states: Vec<wgpu::Buffer>,
    state_len: usize,
    plans: Vec<Compiled>,
}

impl WgpuBackend {
    /// Opens the adapter `options` chooses. Fails with `Error::Backend` ("no wgpu adapter: ...")
    /// when there is none.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(options: WgpuOptions) -> Result<WgpuBackend> {
        block_on(Self::new_async(options))
    }

    /// [`WgpuBackend::new`] without blocking (for the browser, where nothing may block).
    pub async fn new_async(options: WgpuOptions) -> Result<WgpuBackend> {
        let gpu = Gpu::new(&options).await?;
        Ok(WgpuBackend {
            gpu,
            kernels: Kernels::default(),
            weights: Vec::new(),
            metas: Vec::new(),
            vec_host: Vec::new(),
            vec_buffer: None,
            weights_generation: 0,
            states: Vec::new(),
            state_len: 0,
            plans: Vec::new(),
        })
    }

    /// Whether kernels use `shader-f16` / subgroups on this device.
    pub fn uses_f16(&self) -> bool {
        self.gpu.f16
    }
    pub fn uses_subgroups(&self) -> bool {
        self.gpu.subgroups
    }
    /// Kernels whose fast variant the device rejected, with the reason (they run a plain or
    /// tiled variant instead): for diagnostics and A/B measurements.
    pub fn kernel_fallbacks(&self) -> &[String] {
        &self.kernels.fallbacks
    }
    /// Whether kernels keep wgpu's per-access index clamping (see [`WgpuOptions::index_checks`]).
    pub fn uses_index_checks(&self) -> bool {
        self.gpu.index_checks
    }
    /// Whether products of many rows run on cooperative matrices (tensor cores) on this device.
    pub fn uses_coop(&self) -> bool {
        self.gpu.coop
    }

    /// The Q4_K matrix-vector kernel of products of fewer than 8 rows on this device, e.g.
    /// "sg (subgroups of 32, 2 rows per subgroup)" or "old (64 invocations, 4 rows)"
    /// ([`WgpuOptions::matvec`]).
    pub fn q4k_matvec(&self) -> String {
        match self.gpu.matvec_sg {
            Some(m) => format!(
                "sg (subgroups of {}, {} rows per subgroup{})",
                m.size,
                m.rows_per_subgroup,
                if self.gpu.subgroups {
                    ""
                } else {
                    ", sums in workgroup memory"
                }
            ),
            None => "old (64 invocations, 4 rows)".into(),
        }
    }

    /// Device buffers holding weight `id` (more than one when it was split to fit the binding
    /// limit; 0 for vectors or unknown ids). For diagnostics and tests.
    pub fn weight_buffers(&self, id: usize) -> usize {
        match self.weights.get(id) {
            Some(Some(DeviceWeight::Matrix(m))) => m.chunks.len(),
            _ => 0,
        }
    }

    /// The kernel of every dispatch of a compiled plan's step, with the index of its op, as
    /// `{:?}` of the kernel (e.g. `Wkv7Scan { head_size: 64, chunk: 8 }`); empty until the plan
    /// has run once (it is built on its first step). For tests and tools.
    pub fn dispatch_kernels(&self, plan: PlanId) -> Vec<(usize, String)> {
        self.plans
            .get(plan.0)
            .map(|p| {
                p.dispatch_ops()
                    .into_iter()
                    .map(|(op, k)| (op, format!("{k:?}")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Destroys the device, as a driver reset would; every later call must fail with
    /// `Error::Backend` rather than hang or panic. For tests of the failure path.
    #[doc(hidden)]
    pub fn simulate_device_loss(&mut self) {
        self.gpu.device.destroy();
    }

    async fn vecs(&mut self) -> Result<wgpu::Buffer> {
        if let Some(b) = &self.vec_buffer {
            return Ok(b.clone());
        }
        let gpu = &self.gpu;
        let host = &self.vec_host;
        let buffer = gpu
            .scoped("uploading vectors", || -> Result<wgpu::Buffer> {
                let b = gpu.buffer(
                    "vectors",
                    (host.len() as u64) * 4,
                    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                )?;
                if !host.is_empty() {
                    gpu.queue.write_buffer(&b, 0, bytemuck::cast_slice(host));
                }
                Ok(b)
            })
            .await??;
        self.vec_buffer = Some(buffer.clone());
        Ok(buffer)
    }

    /// Builds (or rebuilds after a state or vector change) the device side of plan `i`.
    async fn ensure_built(&mut self, i: usize) -> Result<()> {
        if self.state_len == 0 {
            return Err(backend_err(
                "no states allocated: call alloc_states before running a plan",
            ));
        }
        let fresh = self.plans[i].built.as_ref().is_some_and(|b| {
            b.state_len == self.state_len && b.weights_generation == self.weights_generation
        });
        if fresh {
            return Ok(());
        }
        let vecs = self.vecs().await?;
        let (gpu, kernels, weights) = (&self.gpu, &mut self.kernels, &self.weights);
        self.plans[i]
            .build(
                gpu,
                kernels,
                weights,
                &vecs,
                self.weights_generation,
                self.state_len,
            )
            .await
    }

    async fn staging_read(&self, src: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
        let gpu = &self.gpu;
        let staging = gpu.buffer(
            "state read-back",
            len,
            wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        )?;
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, len);
        let idx = gpu
            .scoped("reading state", || gpu.queue.submit([enc.finish()]))
            .await?;
        gpu.read_mapped(&staging, len, idx).await
    }

    /// Runs one step of `plan` (states updated as by `execute`, no output) with a GPU timestamp
    /// around every dispatch and returns the time per op, in plan order (the op index, its
    /// kernels and dispatch count, microseconds). Needs the adapter's timestamp features.
    pub async fn profile_step_async(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<OpTime>> {
        self.profile_async(plan, tokens, slots, true).await
    }

    /// [`WgpuBackend::profile_step_async`] with one entry per dispatch (`dispatches` = 1), for
    /// the time of each kernel of an op.
    pub async fn profile_dispatches_async(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<OpTime>> {
        self.profile_async(plan, tokens, slots, false).await
    }

    async fn profile_async(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        per_op: bool,
    ) -> Result<Vec<OpTime>> {
        if !self.gpu.timestamps {
            return Err(backend_err(
                "profiling needs the adapter's TIMESTAMP_QUERY feature",
            ));
        }
        self.check_step(plan, tokens, slots, &StepOutput::None)?;
        self.ensure_built(plan.0).await?;
        let p = &self.plans[plan.0];
        let ops = p.dispatch_ops();
        let n = 2 * ops.len() as u64;
        if n > wgpu::QUERY_SET_MAX_QUERIES as u64 {
            return Err(backend_err(format!("{n} timestamps exceed a query set")));
        }
        let gpu = &self.gpu;
        let built = p
            .built
            .as_ref()
            .ok_or_else(|| backend_err("plan not built"))?;
        let (submission, profiler) = gpu
            .scoped("profiling step", || -> Result<_> {
                let profiler = Profiler {
                    queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("op timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count: n as u32,
                    }),
                    resolve: gpu.buffer(
                        "timestamps",
                        n * 8,
                        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    )?,
                    staging: gpu.buffer(
                        "timestamp read-back",
                        n * 8,
                        wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    )?,
                };
                gpu.queue
                    .write_buffer(&built.tokens, 0, bytemuck::cast_slice(tokens));
                let (cmd, _) =
                    p.encode(gpu, &self.states, slots, ReadBack::None, Some(&profiler))?;
                Ok((gpu.queue.submit([cmd]), profiler))
            })
            .await??;
        let bytes = gpu
            .read_mapped(&profiler.staging, n * 8, submission)
            .await?;
        let stamps: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect();
        let ns_per_tick = gpu.queue.get_timestamp_period() as f64;
        let mut out: Vec<OpTime> = Vec::new();
        for (i, (op, kernel)) in ops.iter().enumerate() {
            let us = stamps[2 * i + 1].saturating_sub(stamps[2 * i]) as f64 * ns_per_tick / 1e3;
            let name = format!("{kernel:?}");
            match out.last_mut() {
                Some(last) if per_op && last.op == *op => {
                    last.micros += us;
                    last.dispatches += 1;
                    match last.parts.iter_mut().find(|(k, _)| *k == name) {
                        Some(part) => part.1 += us,
                        None => {
                            last.kernel = format!("{} + {name}", last.kernel);
                            last.parts.push((name, us));
                        }
                    }
                }
                _ => out.push(OpTime {
                    op: *op,
                    kernel: name.clone(),
                    dispatches: 1,
                    micros: us,
                    parts: vec![(name, us)],
                }),
            }
        }
        Ok(out)
    }

    /// [`WgpuBackend::profile_dispatches_async`], blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_dispatches(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<OpTime>> {
        block_on(self.profile_dispatches_async(plan, tokens, slots))
    }

    /// [`WgpuBackend::profile_step_async`], blocking.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn profile_step(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
    ) -> Result<Vec<OpTime>> {
        block_on(self.profile_step_async(plan, tokens, slots))
    }

    /// What `Backend::info` reports.
    pub fn device_info(&self) -> DeviceInfo {
        let g = &self.gpu;
        DeviceInfo {
            backend: gpu::BACKEND_NAME.into(),
            device: g.info.name.clone(),
            properties: vec![
                ("api".into(), format!("{:?}", g.info.backend)),
                ("device_type".into(), format!("{:?}", g.info.device_type)),
                (
                    "driver".into(),
                    format!("{} {}", g.info.driver, g.info.driver_info)
                        .trim()
                        .to_string(),
                ),
                ("shader_f16".into(), g.f16.to_string()),
                ("subgroups".into(), g.subgroups.to_string()),
                ("cooperative_matrix".into(), g.coop.to_string()),
                ("index_checks".into(), g.index_checks.to_string()),
                ("timestamps".into(), g.timestamps.to_string()),
                ("q4k_matvec".into(), self.q4k_matvec()),
                ("max_binding_bytes".into(), g.max_binding.to_string()),
                (
                    "kernel_fallbacks".into(),
                    self.kernels.fallbacks.len().to_string(),
                ),
            ],
        }
    }

    // The device work of each `Backend` method, awaitable (the browser cannot block).

    pub async fn upload_weight_async(
        &mut self,
        id: usize,
        name: &str,
        tensor: &Tensor,
    ) -> Result<()> {
        if self.weights.len() <= id {
            self.weights.resize_with(id + 1, || None);
            self.metas.resize_with(id + 1, || None);
        }
        let weight = if tensor.shape.len() <= 1 {
            let values = weights::to_f32(name, tensor)?;
            let offset = self.vec_host.len();
            // Offsets are u32 in the kernels.
            if offset + values.len() > u32::MAX as usize / 4 {
                return Err(backend_err(format!(
                    "weight '{name}': too many vector values"
                )));
            }
            self.vec_host.extend_from_slice(&values);
            // Every vector starts at a multiple of 4 values: kernels read them as vec4<f32>.
            let padded = self.vec_host.len().next_multiple_of(4);
            self.vec_host.resize(padded, 0.0);
            if self.vec_buffer.take().is_some() {
                self.weights_generation += 1;
            }
            DeviceWeight::Vector { offset }
        } else {
            let gpu = &self.gpu;
            let m = gpu
                .scoped(&format!("uploading '{name}'"), || {
                    weights::upload_matrix(gpu, name, tensor)
                })
                .await??;
            DeviceWeight::Matrix(m)
        };
        self.weights[id] = Some(weight);
        self.metas[id] = Some(WeightMeta::of(name, tensor));
        // Plans built before this upload rebuild their bind groups on their next step.
        self.weights_generation += 1;
        Ok(())
    }

    pub async fn alloc_states_async(&mut self, n_slots: usize, state_len: usize) -> Result<()> {
        let gpu = &self.gpu;
        let bytes = (state_len as u64)
            .checked_mul(4)
            .ok_or_else(|| backend_err("state too large"))?;
        self.states.clear();
        let states = gpu
            .scoped("allocating states", || -> Result<Vec<wgpu::Buffer>> {
                (0..n_slots)
                    .map(|_| {
                        gpu.buffer(
                            "state slot",
                            bytes,
                            wgpu::BufferUsages::STORAGE
                                | wgpu::BufferUsages::COPY_DST
                                | wgpu::BufferUsages::COPY_SRC,
                        )
                    })
                    .collect()
            })
            .await??;
        // New buffers are zeroed by WebGPU.
        self.states = states;
        self.state_len = state_len;
        Ok(())
    }

    pub async fn compile_async(&mut self, plan: &Plan) -> Result<PlanId> {
        let metas: Vec<WeightMeta> = self
            .metas
            .iter()
            .enumerate()
            .map(|(id, m)| {
                m.clone()
                    .ok_or_else(|| invalid(format!("weight {id} was not uploaded")))
            })
            .collect::<Result<_>>()?;
        let facts = plan.validate(BACKEND_NAME, &metas)?;
        let uses_state = plan
            .ops
            .iter()
            .any(|op| matches!(op, Op::TokenShift { .. } | Op::Wkv7(_)));
        if uses_state && self.state_len > 0 && plan.state.len() > self.state_len {
            return Err(invalid(format!(
                "the plan's state has {} values, the allocated states {}",
                plan.state.len(),
                self.state_len
            )));
        }
        let compiled = Compiled::new(&self.gpu, plan, &self.weights, facts)?;
        self.plans.push(compiled);
        let i = self.plans.len() - 1;
        if self.state_len > 0 {
            if let Err(e) = self.ensure_built(i).await {
                self.plans.pop();
                return Err(e);
            }
        }
        Ok(PlanId(i))
    }

    /// Checks a step's arguments against the plan, the vocabulary and the slots; says what the
    /// step reads back.
    fn check_step(
        &self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: &StepOutput<'_>,
    ) -> Result<ReadBack> {
        let i = plan.0;
        let p = self
            .plans
            .get(i)
            .ok_or_else(|| invalid(format!("unknown plan {i}")))?;
        p.plan.check_step(
            BACKEND_NAME,
            &p.facts,
            tokens,
            slots,
            self.states.len(),
            out,
        )?;
        let read = match out {
            StepOutput::None => ReadBack::None,
            StepOutput::Logits(_) => ReadBack::Logits,
            StepOutput::Argmax(_) => ReadBack::Argmax,
        };
        Ok(read)
    }

    pub async fn execute_async(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()> {
        let i = plan.0;
        let read = self.check_step(plan, tokens, slots, &out)?;
        self.ensure_built(i).await?;
        let p = &self.plans[i];
        let gpu = &self.gpu;
        let built = p
            .built
            .as_ref()
            .ok_or_else(|| backend_err("plan not built"))?;
        let (submission, len) = gpu
            .scoped("running step", || -> Result<_> {
                gpu.queue
                    .write_buffer(&built.tokens, 0, bytemuck::cast_slice(tokens));
                let (cmd, len) = p.encode(gpu, &self.states, slots, read, None)?;
                Ok((gpu.queue.submit([cmd]), len))
            })
            .await??;
        if read == ReadBack::None {
            return gpu.check_submitted(submission);
        }
        let staging = p.staging().ok_or_else(|| backend_err("plan not built"))?;
        let bytes = gpu.read_mapped(staging, len, submission).await?;
        match out {
            StepOutput::Logits(o) => {
                for (v, b) in o.iter_mut().zip(bytes.chunks_exact(4)) {
                    *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            StepOutput::Argmax(o) => {
                for (v, b) in o.iter_mut().zip(bytes.chunks_exact(4)) {
                    *v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            StepOutput::None => {}
        }
        Ok(())
    }

    pub async fn read_state_async(&mut self, slot: usize, out: &mut [f32]) -> Result<()> {
        let buf = self
            .states
            .get(slot)
            .ok_or_else(|| backend_err(format!("slot {slot} out of range")))?;
        if out.len() != self.state_len {
            return Err(Error::invalid(format!(
                "state has {} values, got {}",
                self.state_len,
                out.len()
            )));
        }
        let bytes = self.staging_read(buf, self.state_len as u64 * 4).await?;
        for (v, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    pub async fn write_state_async(&mut self, slot: usize, values: &[f32]) -> Result<()> {
        let buf = self
            .states
            .get(slot)
            .ok_or_else(|| backend_err(format!("slot {slot} out of range")))?;
        if values.len() != self.state_len {
            return Err(Error::invalid(format!(
                "state has {} values, got {}",
                self.state_len,
                values.len()
            )));
        }
        let gpu = &self.gpu;
        gpu.scoped("writing state", || {
            gpu.queue.write_buffer(buf, 0, bytemuck::cast_slice(values))
        })
        .await?;
        // Writes are staged until the next submit; submit nothing now so a lost device shows.
        let idx = gpu.queue.submit([]);
        gpu.check_submitted(idx)
    }
}

/// The blocking contract, for native callers: each method waits on its async twin.
#[cfg(not(target_arch = "wasm32"))]
impl Backend for WgpuBackend {
    fn info(&self) -> DeviceInfo {
        self.device_info()
    }

    fn upload_weight(&mut self, id: usize, name: &str, tensor: &Tensor) -> Result<()> {
        block_on(self.upload_weight_async(id, name, tensor))
    }

    fn alloc_states(&mut self, n_slots: usize, state_len: usize) -> Result<()> {
        block_on(self.alloc_states_async(n_slots, state_len))
    }

    fn compile(&mut self, plan: &Plan) -> Result<PlanId> {
        block_on(self.compile_async(plan))
    }

    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> Result<()> {
        block_on(self.execute_async(plan, tokens, slots, out))
    }

    fn read_state(&mut self, slot: usize, out: &mut [f32]) -> Result<()> {
        block_on(self.read_state_async(slot, out))
    }

    fn write_state(&mut self, slot: usize, values: &[f32]) -> Result<()> {
        block_on(self.write_state_async(slot, values))
    }
}

/// The engine core ([`rwkv_core::runner::Runner`]) drives WebGPU through its awaitable methods,
/// so the browser never blocks.
impl rwkv_core::runner::AsyncBackend for WgpuBackend {
    fn upload_weight(
        &mut self,
        id: usize,
        name: &str,
        tensor: &Tensor,
    ) -> impl std::future::Future<Output = Result<()>> {
        self.upload_weight_async(id, name, tensor)
    }
    fn alloc_states(
        &mut self,
        n_slots: usize,
        state_len: usize,
    ) -> impl std::future::Future<Output = Result<()>> {
        self.alloc_states_async(n_slots, state_len)
    }
    fn compile(&mut self, plan: &Plan) -> impl std::future::Future<Output = Result<PlanId>> {
        self.compile_async(plan)
    }
    fn execute(
        &mut self,
        plan: PlanId,
        tokens: &[u32],
        slots: &[usize],
        out: StepOutput<'_>,
    ) -> impl std::future::Future<Output = Result<()>> {
        self.execute_async(plan, tokens, slots, out)
    }
    fn read_state(
        &mut self,
        slot: usize,
        out: &mut [f32],
    ) -> impl std::future::Future<Output = Result<()>> {
        self.read_state_async(slot, out)
    }
    fn write_state(
        &mut self,
        slot: usize,
        values: &[f32],
    ) -> impl std::future::Future<Output = Result<()>> {
        self.write_state_async(slot, values)
    }
}
