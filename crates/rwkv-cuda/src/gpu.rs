//! Thin layer over the CUDA driver API (through cudarc's dynamically loaded `sys`/`result`):
//! a context, a stream, device buffers, the compiled kernel module, launches and graphs.
//! Everything returns `rwkv_core::Error::Backend` with one line saying what failed.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::path::PathBuf;

use cudarc::driver::{result as cu, sys};
use cudarc::nvrtc::sys as nv;
use rwkv_core::{BackendErrorKind, Error, Result};

use crate::kernels::Kernel;

pub(crate) fn err(what: impl Into<String>) -> Error {
    Error::backend("cuda", what)
}

/// The backend: CUDA cannot start here (no driver, no NVRTC, no device).
pub(crate) fn unavailable(what: impl Into<String>) -> Error {
    Error::backend_kind("cuda", BackendErrorKind::Unavailable, what)
}

/// What a caller can do about a driver error: out of memory, a device that is gone or whose
/// context is poisoned by a faulting kernel (every later call fails), or anything else.
fn driver_error_kind(code: sys::CUresult) -> BackendErrorKind {
    use sys::CUresult as R;
    match code {
        R::CUDA_ERROR_OUT_OF_MEMORY => BackendErrorKind::OutOfMemory,
        R::CUDA_ERROR_NO_DEVICE
        | R::CUDA_ERROR_NOT_INITIALIZED
        | R::CUDA_ERROR_INVALID_DEVICE
        | R::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => BackendErrorKind::Unavailable,
        R::CUDA_ERROR_ILLEGAL_ADDRESS
        | R::CUDA_ERROR_LAUNCH_FAILED
        | R::CUDA_ERROR_HARDWARE_STACK_ERROR
        | R::CUDA_ERROR_ILLEGAL_INSTRUCTION
        | R::CUDA_ERROR_MISALIGNED_ADDRESS
        | R::CUDA_ERROR_INVALID_PC
        | R::CUDA_ERROR_ECC_UNCORRECTABLE
        | R::CUDA_ERROR_CONTEXT_IS_DESTROYED
        | R::CUDA_ERROR_DEVICE_UNAVAILABLE => BackendErrorKind::DeviceLost,
        _ => BackendErrorKind::Failed,
    }
}

pub(crate) fn check<T>(r: std::result::Result<T, cu::DriverError>, what: &str) -> Result<T> {
    r.map_err(|e| {
        let name = e
            .error_string()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Error::backend_kind(
            "cuda",
            driver_error_kind(e.0),
            format!("{what}: {:?} {name}", e.0),
        )
    })
}

/// The kernels, concatenated in dependency order (common definitions first).
pub(crate) fn kernel_source() -> String {
    [
        include_str!("../kernels/common.cuh"),
        include_str!("../kernels/ops.cu"),
        include_str!("../kernels/matvec.cu"),
        include_str!("../kernels/mma.cu"),
        include_str!("../kernels/wkv7.cu"),
        include_str!("../kernels/sparse.cu"),
    ]
    .join("\n")
}

/// Whether the driver and NVRTC libraries can be loaded, with the reason when not.
pub(crate) fn libraries_present() -> std::result::Result<(), String> {
    // SAFETY: only tries to dlopen the library names; no symbol is called.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver: libcuda.so.1 (nvcuda.dll) could not be loaded".into());
    }
    if !unsafe { nv::is_culib_present() } {
        return Err(
            "no NVRTC: libnvrtc.so.13 (the CUDA run-time compiler) could not be loaded".into(),
        );
    }
    Ok(())
}

/// A device allocation, freed on drop (the owner makes the context current first).
pub(crate) struct DevBuf {
    pub ptr: sys::CUdeviceptr,
    pub bytes: usize,
}

impl DevBuf {
    pub fn alloc(bytes: usize) -> Result<DevBuf> {
        // cuMemAlloc rejects 0; a 4-byte minimum keeps every buffer a valid pointer.
        let n = bytes.max(4);
        // SAFETY: plain allocation in the current context.
        let ptr = check(
            unsafe { cu::malloc_sync(n) },
            &format!("out of device memory allocating {n} bytes"),
        )?;
        Ok(DevBuf { ptr, bytes: n })
    }

