//! Every CUDA kernel compiles with NVRTC for every architecture the backend supports, and ptxas
//! spills registers only where crates/rwkv-cuda/NOTES.md ("Expected register spills") says.
//! Needs NVRTC only (no driver, no GPU), so CI runs it with NVRTC from the `nvidia-cuda-nvrtc`
//! pip wheels (scripts/nvrtc-wheels.sh; CUDA 12 and 13): a kernel that does not compile, or a
//! change that makes a kernel spill, fails here instead of on a user's first run.
//!
//! Without NVRTC the test skips (rwkv_testing::skip_gpu("nvrtc", ..): a failure under
//! RWKV_REQUIRE_GPU=nvrtc, which .ci/run sets). `RWKV_NVRTC_EXPECT_MAJOR=12` (or 13) fails when
//! another NVRTC was loaded, so CI knows which wheel it tested. `RWKV_NVRTC_ARCHS=80,86,...`
//! limits the architectures (unset or `all`: every one NVRTC offers from sm_80 on).
//! sm_75 is compiled too and only reported: it lacks the m16n8k16 mma of kernels/mma.cu.

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::path::Path;

use cudarc::nvrtc::result as nvrtc;
use cudarc::nvrtc::sys as nv;

/// The oldest architecture the backend supports (README: compute capability 8.0 or newer).
const MIN_ARCH: i32 = 80;
/// Tried and reported, never asserted: the Turing generation below the supported range.
const INFO_ARCHS: [i32; 1] = [75];

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The kernel source exactly as the backend builds it: the files `kernel_source()` in
/// src/gpu.rs includes, in its order, joined by newlines. Read from gpu.rs itself so the list
/// cannot drift from the backend's; every file in kernels/ must be in it.
fn kernel_source() -> String {
    let gpu_rs = std::fs::read_to_string(crate_dir().join("src/gpu.rs")).expect("src/gpu.rs");
    let body = gpu_rs
        .split("fn kernel_source()")
        .nth(1)
        .and_then(|rest| rest.split("\n}\n").next())
        .expect("kernel_source() in src/gpu.rs");
    let files: Vec<&str> = body
        .split("include_str!(\"../kernels/")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    assert!(!files.is_empty(), "no include_str! in kernel_source()");
    let on_disk: Vec<String> = std::fs::read_dir(crate_dir().join("kernels"))
        .expect("kernels/")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".cu") || n.ends_with(".cuh"))
        .collect();
    for f in &on_disk {
        assert!(
            files.contains(&f.as_str()),
            "kernels/{f} is not in kernel_source(), so no build compiles it"
        );
    }
    files
        .iter()
        .map(|f| std::fs::read_to_string(crate_dir().join("kernels").join(f)).expect("kernel"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What ptxas reported for one kernel.
#[derive(Debug, Default, Clone)]
struct Usage {
    registers: u32,
    stack: u32,
    spill_stores: u32,
    spill_loads: u32,
}

/// Compiles to a CUBIN for `sm_<arch>` with the backend's options (src/gpu.rs `compile`) plus
/// ptxas's verbose report; the program log on success, the error log on failure.
fn compile(src: &str, arch: i32) -> Result<String, String> {
    let csrc = CString::new(src).expect("no NUL in kernels");
    let name = CString::new("rwkv.cu").expect("name");
    let prog = nvrtc::create_program(&csrc, Some(&name)).map_err(|e| format!("{e:?}"))?;
    let opts = [
        format!("--gpu-architecture=sm_{arch}"),
        "-std=c++17".to_string(),
        "-default-device".to_string(),
        "--ptxas-options=-v".to_string(),
    ];
    // SAFETY: prog was created above and is destroyed below.
    let compiled = unsafe { nvrtc::compile_program(prog, &opts) };
    // SAFETY: prog is valid.
    let log = unsafe { nvrtc::get_program_log(prog) }.unwrap_or_default();
    let log: Vec<u8> = log
        .iter()
        .map(|&c| c as u8)
        .take_while(|&c| c != 0)
        .collect();
    let log = String::from_utf8_lossy(&log).into_owned();
    let result = match compiled {
        Err(e) => Err(format!("{e:?}\n{log}")),
        Ok(()) => {
            let mut size = 0usize;
            // SAFETY: prog compiled; size, then a buffer of that size.
            unsafe { nv::nvrtcGetCUBINSize(prog, &mut size) }
                .result()
                .map_err(|e| format!("CUBIN size: {e:?}"))?;
            let mut cubin = vec![0u8; size];
            // SAFETY: cubin has `size` bytes.
            unsafe { nv::nvrtcGetCUBIN(prog, cubin.as_mut_ptr() as *mut c_char) }
                .result()
                .map_err(|e| format!("CUBIN: {e:?}"))?;
            if cubin.starts_with(b"\x7fELF") {
                Ok(log)
            } else {
                Err("the CUBIN is not an ELF image".into())
            }
        }
    };
    // SAFETY: destroys the program once.
    let _ = unsafe { nvrtc::destroy_program(prog) };
    result
}

/// ptxas's verbose lines, per kernel:
/// `ptxas info    : Function properties for NAME` /
/// `    S bytes stack frame, N bytes spill stores, M bytes spill loads` /
/// `ptxas info    : Used R registers, ...`.
fn parse_ptxas(log: &str) -> BTreeMap<String, Usage> {
    let mut out: BTreeMap<String, Usage> = BTreeMap::new();
    let mut current: Option<String> = None;
    let number_before = |line: &str, word: &str| -> Option<u32> {
        let at = line.find(word)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    for line in log.lines() {
        if let Some(name) = line.split("Function properties for ").nth(1) {
            current = Some(name.trim().to_string());
            out.entry(name.trim().to_string()).or_default();
        } else if let Some(name) = line.split("Compiling entry function '").nth(1) {
            let name = name.split('\'').next().unwrap_or(name).to_string();
            current = Some(name.clone());
            out.entry(name).or_default();
        } else if let Some(k) = current.as_ref().and_then(|k| out.get_mut(k)) {
            if line.contains("spill stores") {
                k.stack = number_before(line, "bytes stack frame").unwrap_or(0);
                k.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
                k.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used ") && line.contains(" registers") {
                k.registers = number_before(line, "registers").unwrap_or(0);
            }
        }
    }
    out
}

/// One row of the table under "## Expected register spills" in NOTES.md:
/// `| kernel | archs | spill stores | spill loads | why |`, bytes at most; archs `all`, `sm_XX`
/// or a range `sm_XX-sm_YY`.
struct Allowed {
    kernel: String,
    archs: (i32, i32),
    stores: u32,
    loads: u32,
}

fn parse_arch(s: &str) -> Option<i32> {
    s.trim().strip_prefix("sm_")?.parse().ok()
}

fn expected_spills() -> Vec<Allowed> {
    let notes = std::fs::read_to_string(crate_dir().join("NOTES.md")).expect("NOTES.md");
    let section = notes
        .split("## Expected register spills")
        .nth(1)
        .expect("NOTES.md has an \"## Expected register spills\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.trim_start().starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let kernel = cells.get(1)?.trim_matches('`').to_string();
            let archs = match *cells.get(2)? {
                "all" => (0, i32::MAX),
                range => match range.split_once('-') {
                    Some((lo, hi)) => (parse_arch(lo)?, parse_arch(hi)?),
                    None => (parse_arch(range)?, parse_arch(range)?),
                },
            };
            let stores = cells.get(3)?.parse().ok()?;
            let loads = cells.get(4)?.parse().ok()?;
            Some(Allowed {
                kernel,
                archs,
                stores,
                loads,
            })
        })
        .collect()
}

fn supported_archs() -> Vec<i32> {
    let mut n = 0i32;
    // SAFETY: writes one int.
    unsafe { nv::nvrtcGetNumSupportedArchs(&mut n) }
        .result()
        .expect("nvrtcGetNumSupportedArchs");
    let mut archs = vec![0i32; n.max(0) as usize];
    // SAFETY: archs has n ints.
    unsafe { nv::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }
        .result()
        .expect("nvrtcGetSupportedArchs");
    archs
}

#[test]
fn every_kernel_compiles_for_every_supported_architecture_without_unexpected_spills() {
    // SAFETY: only tries to load the library.
    if !unsafe { nv::is_culib_present() } {
        rwkv_testing::skip_gpu(
            "nvrtc",
            "libnvrtc.so.13/.so.12 not on the library path (scripts/nvrtc-wheels.sh installs it)",
        );
        return;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: writes two ints.
    unsafe { nv::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .expect("nvrtcVersion");
    println!("NVRTC {major}.{minor}");
    if let Ok(want) = std::env::var("RWKV_NVRTC_EXPECT_MAJOR") {
        assert_eq!(
            want.trim(),
            major.to_string(),
            "RWKV_NVRTC_EXPECT_MAJOR={want} but NVRTC {major}.{minor} was loaded"
        );
    }
    // RWKV_NVRTC_ARCHS=80,90 limits the run to some of them (each takes 10-100 s of one core:
    // test.sh's default); unset or `all`: every one.
    let only: Option<Vec<i32>> = std::env::var("RWKV_NVRTC_ARCHS")
        .ok()
        .filter(|v| v.trim() != "all")
        .map(|v| v.split(',').filter_map(|a| a.trim().parse().ok()).collect());
    let archs: Vec<i32> = supported_archs()
        .into_iter()
        .filter(|&a| a >= MIN_ARCH && only.as_ref().is_none_or(|o| o.contains(&a)))
        .collect();
    // The generations the backend is run on must be among them (NVRTC 12.0 and later know them).
    for must in [80, 86, 89, 90]
        .into_iter()
        .filter(|a| only.as_ref().is_none_or(|o| o.contains(a)))
    {
        assert!(
            archs.contains(&must),
            "NVRTC {major}.{minor} does not offer sm_{must}: {archs:?}"
        );
    }
    let src = kernel_source();
    let src = src.as_str();
    let expected = expected_spills();
    let mut failures = Vec::new();
    // One NVRTC program per architecture, as many at a time as there are cores (each takes
    // 10-30 s; NVRTC programs are independent, so threads are safe).
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut logs: Vec<(i32, Result<String, String>)> = Vec::new();
    for group in archs.chunks(threads) {
        std::thread::scope(|scope| {
            let running: Vec<_> = group
                .iter()
                .map(|&arch| (arch, scope.spawn(move || compile(src, arch))))
                .collect();
            for (arch, handle) in running {
                let result = handle
                    .join()
                    .unwrap_or_else(|_| Err("the compile thread panicked".into()));
                logs.push((arch, result));
            }
        });
    }
    for (arch, result) in logs {
        let log = match result {
            Ok(log) => log,
            Err(e) => {
                failures.push(format!("sm_{arch}: does not compile:\n{e}"));
                continue;
            }
        };
        let usage = parse_ptxas(&log);
        assert!(
            !usage.is_empty(),
            "sm_{arch}: no ptxas report in the log:\n{log}"
        );
        for (kernel, u) in &usage {
            println!(
                "sm_{arch} {kernel}: {} registers, {} B stack, {} B spill stores, {} B spill loads",
                u.registers, u.stack, u.spill_stores, u.spill_loads
            );
            if u.spill_stores == 0 && u.spill_loads == 0 {
                continue;
            }
            let allowed = expected
                .iter()
                .find(|a| &a.kernel == kernel && a.archs.0 <= arch && arch <= a.archs.1);
            match allowed {
                Some(a) if u.spill_stores <= a.stores && u.spill_loads <= a.loads => {}
                Some(a) => failures.push(format!(
                    "sm_{arch} {kernel}: {} B spill stores / {} B loads, NOTES.md allows {} / {}",
                    u.spill_stores, u.spill_loads, a.stores, a.loads
                )),
                None => failures.push(format!(
                    "sm_{arch} {kernel}: {} B spill stores / {} B loads, not in NOTES.md's \
                     \"Expected register spills\"",
                    u.spill_stores, u.spill_loads
                )),
            }
        }
    }
    for arch in INFO_ARCHS {
        match compile(src, arch) {
            Ok(_) => println!("sm_{arch} (unsupported, informational): compiles"),
            Err(e) => {
                let first: Vec<&str> = e.lines().filter(|l| l.contains("error")).take(5).collect();
                println!(
                    "sm_{arch} (unsupported, informational): does not compile: {}",
                    first.join(" | ")
                );
            }
        }
    }
    println!("compiled for {archs:?} with NVRTC {major}.{minor}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_ptxas_report_parses() {
    let log = "ptxas info    : Compiling entry function 'matvec1_kernel' for 'sm_90'\n\
               ptxas info    : Function properties for matvec1_kernel\n\
               \x20   96 bytes stack frame, 12 bytes spill stores, 16 bytes spill loads\n\
               ptxas info    : Used 64 registers, used 1 barriers, 96 bytes cumulative stack size\n\
               ptxas info    : Compiling entry function 'argmax_kernel' for 'sm_90'\n\
               ptxas info    : Function properties for argmax_kernel\n\
               \x20   0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
               ptxas info    : Used 18 registers\n";
    let u = parse_ptxas(log);
    let m = &u["matvec1_kernel"];
    assert_eq!(
        (m.registers, m.stack, m.spill_stores, m.spill_loads),
        (64, 96, 12, 16)
    );
    assert_eq!(u["argmax_kernel"].registers, 18);
    assert_eq!(u["argmax_kernel"].spill_stores, 0);
    // The NOTES table parses and names kernels that exist.
    let src = kernel_source();
    let rows = expected_spills();
    for a in &rows {
        // Names made by a macro (ln_shift##VV##_kernel) appear up to their first digit.
        let stem = a
            .kernel
            .split(|c: char| c.is_ascii_digit())
            .next()
            .unwrap_or("");
        assert!(
            !stem.is_empty() && src.contains(stem),
            "NOTES.md lists {}, not in the kernels",
            a.kernel
        );
        assert!(a.archs.0 <= a.archs.1, "{}: arch range", a.kernel);
    }
}
