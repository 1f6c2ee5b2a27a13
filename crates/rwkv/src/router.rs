//! The backend router: list what this machine can run, pick the fastest that works, or open the
//! one the user forced. A forced backend that cannot start is an error, never a silent switch.

use rwkv_core::backend::{Backend, DeviceInfo};
use rwkv_core::{BackendErrorKind, Error, Result};

/// What the user asked for (`--backend`, or the `RWKV_BACKEND` variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Cpu,
    Cuda,
    WebGpu,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Result<BackendChoice> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(BackendChoice::Auto),
            "cpu" => Ok(BackendChoice::Cpu),
            "cuda" => Ok(BackendChoice::Cuda),
            "webgpu" | "wgpu" => Ok(BackendChoice::WebGpu),
            other => Err(Error::invalid(format!(
                "unknown backend '{other}' (expected auto, cuda, webgpu or cpu)"
            ))),
        }
    }

    /// `RWKV_BACKEND` when set (and not empty), else `Auto`.
    pub fn from_env() -> Result<BackendChoice> {
        match std::env::var("RWKV_BACKEND") {
            Ok(v) if !v.is_empty() => BackendChoice::parse(&v),
            _ => Ok(BackendChoice::Auto),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Cuda => "cuda",
            BackendChoice::WebGpu => "webgpu",
        }
    }
}

/// One backend as `rwkv doctor` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendReport {
    pub backend: &'static str,
    pub available: bool,
    pub devices: Vec<DeviceInfo>,
    /// Why it is unavailable (or a note on how it was found).
    pub reason: Option<String>,
}

/// Probes every backend compiled in (and names those compiled out).
pub fn report_all() -> Vec<BackendReport> {
    vec![cuda::report(), webgpu::report(), cpu_report()]
}

fn cpu_report() -> BackendReport {
    let b = rwkv_cpu::CpuBackend::new();
    BackendReport {
        backend: "cpu",
        available: true,
        devices: vec![b.info()],
        reason: None,
    }
}

/// An opened backend and the one line saying what was chosen and why.
pub struct Opened {
    pub backend: Box<dyn Backend>,
    pub why: String,
}

/// The backends `Auto` tries, fastest first.
pub const AUTO_ORDER: [BackendChoice; 3] = [
    BackendChoice::Cuda,
    BackendChoice::WebGpu,
    BackendChoice::Cpu,
];

/// Whether `Auto` moves on to the next backend after `e`: the backend cannot start, lacks the
/// memory, lost its device or cannot run the model. Contract violations and bad files are not
/// the backend's fault and would fail on the next one too.
pub fn falls_back_on(e: &Error) -> bool {
    matches!(
        e.backend_error_kind(),
        Some(
            BackendErrorKind::Unavailable
                | BackendErrorKind::OutOfMemory
                | BackendErrorKind::DeviceLost
                | BackendErrorKind::Unsupported
        )
    )
}

/// Opens one backend as `Auto` would try it: a software wgpu adapter is refused (the CPU backend
/// is faster than a GPU emulated on the CPU).
pub fn open_candidate(choice: BackendChoice) -> Result<Opened> {
    match choice {
        BackendChoice::Cuda => cuda::open().map(|(b, d)| Opened {
            backend: b,
            why: format!("cuda on {d}"),
        }),
        BackendChoice::WebGpu => webgpu::open(false).map(|(b, d)| Opened {
            backend: b,
            why: format!("webgpu on {d}"),
        }),
        BackendChoice::Cpu | BackendChoice::Auto => Ok(Opened {
            backend: Box::new(rwkv_cpu::CpuBackend::new()),
            why: "cpu".into(),
        }),
    }
}

/// Opens the backend `choice` names; `Auto` takes CUDA when it initializes, else the best
/// hardware wgpu adapter, else the CPU. (The engine goes further under `Auto`: it also moves on
/// when a backend that opened cannot take the model; see [`falls_back_on`].)
pub fn open(choice: BackendChoice) -> Result<Opened> {
    match choice {
        BackendChoice::Cpu => Ok(Opened {
            backend: Box::new(rwkv_cpu::CpuBackend::new()),
            why: "cpu (forced)".into(),
        }),
        BackendChoice::Cuda => cuda::open().map(|(b, d)| Opened {
            backend: b,
            why: format!("cuda on {d} (forced)"),
        }),
        BackendChoice::WebGpu => webgpu::open(true).map(|(b, d)| Opened {
            backend: b,
            why: format!("webgpu on {d} (forced)"),
        }),
        BackendChoice::Auto => {
            let mut skipped = Vec::new();
            for choice in AUTO_ORDER {
                match open_candidate(choice) {
                    Ok(o) => return Ok(auto_opened(o, &skipped)),
                    Err(e) => skipped.push(e.to_string()),
                }
            }
            // The CPU candidate always opens.
            Err(Error::invalid(skipped.join("; ")))
        }
    }
}

