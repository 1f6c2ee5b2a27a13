//! Microbenchmark of the CUDA backend on random weights of the released RWKV-7 shapes.
//!
//! `cuda_bench [1.5b|7.2b|tiny ...] [--reps N] [--profile] [--b1] [--opt KEY=v1;v2;...]`: decode
//! batch 1, prefill 512 tokens and decode of 64 sequences (`--b1`: batch 1 only; `--opt`: each
//! case once per value of one `CudaOptions` field, set before its plan is compiled, for A/B
//! runs in one process: `graphs`, `sparse`, `ln_shift_vec`, `q8x` take 0 or 1, `mma_min_rows`
//! a number); large matrices in Q4_K (random blocks), LoRA in f16, vectors f32.
//! Prints tokens/s, bytes read per step and the fraction of the 3.02 TB/s copy bandwidth.

use std::time::Instant;

use half::f16;
use rwkv_core::backend::{Backend, StepOutput, StepShape};
use rwkv_core::model::v7::{canonical_tensors, is_large_matrix, PlanBuilder};
use rwkv_core::model::{LoraRanks, Tensor, TensorBytes};
use rwkv_core::{DType, ModelDesc, RwkvVersion};
use rwkv_cuda::{CudaBackend, CudaOptions};

const COPY_BW: f64 = 3.02e12;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn desc(name: &str) -> ModelDesc {
    let (n_layer, c, lora) = match name {
        "7.2b" => (
            32,
            4096,
            LoraRanks {
                w: 128,
                a: 128,
                v: 96,
                g: 480,
            },
        ),
        "tiny" => (
            4,
            256,
            LoraRanks {
                w: 32,
                a: 32,
                v: 32,
                g: 64,
            },
        ),
        _ => (
            24,
            2048,
            LoraRanks {
                w: 96,
                a: 96,
                v: 64,
                g: 256,
            },
        ),
    };
    ModelDesc {
        version: RwkvVersion::V7,
        n_layer,
        n_embd: c,
        head_size: 64,
        vocab_size: if name == "tiny" { 1024 } else { 65536 },
        ffn_size: 4 * c,
        lora,
    }
}

fn tensor(rng: &mut Rng, name: &str, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut b: Vec<u8>;
    let dtype;
    if shape.len() == 1 {
        dtype = DType::F32;
        let base = if name.contains("ln") && name.ends_with("weight") {
            1.0
        } else {
            0.0
        };
        b = (0..n)
            .flat_map(|_| (base + 0.5 * rng.unit()).to_le_bytes())
            .collect();
    } else if is_large_matrix(name) {
        dtype = DType::Q4K;
        let scale = if name == "emb.weight" {
            1.0
        } else {
            2.0 / (shape[1] as f32).sqrt()
        };
        let d = 2.0 * scale / (63.0 * 15.0);
        b = Vec::with_capacity(n / 256 * 144);
        for _ in 0..n / 256 {
            b.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            b.extend_from_slice(&f16::from_f32(d * 7.5).to_le_bytes());
            let mut k = 0;
            while k < 140 {
                let r = rng.next().to_le_bytes();
                let take = (140 - k).min(8);
                b.extend_from_slice(&r[..take]);
                k += take;
            }
        }
    } else {
        dtype = DType::F16;
        let scale = 2.0 / (shape[1] as f32).sqrt();
        b = (0..n)
            .flat_map(|_| f16::from_f32(scale * rng.unit()).to_le_bytes())
            .collect();
    }
    Tensor::new(dtype, shape.to_vec(), TensorBytes::owned(b)).expect("consistent tensor")
}