    pub fn from_bytes(data: &[u8]) -> Result<DevBuf> {
        let b = DevBuf::alloc(data.len())?;
        if !data.is_empty() {
            // SAFETY: `b` holds at least data.len() bytes.
            check(
                unsafe { cu::memcpy_htod_sync(b.ptr, data) },
                "copy to device",
            )?;
        }
        Ok(b)
    }

    pub fn zeroed(bytes: usize) -> Result<DevBuf> {
        let b = DevBuf::alloc(bytes)?;
        // SAFETY: clears exactly the allocation.
        check(
            unsafe { cu::memset_d8_sync(b.ptr, 0, b.bytes) },
            "clear device memory",
        )?;
        Ok(b)
    }
}

impl Drop for DevBuf {
    fn drop(&mut self) {
        // SAFETY: ptr came from cuMemAlloc and is freed once; errors at teardown are ignored.
        let _ = unsafe { cu::free_sync(self.ptr) };
    }
}

/// One recorded kernel launch: arguments kept as bytes so the list can be replayed or captured.
pub(crate) struct Launch {
    /// The kernel's name, with the job shapes for profiles.
    pub name: String,
    pub func: sys::CUfunction,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub smem: u32,
    pub args: Vec<Vec<u8>>,
}

impl Launch {
    /// A launch of `kernel` (looked up in `gpu`'s module), named after it.
    pub fn new(
        gpu: &mut Gpu,
        kernel: Kernel,
        grid: (u32, u32, u32),
        block: (u32, u32, u32),
        smem: u32,
        args: Vec<Vec<u8>>,
    ) -> Result<Launch> {
        Ok(Launch {
            name: kernel.name().to_string(),
            func: gpu.kernel(kernel)?,
            grid,
            block,
            smem,
            args,
        })
    }

    /// Appends `what` (job shapes, layouts) to the name the profile shows.
    pub fn described(mut self, what: &str) -> Launch {
        self.name.push_str(what);
        self
    }
}

// SAFETY: a CUfunction handle is valid in any thread where its context is current.
unsafe impl Send for Launch {}

/// Builds a kernel's argument list from plain values (`u64` pointers, `i32`, `f32`, `#[repr(C)]`
/// structs).
#[derive(Default)]
pub(crate) struct ArgList(pub Vec<Vec<u8>>);

impl ArgList {
    pub fn ptr(mut self, p: u64) -> Self {
        self.0.push(p.to_ne_bytes().to_vec());
        self
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.0.push(v.to_ne_bytes().to_vec());
        self
    }
    pub fn i64(mut self, v: i64) -> Self {
        self.0.push(v.to_ne_bytes().to_vec());
        self
    }
    pub fn f32(mut self, v: f32) -> Self {
        self.0.push(v.to_ne_bytes().to_vec());
        self
    }
    pub fn bytes(mut self, b: Vec<u8>) -> Self {
        self.0.push(b);
        self
    }
}

/// Context, stream and kernels of one device.
pub(crate) struct Gpu {
    pub dev: sys::CUdevice,
    pub ctx: sys::CUcontext,
    pub stream: sys::CUstream,
    module: sys::CUmodule,
    funcs: HashMap<Kernel, sys::CUfunction>,
    pub name: String,
    pub cc: (i32, i32),
    pub sm_count: i32,
    pub total_mem: usize,
    pub driver_version: i32,
    pub nvrtc_version: (i32, i32),
    pub kernel_cache: String,
    /// Largest dynamic shared memory a block may opt into.
    pub smem_optin: usize,
}

// SAFETY: the CUDA handles may be used from any thread once the context is made current there,
// which every entry point of the backend does first (`Gpu::bind`).
unsafe impl Send for Gpu {}

/// Reads one device attribute.
pub(crate) fn attr(dev: sys::CUdevice, a: sys::CUdevice_attribute) -> Result<i32> {
    // SAFETY: dev is a valid device handle.
    check(
        unsafe { cu::device::get_attribute(dev, a) },
        "read device attribute",
    )
}