/// `o` as `Auto`'s choice, saying why the faster backends before it were skipped.
pub fn auto_opened(o: Opened, skipped: &[String]) -> Opened {
    let why = if skipped.is_empty() {
        format!("auto: {}", o.why)
    } else {
        format!("auto: {} ({})", o.why, skipped.join("; "))
    };
    Opened {
        backend: o.backend,
        why,
    }
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    /// Device 0 (or `RWKV_CUDA_DEVICE`), when the driver, NVRTC and a device are there.
    pub fn open() -> Result<(Box<dyn Backend>, String)> {
        let devices = rwkv_cuda::probe()
            .map_err(|why| Error::backend_kind("cuda", BackendErrorKind::Unavailable, why))?;
        let index = match std::env::var("RWKV_CUDA_DEVICE") {
            Ok(v) => v
                .parse::<usize>()
                .map_err(|_| Error::invalid(format!("RWKV_CUDA_DEVICE='{v}' is not a number")))?,
            Err(_) => 0,
        };
        let name = devices
            .get(index)
            .map(|d| d.device.clone())
            .ok_or_else(|| {
                Error::backend_kind(
                    "cuda",
                    BackendErrorKind::Unavailable,
                    format!("no CUDA device {index} ({} found)", devices.len()),
                )
            })?;
        let b = rwkv_cuda::CudaBackend::new(index, cuda_options_from_env())?;
        Ok((Box::new(b), name))
    }

    pub fn report() -> BackendReport {
        match rwkv_cuda::probe() {
            Ok(devices) => BackendReport {
                backend: "cuda",
                available: true,
                devices,
                reason: None,
            },
            Err(why) => BackendReport {
                backend: "cuda",
                available: false,
                devices: vec![],
                reason: Some(why),
            },
        }
    }
}

// ===== begin: CUDA options from the environment =====
// The `RWKV_CUDA_*` switches of the CUDA fast paths (A/B measurements, or a way around a fast
// path that misbehaves on some device). Read here at the edge: rwkv-cuda reads none of them
// (only its kernel cache folder, `RWKV_CUDA_CACHE`).

/// [`rwkv_cuda::CudaOptions`] from the environment: `RWKV_CUDA_GRAPHS=0` (launches one by one,
/// no CUDA graph), `RWKV_CUDA_SPARSE=0` (no zero-skipping products), `RWKV_CUDA_LNVEC=0` (scalar
/// token-shift kernel), `RWKV_CUDA_Q8X=0` (f32 batch-1 activations), `RWKV_CUDA_MMA_MIN_ROWS=N`
/// (tensor cores from N activation rows). Unset, or any other value of a switch, keeps the
/// default; so does a row count that is not a number.
#[cfg(feature = "cuda")]
pub fn cuda_options_from_env() -> rwkv_cuda::CudaOptions {
    cuda_options_from(|name| std::env::var(name).ok())
}

/// [`cuda_options_from_env`] over any source of variables.
#[cfg(feature = "cuda")]
fn cuda_options_from(var: impl Fn(&str) -> Option<String>) -> rwkv_cuda::CudaOptions {
    let defaults = rwkv_cuda::CudaOptions::default();
    let switch = |name: &str, default: bool| var(name).map_or(default, |v| v.trim() != "0");
    rwkv_cuda::CudaOptions {
        graphs: switch("RWKV_CUDA_GRAPHS", defaults.graphs),
        mma_min_rows: var("RWKV_CUDA_MMA_MIN_ROWS")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(defaults.mma_min_rows),
        sparse: switch("RWKV_CUDA_SPARSE", defaults.sparse),
        ln_shift_vec: switch("RWKV_CUDA_LNVEC", defaults.ln_shift_vec),
        q8x: switch("RWKV_CUDA_Q8X", defaults.q8x),
    }
}

#[cfg(all(test, feature = "cuda"))]
mod cuda_options_tests {
    use super::cuda_options_from;
    use rwkv_cuda::CudaOptions;

