//! The device: adapter choice, device creation, error capture and read-back.
//!
//! Failures never panic or hang: validation and out-of-memory errors are caught with error
//! scopes around every batch of work, errors outside a scope land in an uncaptured-error sink
//! (instead of wgpu's default handler, which panics), device loss is recorded by the lost
//! callback, and waits for the GPU have a timeout.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use rwkv_core::{BackendErrorKind, Error, Result};

pub(crate) const BACKEND_NAME: &str = "webgpu";

/// Anything else the device reported (`BackendErrorKind::Failed`).
pub(crate) fn backend_err(what: impl Into<String>) -> Error {
    Error::backend(BACKEND_NAME, what)
}

/// A call that breaks the backend contract (unknown plan, slot or weight id).
pub(crate) fn invalid(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND_NAME, BackendErrorKind::InvalidArgument, what)
}

/// A buffer or binding larger than the device allows, or an allocation the device refused.
pub(crate) fn out_of_memory(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND_NAME, BackendErrorKind::OutOfMemory, what)
}

/// An op, shape or head size this device cannot run (grid or workgroup limits).
pub(crate) fn unsupported(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND_NAME, BackendErrorKind::Unsupported, what)
}

/// No adapter, or a device that will not open.
fn unavailable(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND_NAME, BackendErrorKind::Unavailable, what)
}

/// The device was lost, hung, or rejected a submission.
fn device_lost(what: impl Into<String>) -> Error {
    Error::backend_kind(BACKEND_NAME, BackendErrorKind::DeviceLost, what)
}

/// Which adapter [`crate::WgpuBackend::new`] takes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AdapterChoice {
    /// wgpu's pick with `PowerPreference::HighPerformance`.
    #[default]
    HighPerformance,
    /// wgpu's pick with `PowerPreference::LowPower`.
    LowPower,
    /// Position in [`crate::probe`]'s list.
    Index(usize),
    /// First adapter whose name contains this text (case-insensitive).
    Name(String),
}