/// `options` with field `key` set to `value` (0 or 1 for the switches).
fn with_option(mut options: CudaOptions, key: &str, value: &str) -> Result<CudaOptions, String> {
    let flag = || match value {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(format!("--opt {key}={value}: expected 0 or 1")),
    };
    match key {
        "graphs" => options.graphs = flag()?,
        "sparse" => options.sparse = flag()?,
        "ln_shift_vec" => options.ln_shift_vec = flag()?,
        "q8x" => options.q8x = flag()?,
        "mma_min_rows" => {
            options.mma_min_rows = value
                .parse()
                .map_err(|_| format!("--opt mma_min_rows={value}: expected a number"))?
        }
        _ => return Err(format!("--opt: unknown option '{key}'")),
    }
    Ok(options)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let profile = args.iter().any(|a| a == "--profile");
    let b1_only = args.iter().any(|a| a == "--b1");
    // (name, values): each case is compiled and run once per value.
    let opt_ab: Option<(String, Vec<String>)> = args
        .iter()
        .position(|a| a == "--opt")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.split_once('='))
        .map(|(n, v)| (n.to_string(), v.split(';').map(str::to_string).collect()));
    let mut shapes: Vec<&str> = args
        .iter()
        .filter(|a| ["1.5b", "7.2b", "tiny"].contains(&a.as_str()))
        .map(|s| s.as_str())
        .collect();
    if shapes.is_empty() {
        shapes = vec!["1.5b"];
    }
    let mut table = Vec::new();
    for shape in shapes {
        let d = desc(shape);
        let mut be = match CudaBackend::new(0, CudaOptions::default()) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("SKIPPED: no CUDA device: {e}");
                return;
            }
        };
        eprintln!(
            "{shape}: {:?} kernels {}",
            be.info().device,
            be.kernel_cache()
        );
        let t0 = Instant::now();
        let mut rng = Rng(42);
        let pb = PlanBuilder::new(&d);
        let mut total_bytes = 0u64;
        let mut emb_row_bytes = 0u64;
        let mut emb_bytes = 0u64;
        for (i, (name, sh)) in canonical_tensors(&d).iter().enumerate() {
            assert_eq!(&pb.weights()[i], name);
            let t = tensor(&mut rng, name, sh);
            let nb = t.data.as_slice().len() as u64;
            total_bytes += nb;
            if name == "emb.weight" {
                emb_bytes = nb;
                emb_row_bytes = nb / sh[0] as u64;
            }
            be.upload_weight(i, name, &t).expect("upload");
        }
        eprintln!(
            "{shape}: generated and uploaded {:.2} GB in {:.1}s",
            total_bytes as f64 / 1e9,
            t0.elapsed().as_secs_f64()
        );
        let n_slots = 65;
        be.alloc_states(n_slots, d.state_len()).expect("states");
        let state_bytes = (d.state_len() * 4) as u64;
        // Bytes one decode step must read: every weight once (one row of the embedding), the
        // state read and written.
        let step_weight_bytes = total_bytes - emb_bytes + emb_row_bytes;

        let cases: [(&str, StepShape); 3] = [
            ("decode b1", StepShape { n_seq: 1, n_tok: 1 }),
            (
                "prefill 512",
                StepShape {
                    n_seq: 1,
                    n_tok: 512,
                },
            ),
            (
                "decode b64",
                StepShape {
                    n_seq: 64,
                    n_tok: 1,
                },
            ),
        ];
        let variants: Vec<Option<String>> = match &opt_ab {
            Some((_, vals)) => vals.iter().cloned().map(Some).collect(),
            None => vec![None],
        };
        let runs = cases
            .iter()
            .filter(|(_, sh)| !b1_only || sh.rows() == 1)
            .flat_map(|c| variants.iter().map(move |v| (c.0, c.1, v.clone())));
        for (label, sh, variant) in runs {
            let label = match (&opt_ab, &variant) {
                (Some((name, _)), Some(v)) => {
                    match with_option(CudaOptions::default(), name, v) {
                        Ok(o) => be.set_options(o),
                        Err(e) => {
                            eprintln!("{e}");
                            std::process::exit(2);
                        }
                    }
                    format!("{label} {name}={v}")
                }
                _ => label.to_string(),
            };
            let plan = pb.build(sh, false);
            let pid = be.compile(&plan).expect("compile");
            let rows = sh.rows();
            let slots: Vec<usize> = (0..sh.n_seq).collect();
            let mut times = Vec::new();
            let mut am = vec![0u32; sh.n_seq];
            let mut logits = vec![0f32; sh.n_seq * d.vocab_size];
            for it in 0..reps + 3 {
                let tokens: Vec<u32> = (0..rows)
                    .map(|_| (rng.next() % d.vocab_size as u64) as u32)
                    .collect();
                let t = Instant::now();
                if sh.n_tok == 1 {
                    be.execute(pid, &tokens, &slots, StepOutput::Argmax(&mut am))
                        .expect("step");
                } else {
                    be.execute(pid, &tokens, &slots, StepOutput::Logits(&mut logits))
                        .expect("step");
                }
                if it >= 3 {
                    times.push(t.elapsed().as_secs_f64());
                }
            }
            let t = median(&mut times);
            let tok_s = rows as f64 / t;
            let bytes = step_weight_bytes + state_bytes * 2 * sh.n_seq as u64;
            let floor = bytes as f64 / COPY_BW;
            let line = format!(
                "{shape:>5} {label:<12} {:>10.1} tok/s {:>9.3} ms/step  {:>7.1} MB/step  floor {:>7.3} ms  {:>5.1}% of 3.02 TB/s",
                tok_s,
                t * 1e3,
                bytes as f64 / 1e6,
                floor * 1e3,
                100.0 * floor / t
            );
            eprintln!("{line}");
            table.push(line);
            if profile {
                let tokens: Vec<u32> = (0..rows)
                    .map(|_| (rng.next() % d.vocab_size as u64) as u32)
                    .collect();
                let prof = be.profile_step(pid, &tokens, &slots).expect("profile");
                let mut agg: Vec<(String, f32, usize)> = Vec::new();
                for (name, ms) in &prof {
                    match agg.iter_mut().find(|a| &a.0 == name) {
                        Some(a) => {
                            a.1 += ms;
                            a.2 += 1;
                        }
                        None => agg.push((name.clone(), *ms, 1)),
                    }
                }
                agg.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
                let sum: f32 = prof.iter().map(|p| p.1).sum();
                eprintln!(
                    "  profile ({} launches, {:.3} ms summed one by one):",
                    prof.len(),
                    sum
                );
                for (name, ms, n) in agg.iter().take(16) {
                    eprintln!("    {:>8.3} ms  {:>3}x  {}", ms, n, name);
                }
            }
        }
    }
    println!("\n== cuda_bench (median of runs, host clock around execute incl. copies) ==");
    for l in table {
        println!("{l}");
    }
}