    fn from(vars: &[(&str, &str)]) -> CudaOptions {
        cuda_options_from(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_variables_keep_the_defaults() {
        assert_eq!(from(&[]), CudaOptions::default());
        assert_eq!(from(&[("RWKV_CUDA_Q8X", "1")]), CudaOptions::default());
    }

    #[test]
    fn each_switch_turns_its_fast_path_off() {
        let all_off = from(&[
            ("RWKV_CUDA_GRAPHS", "0"),
            ("RWKV_CUDA_SPARSE", " 0"),
            ("RWKV_CUDA_LNVEC", "0"),
            ("RWKV_CUDA_Q8X", "0"),
            ("RWKV_CUDA_MMA_MIN_ROWS", "16"),
        ]);
        assert_eq!(
            all_off,
            CudaOptions {
                graphs: false,
                mma_min_rows: 16,
                sparse: false,
                ln_shift_vec: false,
                q8x: false,
            }
        );
        let only_sparse = from(&[("RWKV_CUDA_SPARSE", "0")]);
        assert!(!only_sparse.sparse && only_sparse.q8x && only_sparse.graphs);
    }

    #[test]
    fn an_unparsable_row_count_keeps_the_default() {
        let o = from(&[("RWKV_CUDA_MMA_MIN_ROWS", "many")]);
        assert_eq!(o.mma_min_rows, CudaOptions::default().mma_min_rows);
    }
}
// ===== end: CUDA options from the environment =====

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;
    const WHY: &str = "this build of rwkv was compiled without the `cuda` feature";

    pub fn open() -> Result<(Box<dyn Backend>, String)> {
        Err(Error::backend_kind(
            "cuda",
            BackendErrorKind::Unavailable,
            WHY,
        ))
    }

    pub fn report() -> BackendReport {
        BackendReport {
            backend: "cuda",
            available: false,
            devices: vec![],
            reason: Some(WHY.into()),
        }
    }
}

// ==== WebGPU options from the environment (RWKV_WGPU_*) ====================================
// The only place the WebGPU backend's switches are read from the environment: the backend
// itself takes every switch as a `WgpuOptions` field (the browser passes them explicitly).

/// `WgpuOptions` for the WebGPU backend from the `RWKV_WGPU_*` variables (defaults where unset):
///
/// | variable | values | field |
/// |---|---|---|
/// | `RWKV_WGPU_COOP` | `0`/`off`/`false` | `allow_coop = false` (no tensor cores) |
/// | `RWKV_WGPU_GEMM` | `0`/`off`/`false` | `f16_gemm = false` (no f16 scratch products) |
/// | `RWKV_WGPU_MATVEC` | `old`/`sg` | `matvec` (Q4_K decode kernel) |
/// | `RWKV_WGPU_INDEX_CHECKS` | `1`/`on`/`true` | `index_checks = true` |
///
/// Other values leave the default (these are A/B and diagnosis switches, not settings a run
/// depends on). The adapter is left to the caller.
#[cfg(feature = "webgpu")]
pub fn wgpu_options_from_env() -> rwkv_wgpu::WgpuOptions {
    wgpu_options_from(|name| std::env::var(name).ok())
}

/// [`wgpu_options_from_env`] over any variable lookup (tests pass a map).
#[cfg(feature = "webgpu")]
fn wgpu_options_from(var: impl Fn(&str) -> Option<String>) -> rwkv_wgpu::WgpuOptions {
    use rwkv_wgpu::{MatVecChoice, WgpuOptions};
    let switch = |name: &str| match var(name)?.trim().to_ascii_lowercase().as_str() {
        "0" | "off" | "false" => Some(false),
        "1" | "on" | "true" => Some(true),
        _ => None,
    };
    let defaults = WgpuOptions::default();
    WgpuOptions {
        allow_coop: switch("RWKV_WGPU_COOP").unwrap_or(defaults.allow_coop),
        f16_gemm: switch("RWKV_WGPU_GEMM").unwrap_or(defaults.f16_gemm),
        index_checks: switch("RWKV_WGPU_INDEX_CHECKS").unwrap_or(defaults.index_checks),
        matvec: match var("RWKV_WGPU_MATVEC").as_deref().map(str::trim) {
            Some("old") => MatVecChoice::Old,
            Some("sg") => MatVecChoice::default(),
            _ => defaults.matvec,
        },
        ..defaults
    }
}

#[cfg(all(test, feature = "webgpu"))]
mod wgpu_options_tests {
    use super::*;
    use rwkv_wgpu::MatVecChoice;