impl Gpu {
    /// Opens device `index`: initializes the driver, retains the primary context, creates a
    /// stream, compiles (or loads from cache) the kernels for the device's architecture.
    pub fn open(index: usize) -> Result<Gpu> {
        libraries_present().map_err(unavailable)?;
        check(cu::init(), "no CUDA device: cuInit failed")?;
        let count = check(
            cu::device::get_count(),
            "no CUDA device: cannot count devices",
        )?;
        if count <= 0 {
            return Err(unavailable("no CUDA device: the driver reports 0 devices"));
        }
        if index >= count as usize {
            return Err(unavailable(format!(
                "no CUDA device {index}: the driver reports {count}"
            )));
        }
        let dev = check(cu::device::get(index as i32), "open device")?;
        let name = check(cu::device::get_name(dev), "read device name")?;
        let major = attr(
            dev,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
        )?;
        let minor = attr(
            dev,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
        )?;
        let sm_count = attr(
            dev,
            sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )?;
        if major < 8 {
            return Err(Error::backend_kind(
                "cuda",
                BackendErrorKind::Unsupported,
                format!(
                    "{name} has compute capability {major}.{minor}; the kernels need 8.0 or newer (tensor-core mma.sync f16)"
                ),
            ));
        }
        // SAFETY: dev is valid.
        let total_mem = check(unsafe { cu::device::total_mem(dev) }, "read device memory")?;
        let mut driver_version = 0;
        // SAFETY: writes one int.
        unsafe { sys::cuDriverGetVersion(&mut driver_version) };
        // SAFETY: dev is valid; the context is released in Drop.
        let ctx = check(unsafe { cu::primary_ctx::retain(dev) }, "create context")?;
        // SAFETY: ctx was just retained.
        check(unsafe { cu::ctx::set_current(ctx) }, "make context current")?;
        let (free, _) = check(cu::mem_get_info(), "read free memory")?;
        // Below this even the kernels, a tiny model and its buffers may not fit.
        const MIN_FREE: usize = 256 << 20;
        if free < MIN_FREE {
            // SAFETY: balances the retain above.
            let _ = unsafe { cu::primary_ctx::release(dev) };
            return Err(Error::backend_kind(
                "cuda",
                BackendErrorKind::OutOfMemory,
                format!(
                    "too little device memory on {name}: {} MiB free, need at least {} MiB",
                    free >> 20,
                    MIN_FREE >> 20
                ),
            ));
        }
        let stream = check(
            cu::stream::create(cu::stream::StreamKind::NonBlocking),
            "create stream",
        )?;
        let mut gpu = Gpu {
            dev,
            ctx,
            stream,
            module: std::ptr::null_mut(),
            funcs: HashMap::new(),
            name,
            cc: (major, minor),
            sm_count,
            total_mem,
            driver_version,
            nvrtc_version: (0, 0),
            kernel_cache: String::new(),
            smem_optin: attr(
                dev,
                sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
            )?
            .max(0) as usize,
        };
        gpu.load_kernels()?;
        Ok(gpu)
    }

    pub fn bind(&self) -> Result<()> {
        // SAFETY: ctx is retained for the lifetime of self.
        check(
            unsafe { cu::ctx::set_current(self.ctx) },
            "make context current",
        )
    }