/// Options for [`crate::WgpuBackend::new`]: every switch of the backend. The backend reads no
/// environment variable; the `rwkv` CLI maps its `RWKV_WGPU_*` variables onto these fields
/// (`rwkv::router::wgpu_options_from_env`), the browser passes them explicitly.
#[derive(Debug, Clone)]
pub struct WgpuOptions {
    /// Which adapter to open (default: wgpu's high-performance pick).
    pub adapter: AdapterChoice,
    /// Use `shader-f16` when the adapter has it (default on).
    pub allow_f16: bool,
    /// Use subgroup operations when the adapter has them (default on).
    pub allow_subgroups: bool,
    /// Use cooperative matrices (tensor cores, wgpu's experimental
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX`, native only) for products of 16 rows and more when
    /// the adapter offers 16x16x16 f16 -> f32 tiles and subgroups of 32 (default on; H100 1.5B
    /// pp512 2,234 tok/s with, 622 without). Never in the browser.
    pub allow_coop: bool,
    /// Where cooperative matrices are used, run products of 32 rows and more on f16 scratch
    /// copies of their operands (`gemm_f16.wgsl`, 128x128 tiles) instead of decoding weights
    /// inside `matmul_coop.wgsl`'s 64x64 tiles (default on; off for A/B measurements or a
    /// driver that mis-runs it).
    pub f16_gemm: bool,
    /// Runs the cooperative-matrix kernel with its tensor-core operations emulated in plain WGSL
    /// (slow; needs shader-f16 only), so tests exercise that path on any device. Not for use.
    #[doc(hidden)]
    pub emulate_coop: bool,
    /// Invocations per state row of the prefill WKV scan (1, 2 or 4; `None`: the measured
    /// default, see `plan::choice::wkv_scan_geometry`), for tests of every variant. Ignored
    /// where that many lanes do not fit. Not for use.
    #[doc(hidden)]
    pub wkv_scan_lanes: Option<u32>,
    /// Which Q4_K matrix-vector kernel products of fewer than 8 rows use (default: the
    /// subgroup kernel with 2 rows per subgroup where the device's subgroup size is fixed).
    pub matvec: MatVecChoice,
    /// Cap on the bytes of one storage binding / buffer below the adapter's limits (for tests of
    /// matrix splitting, or to mimic a browser's 128 MiB default).
    pub max_binding_bytes: Option<u64>,
    /// Keep wgpu's index clamping and loop bounding in every kernel even where the platform
    /// bounds-checks buffer accesses itself (see [`index_checks_needed`]; default off: the
    /// loop counters cost 3.4x on the H100's products).
    pub index_checks: bool,
    /// How long to wait for one step or read-back before reporting the device as hung
    /// (default 120 s).
    pub wait_timeout: Duration,
}

impl Default for WgpuOptions {
    fn default() -> Self {
        WgpuOptions {
            adapter: AdapterChoice::default(),
            allow_f16: true,
            allow_subgroups: true,
            allow_coop: true,
            f16_gemm: true,
            emulate_coop: false,
            wkv_scan_lanes: None,
            matvec: MatVecChoice::default(),
            max_binding_bytes: None,
            index_checks: false,
            wait_timeout: Duration::from_secs(120),
        }
    }
}

/// The Q4_K matrix-vector kernel for products of fewer than 8 activation rows
/// ([`WgpuOptions::matvec`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatVecChoice {
    /// `matvec_q4k.wgsl` (64 invocations, 4 rows, workgroup reduction).
    Old,
    /// `matvec_q4k_sg.wgsl` with `rows_per_subgroup` (1, 2 or 4; the default 2 won the H100
    /// A/B against 1 and 4 on 1.5B and 7.2B) where the device has subgroups of one fixed size
    /// (the old kernel elsewhere).
    Subgroup { rows_per_subgroup: u32 },
    /// `matvec_q4k_sg.wgsl` on any device, its grid laid out for subgroups of `size` (a power of
    /// two from 4 to 256): for tests on adapters whose subgroup size is not fixed, of other
    /// sizes than the device's, or without subgroups (sums through workgroup memory).
    Forced { size: u32, rows_per_subgroup: u32 },
}

impl Default for MatVecChoice {
    fn default() -> Self {
        MatVecChoice::Subgroup {
            rows_per_subgroup: MATVEC_DEFAULT_RPS,
        }
    }
}

/// Subgroup size and rows per subgroup of `matvec_q4k_sg.wgsl` on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MatVecSg {
    pub size: u32,
    pub rows_per_subgroup: u32,
}

/// Default rows per subgroup of `matvec_q4k_sg.wgsl`: 2·2 header + piece loads in flight per
/// lane and step, 16 rows per workgroup at subgroups of 32 (a [4096 x 4096] product is 256
/// workgroups for the H100's 132 SMs; 4 rows per subgroup would leave 128).
const MATVEC_DEFAULT_RPS: u32 = 2;

/// The subgroup matrix-vector kernel's configuration on a device, or `None` for the old kernel.
/// It needs 256 invocations per workgroup, a subgroup size that divides them (a power of two,
/// at least 4) and, unless forced, subgroups in use whose size is fixed (min = max): the grid
/// is laid out for that size.
fn matvec_sg(
    choice: MatVecChoice,
    subgroups: bool,
    info: &wgpu::AdapterInfo,
    limits: &wgpu::Limits,
) -> Option<MatVecSg> {
    let wide_enough = limits.max_compute_invocations_per_workgroup >= 256
        && limits.max_compute_workgroup_size_x >= 256;
    let (size, rows_per_subgroup) = match choice {
        MatVecChoice::Old => return None,
        MatVecChoice::Forced {
            size,
            rows_per_subgroup,
        } => (size, rows_per_subgroup),
        MatVecChoice::Subgroup { rows_per_subgroup } => {
            if !subgroups || info.subgroup_min_size != info.subgroup_max_size {
                return None;
            }
            (info.subgroup_max_size, rows_per_subgroup)
        }
    };
    (wide_enough
        && size.is_power_of_two()
        && (4..=256).contains(&size)
        && matches!(rows_per_subgroup, 1 | 2 | 4))
    .then_some(MatVecSg {
        size,
        rows_per_subgroup,
    })
}

/// One adapter as [`crate::probe`] sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AdapterReport {
    pub index: usize,
    pub name: String,
    /// "Vulkan", "Metal", "Dx12", "Gl", "BrowserWebGpu".
    pub backend: String,
    /// "DiscreteGpu", "IntegratedGpu", "VirtualGpu", "Cpu", "Other".
    pub device_type: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// Cooperative matrices usable by the kernels (see [`WgpuOptions::allow_coop`]).
    pub cooperative_matrix: bool,
    /// The adapter's cooperative-matrix configurations, e.g. "16x16x16 F16->F32".
    pub cooperative_matrix_configs: Vec<String>,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub max_buffer_size: u64,
    pub max_storage_buffer_binding_size: u64,
    pub max_storage_buffers_per_shader_stage: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_workgroups_per_dimension: u32,
    /// All features, wgpu's names.
    pub features: Vec<String>,
}

fn report(index: usize, adapter: &wgpu::Adapter) -> AdapterReport {
    let info = adapter.get_info();
    let features = adapter.features();
    let limits = adapter.limits();
    AdapterReport {
        index,
        name: info.name.clone(),
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        cooperative_matrix: coop_capable(adapter),
        cooperative_matrix_configs: coop_configs(adapter),
        subgroup_min_size: info.subgroup_min_size,
        subgroup_max_size: info.subgroup_max_size,
        max_buffer_size: limits.max_buffer_size,
        max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
        max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
        max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
        max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
        features: features.iter_names().map(|(n, _)| n.to_string()).collect(),
    }
}

/// The adapter's cooperative-matrix configurations as "MxNxK AB->CR".
fn coop_configs(adapter: &wgpu::Adapter) -> Vec<String> {
    if !adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    {
        return Vec::new();
    }
    adapter
        .cooperative_matrix_properties()
        .iter()
        .map(|p| {
            format!(
                "{}x{}x{} {:?}->{:?}",
                p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
            )
        })
        .collect()
}

/// Whether matmul_coop.wgsl can run on `adapter`: cooperative matrices with 16x16x16
/// f16 x f16 -> f32 tiles, shader-f16, subgroups, and a subgroup size of exactly 32 (the kernel's
/// 128 invocations must be 4 subgroups, each owning 2x2 output fragments). Never in the browser.
fn coop_capable(adapter: &wgpu::Adapter) -> bool {
    if cfg!(target_arch = "wasm32") {
        return false;
    }
    let features = adapter.features();
    let info = adapter.get_info();
    features.contains(
        wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
            | wgpu::Features::SHADER_F16
            | wgpu::Features::SUBGROUP,
    ) && info.subgroup_min_size == 32
        && info.subgroup_max_size == 32
        && adapter.cooperative_matrix_properties().iter().any(|p| {
            p.m_size == 16
                && p.n_size == 16
                && p.k_size == 16
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        })
}

/// Whether the kernels must keep wgpu's runtime checks (index clamping and loop bounding) on
/// `backend`.
///
/// wgpu clamps every index into workgroup and private arrays in generated code (and storage
/// indices where the driver does not check them), and adds a counter to every loop so that no
/// loop can run forever. On the H100 a cooperative-matrix product ran at 34 TFLOP/s with them and
/// 115 without (examples/gemm_probe.rs); the loop counters also keep the driver from unrolling,
/// which sends small private arrays to local memory. The checks are dropped only where (a) the
/// platform itself keeps buffer accesses inside their bindings: Vulkan (wgpu enables robust
/// buffer access) and D3D12 (bounds-checked buffer views); never in the browser or on Metal/GL;
/// and (b) the kernels are ours: their workgroup and private array indices are built from the
/// invocation index and compile-time constants, and every loop counts a u32 up to a bound
/// from host-validated parameters (sizes far below u32::MAX, so the step cannot wrap).
pub(crate) fn index_checks_needed(backend: wgpu::Backend, options: &WgpuOptions) -> bool {
    cfg!(target_arch = "wasm32")
        || options.index_checks
        || !matches!(backend, wgpu::Backend::Vulkan | wgpu::Backend::Dx12)
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu can see, in enumeration order (the order [`AdapterChoice::Index`] uses).
pub async fn probe_async() -> Vec<AdapterReport> {
    let adapters = instance().enumerate_adapters(wgpu::Backends::all()).await;
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| report(i, a))
        .collect()
}

/// The device and what the kernels may use on it.
pub(crate) struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub f16: bool,
    pub subgroups: bool,
    /// Cooperative matrices (matmul_coop.wgsl) for products of many rows.
    pub coop: bool,
    /// ... emulated in plain WGSL (`WgpuOptions::emulate_coop`).
    pub coop_emulated: bool,
    /// `matvec_q4k_sg.wgsl` for Q4_K products of fewer than 8 rows, or `None`: `matvec_q4k.wgsl`.
    pub matvec_sg: Option<MatVecSg>,
    pub timestamps: bool,
    /// Lanes per state row asked for the prefill WKV scan (`WgpuOptions::wkv_scan_lanes`).
    pub wkv_scan_lanes: Option<u32>,
    /// Kernels compiled with wgpu's index clamping and loop bounding (see
    /// [`index_checks_needed`]).
    pub index_checks: bool,
    /// Products of many rows on f16 scratch operands where `coop` ([`WgpuOptions::f16_gemm`]).
    pub f16_gemm: bool,
    /// Largest buffer we create and bind (min of binding and buffer limits and the option).
    pub max_binding: u64,
    // The browser has no blocking wait.
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    pub wait_timeout: Duration,
    lost: Arc<Mutex<Option<String>>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
}

impl Gpu {
    pub async fn new(options: &WgpuOptions) -> Result<Gpu> {
        let instance = instance();
        let adapter = match &options.adapter {
            AdapterChoice::HighPerformance | AdapterChoice::LowPower => {
                let power_preference = if options.adapter == AdapterChoice::LowPower {
                    wgpu::PowerPreference::LowPower
                } else {
                    wgpu::PowerPreference::HighPerformance
                };
                instance
                    .request_adapter(&wgpu::RequestAdapterOptions {
                        power_preference,
                        force_fallback_adapter: false,
                        compatible_surface: None,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| unavailable(format!("no wgpu adapter: {e}")))?
            }
            AdapterChoice::Index(i) => {
                let mut all = instance.enumerate_adapters(wgpu::Backends::all()).await;
                let n = all.len();
                if *i >= n {
                    return Err(unavailable(format!(
                        "no wgpu adapter: index {i}, only {n} adapters"
                    )));
                }
                all.swap_remove(*i)
            }
            AdapterChoice::Name(name) => {
                let want = name.to_lowercase();
                let all = instance.enumerate_adapters(wgpu::Backends::all()).await;
                all.into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&want))
                    .ok_or_else(|| {
                        unavailable(format!("no wgpu adapter: none named like '{name}'"))
                    })?
            }
        };
        let info = adapter.get_info();
        let have = adapter.features();
        let mut features = wgpu::Features::empty();
        let f16 = options.allow_f16 && have.contains(wgpu::Features::SHADER_F16);
        let subgroups = options.allow_subgroups && have.contains(wgpu::Features::SUBGROUP);
        if f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if subgroups {
            features |= wgpu::Features::SUBGROUP;
        }
        let mut coop = options.allow_coop && f16 && subgroups && coop_capable(&adapter);
        let coop_emulated = !coop && options.emulate_coop && f16;
        // Pass-level timestamps, for WgpuBackend::profile_step only.
        let timestamps = have.contains(wgpu::Features::TIMESTAMP_QUERY);
        if timestamps {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Ask for everything the adapter offers: on native that lifts the 128 MiB binding default.
        let limits = adapter.limits();
        let descriptor = |features, experimental_features| wgpu::DeviceDescriptor {
            label: Some("rwkv-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            ..Default::default()
        };
        let mut opened = Err(None);
        if coop {
            // SAFETY: wgpu gates experimental features behind this token because their
            // validation may be incomplete (a bad shader could misbehave instead of being
            // rejected). Only matmul_coop.wgsl uses cooperative matrices: its cooperative loads
            // and stores address workgroup tiles at offsets inside them by construction (the
            // tests run the same offsets through the emulated kernel), and its storage accesses
            // keep wgpu's usual bounds checks. Never requested in the browser; `allow_coop:
            // false` leaves it off.
            let experimental = unsafe { wgpu::ExperimentalFeatures::enabled() };
            let with_coop = features | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            opened = adapter
                .request_device(&descriptor(with_coop, experimental))
                .await
                .map_err(Some);
        }
        if opened.is_err() {
            // A device that will not open with the experimental feature opens without it.
            coop = false;
            opened = adapter
                .request_device(&descriptor(
                    features,
                    wgpu::ExperimentalFeatures::disabled(),
                ))
                .await
                .map_err(Some);
        }
        let (device, queue) = opened.map_err(|e| {
            let e = e.map(|e| e.to_string()).unwrap_or_default();
            unavailable(format!("{}: cannot open device: {e}", info.name))
        })?;
        let lost = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                *l = Some(format!("device lost ({reason:?}): {msg}"));
            }
        });
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(one_line(&e.to_string()));
            }
        }));
        let mut max_binding = limits
            .max_buffer_size
            .min(limits.max_storage_buffer_binding_size);
        if let Some(cap) = options.max_binding_bytes {
            max_binding = max_binding.min(cap);
        }
        // Whole words, and at most 4 GiB so byte sizes of bound ranges stay small (the kernels
        // index 32-bit words with u32).
        max_binding = max_binding.min(u32::MAX as u64) & !3;
        let matvec_sg = matvec_sg(options.matvec, subgroups, &info, &limits);
        let index_checks = index_checks_needed(info.backend, options);
        Ok(Gpu {
            device,
            queue,
            info,
            limits,
            matvec_sg,
            f16,
            subgroups,
            coop: coop || coop_emulated,
            coop_emulated,
            timestamps,
            wkv_scan_lanes: options.wkv_scan_lanes,
            index_checks,
            f16_gemm: options.f16_gemm,
            max_binding,
            wait_timeout: options.wait_timeout,
            lost,
            uncaptured,
        })
    }

    /// Fails when the device was lost or an error escaped the error scopes.
    pub fn check_alive(&self) -> Result<()> {
        if let Some(msg) = self.lost.lock().ok().and_then(|l| l.clone()) {
            return Err(device_lost(format!("{}: {msg}", self.info.name)));
        }
        let first = self.uncaptured.lock().ok().and_then(|mut v| {
            let first = v.first().cloned();
            v.clear();
            first
        });
        if let Some(msg) = first {
            return Err(backend_err(format!("{}: {msg}", self.info.name)));
        }
        Ok(())
    }

    /// Runs `f` inside out-of-memory and validation error scopes; an error in either becomes
    /// `Error::Backend` with `what` in front.
    pub async fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        self.check_alive()?;
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let value = f();
        let v_err = validation.pop().await;
        let o_err = oom.pop().await;
        if let Some(e) = o_err {
            return Err(out_of_memory(format!(
                "{what}: out of device memory: {}",
                one_line(&e.to_string())
            )));
        }
        if let Some(e) = v_err {
            return Err(backend_err(format!("{what}: {}", one_line(&e.to_string()))));
        }
        self.check_alive()?;
        Ok(value)
    }

    /// Waits (with the timeout) for a submission to finish.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn wait(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        let r = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(self.wait_timeout),
        });
        match r {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => {
                self.check_alive()?;
                return Err(device_lost(format!(
                    "{}: GPU did not finish within {:?}",
                    self.info.name, self.wait_timeout
                )));
            }
            Err(e) => {
                // A failed submission (lost device, rejected command buffer) ends up here.
                self.check_alive()?;
                return Err(device_lost(format!(
                    "{}: waiting for the GPU failed: {e}",
                    self.info.name
                )));
            }
        }
        self.check_alive()
    }

    /// Non-blocking check that `submission` was accepted (a lost device rejects submissions
    /// without raising an error in any scope).
    pub fn check_submitted(&self, submission: wgpu::SubmissionIndex) -> Result<()> {
        let r = self.device.poll(wgpu::PollType::Wait {
            submission_index: Some(submission),
            timeout: Some(Duration::ZERO),
        });
        match r {
            Ok(_) | Err(wgpu::PollError::Timeout) => self.check_alive(),
            Err(e) => {
                self.check_alive()?;
                Err(device_lost(format!(
                    "{}: submission failed: {e}",
                    self.info.name
                )))
            }
        }
    }

    /// Maps `staging` (MAP_READ) after `submission` and copies `len` bytes out.
    pub async fn read_mapped(
        &self,
        staging: &wgpu::Buffer,
        len: u64,
        submission: wgpu::SubmissionIndex,
    ) -> Result<Vec<u8>> {
        let slot = OneShot::new();
        let sender = slot.sender();
        staging.map_async(wgpu::MapMode::Read, 0..len, move |r| sender.send(r));
        // Native: blocks (bounded) until the callback has run, then takes the result without
        // awaiting (a callback that never ran must not hang us). The browser polls by itself.
        #[cfg(not(target_arch = "wasm32"))]
        let mapped = {
            self.wait(submission)?;
            slot.try_take()
        };
        #[cfg(target_arch = "wasm32")]
        let mapped = {
            let _ = submission;
            slot.await
        };
        if !matches!(mapped, Some(Ok(()))) {
            self.check_alive()?;
            // Our read-back buffers are never destroyed or mapped twice: the device is gone.
            return Err(device_lost(format!(
                "{}: mapping the read-back buffer failed",
                self.info.name
            )));
        }
        let bytes = match staging.get_mapped_range(0..len) {
            Ok(view) => view.to_vec(),
            Err(e) => return Err(backend_err(format!("{}: read-back: {e}", self.info.name))),
        };
        staging.unmap();
        Ok(bytes)
    }

    /// A buffer of `size` bytes (at least 4), checked against the device limits first.
    pub fn buffer(
        &self,
        label: &str,
        size: u64,
        usage: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let size = size.max(4).div_ceil(4) * 4;
        let limit = if usage.contains(wgpu::BufferUsages::STORAGE) {
            self.max_binding
        } else {
            self.limits.max_buffer_size
        };
        if size > limit {
            return Err(out_of_memory(format!(
                "{}: buffer '{label}' needs {size} bytes, the device allows {limit} per buffer",
                self.info.name
            )));
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage,
            mapped_at_creation: false,
        }))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A one-value channel whose receiving end is a future: lets map callbacks resolve an `await`
