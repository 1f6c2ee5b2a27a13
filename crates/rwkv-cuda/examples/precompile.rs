//! Compiles the kernels into the disk cache without a GPU: `precompile [sm_90 ...]`
//! (set RWKV_CUDA_CACHE to choose the folder).

fn main() {
    let mut archs: Vec<String> = std::env::args().skip(1).collect();
    if archs.is_empty() {
        archs.push("sm_90".into());
    }
    for a in archs {
        let t = std::time::Instant::now();
        match rwkv_cuda::precompile_kernels(&a) {
            Ok(p) => println!("{a}: {} ({:.1}s)", p.display(), t.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("{a}: {e}");
                std::process::exit(1);
            }
        }
    }
}
