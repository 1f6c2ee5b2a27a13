//! The backend router: list what this machine can run, pick the fastest that works, or open the
//! one the user forced. A forced backend that cannot start is an error, never a silent switch.

use rwkv_core::backend::{Backend, DeviceInfo};
use rwkv_core::{Error, Result};

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
    BackendReport { backend: "cpu", available: true, devices: vec![b.info()], reason: None }
}

/// An opened backend and the one line saying what was chosen and why.
pub struct Opened {
    pub backend: Box<dyn Backend>,
    pub why: String,
}

/// Opens the backend `choice` names; `Auto` takes CUDA when it initializes, else the best
/// hardware wgpu adapter, else the CPU.
pub fn open(choice: BackendChoice) -> Result<Opened> {
    match choice {
        BackendChoice::Cpu => Ok(Opened { backend: Box::new(rwkv_cpu::CpuBackend::new()), why: "cpu (forced)".into() }),
        BackendChoice::Cuda => cuda::open().map(|(b, d)| Opened { backend: b, why: format!("cuda on {d} (forced)") }),
        BackendChoice::WebGpu => {
            webgpu::open(true).map(|(b, d)| Opened { backend: b, why: format!("webgpu on {d} (forced)") })
        }
        BackendChoice::Auto => {
            let cuda_err = match cuda::open() {
                Ok((b, d)) => return Ok(Opened { backend: b, why: format!("auto: cuda on {d}") }),
                Err(e) => e.to_string(),
            };
            let wgpu_err = match webgpu::open(false) {
                Ok((b, d)) => {
                    return Ok(Opened { backend: b, why: format!("auto: webgpu on {d} ({cuda_err})") })
                }
                Err(e) => e.to_string(),
            };
            Ok(Opened {
                backend: Box::new(rwkv_cpu::CpuBackend::new()),
                why: format!("auto: cpu ({cuda_err}; {wgpu_err})"),
            })
        }
    }
}

mod cuda {
    use super::*;

    pub fn open() -> Result<(Box<dyn Backend>, String)> {
        Err(Error::backend("cuda", "the CUDA backend is not built yet"))
    }

    pub fn report() -> BackendReport {
        BackendReport {
            backend: "cuda",
            available: false,
            devices: vec![],
            reason: Some("the CUDA backend is not built yet".into()),
        }
    }
}

mod webgpu {
    use super::*;

    /// `forced`: accept a software adapter too (auto prefers the CPU backend to a software GPU).
    pub fn open(forced: bool) -> Result<(Box<dyn Backend>, String)> {
        let _ = forced;
        Err(Error::backend("webgpu", "the WebGPU backend is not built yet"))
    }

    pub fn report() -> BackendReport {
        BackendReport {
            backend: "webgpu",
            available: false,
            devices: vec![],
            reason: Some("the WebGPU backend is not built yet".into()),
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