    fn load_kernels(&mut self) -> Result<()> {
        let src = kernel_source();
        self.nvrtc_version = nvrtc_version();
        let arch = format!("sm_{}{}", self.cc.0, self.cc.1);
        let path = cache_path(&src, &arch, self.nvrtc_version);
        if let Some(p) = &path {
            if let Ok(bytes) = std::fs::read(p) {
                // Our own earlier output, but still checked: an ELF image, else recompile.
                if bytes.starts_with(b"\x7fELF") && self.load_image(&bytes).is_ok() {
                    self.kernel_cache = format!("cached {}", p.display());
                    return Ok(());
                }
            }
        }
        // Tens of seconds on first use of a build: say so instead of looking hung.
        eprintln!("rwkv-cuda: compiling kernels for {arch} with NVRTC (first run of this build; cached afterwards)");
        let t0 = std::time::Instant::now();
        let image = compile(&src, &arch)?;
        eprintln!(
            "rwkv-cuda: kernels compiled in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        self.load_image(&image)?;
        self.kernel_cache = "compiled now".into();
        if let Some(p) = path {
            if store_cache(&p, &image) {
                self.kernel_cache = format!("compiled now, cached at {}", p.display());
            }
        }
        Ok(())
    }

    fn load_image(&mut self, image: &[u8]) -> Result<()> {
        let mut owned = image.to_vec();
        owned.push(0);
        // SAFETY: a NUL-terminated image in host memory; the driver copies it.
        let module = check(
            unsafe { cu::module::load_data(owned.as_ptr() as *const c_void) },
            "load kernels",
        )?;
        self.module = module;
        self.funcs.clear();
        Ok(())
    }

    /// The function of `kernel` in the loaded module (looked up once).
    pub fn kernel(&mut self, kernel: Kernel) -> Result<sys::CUfunction> {
        if let Some(f) = self.funcs.get(&kernel) {
            return Ok(*f);
        }
        let name = kernel.name();
        let c = CString::new(name).map_err(|_| err("kernel name with NUL"))?;
        // SAFETY: module is loaded; name is NUL-terminated.
        let f = check(
            unsafe { cu::module::get_function(self.module, c) },
            &format!("find kernel {name}"),
        )?;
        self.funcs.insert(kernel, f);
        Ok(f)
    }

    /// Lets `f` use up to `bytes` of dynamic shared memory.
    pub fn allow_smem(&self, f: sys::CUfunction, bytes: usize) -> Result<()> {
        // SAFETY: f is a valid function of the loaded module.
        check(
            unsafe {
                cu::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
            },
            "raise shared memory limit",
        )
    }

    pub fn launch(&self, l: &Launch) -> Result<()> {
        let mut params: Vec<*mut c_void> =
            l.args.iter().map(|a| a.as_ptr() as *mut c_void).collect();
        // SAFETY: the launch was built for this function from validated shapes; arguments live
        // in `l` for the duration of the call (the driver copies them).
        check(
            unsafe { cu::launch_kernel(l.func, l.grid, l.block, l.smem, self.stream, &mut params) },
            "launch kernel",
        )
    }

    pub fn sync(&self) -> Result<()> {
        // SAFETY: stream belongs to this context.
        check(
            unsafe { cu::stream::synchronize(self.stream) },
            "run step (stream synchronize)",
        )
    }

    /// Captures `launches` into an executable graph.
    pub fn capture(&self, launches: &[Launch]) -> Result<Graph> {
        // SAFETY: capture on our own non-blocking stream; ended below on every path.
        check(
            unsafe {
                cu::stream::begin_capture(
                    self.stream,
                    sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
                )
            },
            "begin graph capture",
        )?;
        let mut failed = None;
        for l in launches {
            if let Err(e) = self.launch(l) {
                failed = Some(e);
                break;
            }
        }
        // SAFETY: ends the capture begun above.
        let graph = unsafe { cu::stream::end_capture(self.stream) };
        if let Some(e) = failed {
            if let Ok(g) = graph {
                // SAFETY: destroys the partial graph.
                let _ = unsafe { cu::graph::destroy(g) };
            }
            return Err(e);
        }
        let graph = check(graph, "end graph capture")?;
        // SAFETY: graph is valid.
        let exec = unsafe { cu::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) };
        let exec = match exec {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: graph is valid and not used after.
                let _ = unsafe { cu::graph::destroy(graph) };
                return check(Err(e), "instantiate graph");
            }
        };
        Ok(Graph { graph, exec })
    }

    pub fn htod<T>(&self, dst: sys::CUdeviceptr, src: &[T]) -> Result<()> {
        // SAFETY: callers pass a destination of at least size_of_val(src) bytes.
        check(
            unsafe { cu::memcpy_htod_async(dst, src, self.stream) },
            "copy to device",
        )
    }

    pub fn dtoh<T>(&self, dst: &mut [T], src: sys::CUdeviceptr) -> Result<()> {
        // SAFETY: callers pass a source of at least size_of_val(dst) bytes.
        check(
            unsafe { cu::memcpy_dtoh_async(dst, src, self.stream) },
            "copy from device",
        )?;
        self.sync()
    }

    /// Runs each launch PROFILE_REPS times back to back between two events: (kernel name,
    /// milliseconds per run) per launch. Repeats hide the event overhead; the values computed are
    /// garbage afterwards (accumulating kernels run several times).
    pub fn profile(&self, launches: &[Launch]) -> Result<Vec<(String, f32)>> {
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let a = check(cu::event::create(flags), "create event")?;
        let b = check(cu::event::create(flags), "create event")?;
        let mut out = Vec::with_capacity(launches.len());
        let mut res = Ok(());
        for l in launches {
            // SAFETY: events and stream belong to this context.
            let r = unsafe {
                cu::event::record(a, self.stream)
                    .map(|_| (0..PROFILE_REPS).try_for_each(|_| self.launch(l)))
                    .and_then(|x| cu::event::record(b, self.stream).map(|_| x))
                    .and_then(|x| cu::event::synchronize(b).map(|_| x))
                    .and_then(|x| cu::event::elapsed(a, b).map(|ms| (x, ms)))
            };
            match r {
                Ok((Ok(()), ms)) => {
                    // SAFETY: l.func is a valid function of the loaded module.
                    let (regs, local) = unsafe {
                        (
                            cu::function::get_function_attribute(
                                l.func,
                                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS,
                            )
                            .unwrap_or(-1),
                            cu::function::get_function_attribute(
                                l.func,
                                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
                            )
                            .unwrap_or(-1),
                        )
                    };
                    let name = format!(
                        "{} [grid {}x{} blk {} regs {regs} local {local}]",
                        l.name, l.grid.0, l.grid.1, l.block.0
                    );
                    out.push((name, ms / PROFILE_REPS as f32))
                }
                Ok((Err(e), _)) => {
                    res = Err(e);
                    break;
                }
                Err(e) => {
                    res = check(Err(e), "time kernel");
                    break;
                }
            }
        }
        // SAFETY: created above, destroyed once.
        unsafe {
            let _ = cu::event::destroy(a);
            let _ = cu::event::destroy(b);
        }
        res.map(|_| out)
    }

    pub fn free_mem(&self) -> usize {
        cu::mem_get_info().map(|(f, _)| f).unwrap_or(0)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: handles created in open(); released once; errors at teardown ignored.
        unsafe {
            let _ = cu::ctx::set_current(self.ctx);
            if !self.module.is_null() {
                let _ = cu::module::unload(self.module);
            }
            let _ = cu::stream::destroy(self.stream);
            let _ = cu::primary_ctx::release(self.dev);
        }
    }
}