    fn from(vars: &[(&str, &str)]) -> rwkv_wgpu::WgpuOptions {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        wgpu_options_from(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn unset_variables_keep_the_defaults() {
        let o = from(&[]);
        let d = rwkv_wgpu::WgpuOptions::default();
        assert_eq!(
            (o.allow_coop, o.f16_gemm, o.index_checks, o.matvec),
            (d.allow_coop, d.f16_gemm, d.index_checks, d.matvec)
        );
        assert!(o.allow_coop && o.f16_gemm && !o.index_checks);
    }

    #[test]
    fn each_variable_sets_its_field() {
        let o = from(&[
            ("RWKV_WGPU_COOP", "0"),
            ("RWKV_WGPU_GEMM", "off"),
            ("RWKV_WGPU_INDEX_CHECKS", "1"),
            ("RWKV_WGPU_MATVEC", "old"),
        ]);
        assert!(!o.allow_coop && !o.f16_gemm && o.index_checks);
        assert_eq!(o.matvec, MatVecChoice::Old);
        let o = from(&[("RWKV_WGPU_COOP", "FALSE"), ("RWKV_WGPU_MATVEC", "sg")]);
        assert!(!o.allow_coop && o.f16_gemm);
        assert_eq!(o.matvec, MatVecChoice::default());
    }

    #[test]
    fn unknown_values_keep_the_defaults() {
        let o = from(&[
            ("RWKV_WGPU_COOP", "maybe"),
            ("RWKV_WGPU_INDEX_CHECKS", "2"),
            ("RWKV_WGPU_MATVEC", "fast"),
        ]);
        assert!(o.allow_coop && !o.index_checks);
        assert_eq!(o.matvec, MatVecChoice::default());
    }
}
// ==== end of WebGPU options from the environment ==========================================

#[cfg(feature = "webgpu")]
mod webgpu {
    use super::*;
    use rwkv_wgpu::{AdapterChoice, AdapterReport, WgpuBackend, WgpuOptions};

    /// Hardware first: discrete, integrated, virtual, other; software (CPU) adapters last.
    fn rank(a: &AdapterReport) -> u8 {
        match a.device_type.as_str() {
            "DiscreteGpu" => 0,
            "IntegratedGpu" => 1,
            "VirtualGpu" => 2,
            "Cpu" => 4,
            _ => 3,
        }
    }

    fn describe(a: &AdapterReport) -> String {
        format!("{} ({}, {})", a.name, a.backend, a.device_type)
    }

    /// `forced`: accept a software adapter too (auto prefers the CPU backend to a software GPU).
    pub fn open(forced: bool) -> Result<(Box<dyn Backend>, String)> {
        let adapters = rwkv_wgpu::probe();
        let best = adapters.iter().min_by_key(|a| (rank(a), a.index));
        let Some(best) = best else {
            return Err(Error::backend_kind(
                "webgpu",
                BackendErrorKind::Unavailable,
                "no wgpu adapter found (no Vulkan, Metal, DX12 or GL driver)",
            ));
        };
        if rank(best) == 4 && !forced {
            return Err(Error::backend_kind(
                "webgpu",
                BackendErrorKind::Unavailable,
                format!(
                    "only a software adapter ({}), slower than the cpu backend",
                    describe(best)
                ),
            ));
        }
        let opts = WgpuOptions {
            adapter: AdapterChoice::Index(best.index),
            ..super::wgpu_options_from_env()
        };
        let b = WgpuBackend::new(opts)?;
        Ok((Box::new(b), describe(best)))
    }

    pub fn report() -> BackendReport {
        let adapters = rwkv_wgpu::probe();
        let devices = adapters
            .iter()
            .map(|a| DeviceInfo {
                backend: "webgpu".into(),
                device: describe(a),
                properties: vec![
                    ("driver".into(), a.driver.clone()),
                    ("shader-f16".into(), a.shader_f16.to_string()),
                    (
                        "subgroups".into(),
                        format!(
                            "{} ({}..{})",
                            a.subgroups, a.subgroup_min_size, a.subgroup_max_size
                        ),
                    ),
                    (
                        "max storage binding".into(),
                        format!("{} MiB", a.max_storage_buffer_binding_size >> 20),
                    ),
                    (
                        "max buffer".into(),
                        format!("{} MiB", a.max_buffer_size >> 20),
                    ),
                ],
            })
            .collect();
        let available = !adapters.is_empty();
        BackendReport {
            backend: "webgpu",
            available,
            devices,
            reason: (!available)
                .then(|| "no wgpu adapter found (no Vulkan, Metal, DX12 or GL driver)".into()),
        }
    }
}

#[cfg(not(feature = "webgpu"))]
mod webgpu {
    use super::*;
    const WHY: &str = "this build of rwkv was compiled without the `webgpu` feature";

    pub fn open(_forced: bool) -> Result<(Box<dyn Backend>, String)> {
        Err(Error::backend_kind(
            "webgpu",
            BackendErrorKind::Unavailable,
            WHY,
        ))
    }

    pub fn report() -> BackendReport {
        BackendReport {
            backend: "webgpu",
            available: false,
            devices: vec![],
            reason: Some(WHY.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_choices_and_rejects_unknown() {
        assert_eq!(BackendChoice::parse("CUDA").unwrap(), BackendChoice::Cuda);
        assert_eq!(BackendChoice::parse("wgpu").unwrap(), BackendChoice::WebGpu);
        let e = BackendChoice::parse("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown backend 'tpu'"), "{e}");
    }
}
