//! What this machine has: the CUDA devices (or why none), the description of an opened one, and
//! kernel compilation ahead of time into the disk cache.

use cudarc::driver::{result as cu, sys};
use rwkv_core::backend::DeviceInfo;
use rwkv_core::Result;

use crate::gpu::{self, err, Gpu};
use crate::options::CudaOptions;

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

/// The opened device and the options new plans get, for `Backend::info`.
pub(crate) fn describe(g: &Gpu, options: &CudaOptions) -> DeviceInfo {
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
            ("graphs".into(), options.graphs.to_string()),
            ("q8x".into(), options.q8x.to_string()),
        ],
    }
}

/// Compiles the kernels for `arch` (e.g. "sm_90") with the local NVRTC into the disk cache, so a
/// machine with that GPU starts without compiling. Needs no GPU. Returns the cache file.
#[doc(hidden)]
pub fn precompile_kernels(arch: &str) -> Result<std::path::PathBuf> {
    // SAFETY: only tries to dlopen the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(gpu::unavailable(
            "no NVRTC: libnvrtc.so.13 could not be loaded",
        ));
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