const PROFILE_REPS: usize = 10;

pub(crate) struct Graph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

// SAFETY: used only with the owning backend's context current.
unsafe impl Send for Graph {}

impl Graph {
    pub fn launch(&self, gpu: &Gpu) -> Result<()> {
        // SAFETY: exec is a valid instantiated graph of this context.
        check(
            unsafe { cu::graph::launch(self.exec, gpu.stream) },
            "launch graph",
        )
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: created in capture(); destroyed once.
        unsafe {
            let _ = cu::graph::exec_destroy(self.exec);
            let _ = cu::graph::destroy(self.graph);
        }
    }
}

pub(crate) fn nvrtc_version() -> (i32, i32) {
    let (mut maj, mut min) = (0, 0);
    // SAFETY: writes two ints.
    unsafe { nv::nvrtcVersion(&mut maj, &mut min) };
    (maj, min)
}

/// Where the CUBIN of `src` for `arch` by this NVRTC version is cached.
pub(crate) fn cache_path(src: &str, arch: &str, nvrtc: (i32, i32)) -> Option<PathBuf> {
    let key = fnv1a(format!("{src}\n{arch}\nnvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    cache_dir().map(|d| d.join(format!("{key:016x}-{arch}.cubin")))
}

/// Writes a cache file atomically (temporary name, then rename); false when it could not.
pub(crate) fn store_cache(p: &std::path::Path, image: &[u8]) -> bool {
    let Some(dir) = p.parent() else { return false };
    if std::fs::create_dir_all(dir).is_err() {
        return false;
    }
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, image).is_ok() && std::fs::rename(&tmp, p).is_ok()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// `$XDG_CACHE_HOME/rwkv-hybrid/cuda`, else `~/.cache/rwkv-hybrid/cuda`; `RWKV_CUDA_CACHE`
/// overrides, and `RWKV_CUDA_CACHE=off` disables the cache. The only environment this crate
/// reads: the cache is shared by every program using the crate (the CLI, tests, examples,
/// `precompile`), which therefore all find it in the same place without passing it around.
fn cache_dir() -> Option<PathBuf> {
    if let Ok(v) = std::env::var("RWKV_CUDA_CACHE") {
        return if v == "off" {
            None
        } else {
            Some(PathBuf::from(v))
        };
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("rwkv-hybrid").join("cuda"))
}

/// Compiles the kernels with NVRTC into a CUBIN for `arch` (e.g. `sm_90`).
pub(crate) fn compile(src: &str, arch: &str) -> Result<Vec<u8>> {
    let csrc = CString::new(src).map_err(|_| err("kernel source contains NUL"))?;
    let name = CString::new("rwkv.cu").map_err(|_| err("bad name"))?;
    let prog = cudarc::nvrtc::result::create_program(&csrc, Some(&name))
        .map_err(|e| err(format!("NVRTC create program: {e:?}")))?;
    let opts = vec![
        format!("--gpu-architecture={arch}"),
        "-std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    // SAFETY: prog was created above and is destroyed below on every path.
    let compiled = unsafe { cudarc::nvrtc::result::compile_program(prog, &opts) };
    let result = (|| {
        if compiled.is_err() {
            // SAFETY: prog is valid.
            let log = unsafe { cudarc::nvrtc::result::get_program_log(prog) }.unwrap_or_default();
            let log: Vec<u8> = log
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            return Err(err(format!(
                "NVRTC failed for {arch}:\n{}",
                String::from_utf8_lossy(&log)
            )));
        }
        let mut size = 0usize;
        // SAFETY: prog compiled; size then buffer of that size.
        unsafe { nv::nvrtcGetCUBINSize(prog, &mut size) }
            .result()
            .map_err(|e| err(format!("NVRTC CUBIN size: {e:?}")))?;
        let mut buf = vec![0u8; size];
        // SAFETY: buf has `size` bytes.
        unsafe { nv::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut _) }
            .result()
            .map_err(|e| err(format!("NVRTC CUBIN: {e:?}")))?;
        Ok(buf)
    })();
    // SAFETY: destroys the program once.
    let _ = unsafe { cudarc::nvrtc::result::destroy_program(prog) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NVRTC needs no GPU: wherever libnvrtc loads, every kernel must compile for the
    /// architectures we run on (Ampere, Ada, Hopper).
    #[test]
    fn kernels_compile_with_nvrtc_when_available() {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { nv::is_culib_present() } {
            eprintln!("SKIPPED: NVRTC (libnvrtc.so.13) not found; kernels not compiled");
            return;
        }
        let src = kernel_source();
        for arch in ["sm_90", "sm_80"] {
            let image = compile(&src, arch).unwrap_or_else(|e| panic!("{e}"));
            assert!(image.starts_with(b"\x7fELF"), "{arch}: not a CUBIN");
            // Every kernel of the table is a symbol of the image (a whole NUL-terminated
            // name, after a NUL or the '.' of its section name).
            for k in Kernel::all() {
                let name = k.name().as_bytes();
                let found = image.windows(name.len() + 2).any(|w| {
                    (w[0] == 0 || w[0] == b'.')
                        && &w[1..=name.len()] == name
                        && w[name.len() + 1] == 0
                });
                assert!(found, "{arch}: no symbol {}", k.name());
            }
        }
    }
}