/// both natively (after a blocking poll) and in the browser (from the event loop).
struct OneShot<T> {
    shared: Arc<Mutex<(Option<T>, Option<Waker>)>>,
}

struct OneShotSender<T> {
    shared: Arc<Mutex<(Option<T>, Option<Waker>)>>,
}

impl<T> OneShot<T> {
    fn new() -> Self {
        OneShot {
            shared: Arc::new(Mutex::new((None, None))),
        }
    }
    #[cfg(not(target_arch = "wasm32"))]
    fn try_take(&self) -> Option<T> {
        self.shared.lock().ok().and_then(|mut s| s.0.take())
    }
    fn sender(&self) -> OneShotSender<T> {
        OneShotSender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> OneShotSender<T> {
    fn send(self, value: T) {
        if let Ok(mut s) = self.shared.lock() {
            s.0 = Some(value);
            if let Some(w) = s.1.take() {
                w.wake();
            }
        }
    }
}

impl<T> Future for OneShot<T> {
    type Output = Option<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.shared.lock() {
            Ok(mut s) => match s.0.take() {
                Some(v) => Poll::Ready(Some(v)),
                None => {
                    s.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            },
            // A poisoned lock means a callback panicked; nothing will ever arrive.
            Err(_) => Poll::Ready(None),
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    pollster::block_on(f)
}
