//! How fast can WGSL cooperative matrices multiply f16 matrices on this GPU? Runs
//! `probe/gemm_f16.wgsl` in several tile shapes, with the operands staged in workgroup memory
//! or loaded straight from storage, on prefill-sized products (512 rows), checks sampled
//! outputs against the CPU, and prints TFLOP/s. A probe for planning the prefill kernels, not a
//! test.
//!
//! `cargo run --release -p rwkv-wgpu --example gemm_probe [-- SGMxSGNxFMxFN:SMEM ...]`

use std::time::Instant;
use wgpu::util::DeviceExt;

const TEMPLATE: &str = include_str!("probe/gemm_f16.wgsl");

#[derive(Clone, Copy, Debug)]
struct Config {
    sgm: u32,
    sgn: u32,
    fm: u32,
    fn_: u32,
    smem: bool,
}

impl Config {
    fn parse(s: &str) -> Option<Config> {
        let (dims, smem) = s.split_once(':')?;
        let v: Vec<u32> = dims.split('x').filter_map(|t| t.parse().ok()).collect();
        (v.len() == 4).then(|| Config {
            sgm: v[0],
            sgn: v[1],
            fm: v[2],
            fn_: v[3],
            smem: smem == "1",
        })
    }
    fn bm(&self) -> u32 {
        self.sgm * self.fm * 16
    }
    fn bn(&self) -> u32 {
        self.sgn * self.fn_ * 16
    }
    fn source(&self) -> String {
        let mut decls = String::new();
        let mut step = String::new();
        let mut store = String::new();
        for i in 0..self.fm {
            for j in 0..self.fn_ {
                decls += &format!("    var c{i}{j} = coop_mat16x16<f32, C>();\n");
                // The index in a `let`: naga 30's SPIR-V writer panics on an index computed
                // inside a cooperative store's pointer argument.
                store += &format!(
                    "    let o{i}{j} = (m0 + fm + {}u) * n + n0 + fn_ + {}u;\n    coopStoreT(c{i}{j}, &c[o{i}{j}], n);\n",
                    16 * i,
                    16 * j
                );
            }
        }
        for i in 0..self.fm {
            step += &if self.smem {
                format!("            let a{i} = coopLoadT<coop_mat16x16<f16, A>>(&at[cur * A_TILE + (fm + {}u) * AS + kk], AS);\n", 16 * i)
            } else {
                format!("            let a{i} = coopLoadT<coop_mat16x16<f16, A>>(&a[(m0 + fm + {}u) * k + s * BK + kk], k);\n", 16 * i)
            };
        }
        for j in 0..self.fn_ {
            step += &if self.smem {
                format!("            let b{j} = coopLoadT<coop_mat16x16<f16, B>>(&bt[cur * B_TILE + kk * BS + fn_ + {}u], BS);\n", 16 * j)
            } else {
                format!("            let b{j} = coopLoadT<coop_mat16x16<f16, B>>(&b[(s * BK + kk) * n + n0 + fn_ + {}u], n);\n", 16 * j)
            };
        }
        for i in 0..self.fm {
            for j in 0..self.fn_ {
                step += &format!("            c{i}{j} = coopMultiplyAdd(a{i}, b{j}, c{i}{j});\n");
            }
        }
        TEMPLATE
            .replace("SGM_u", &format!("{}u", self.sgm))
            .replace("SGN_u", &format!("{}u", self.sgn))
            .replace("FM_u", &format!("{}u", self.fm))
            .replace("FN_u", &format!("{}u", self.fn_))
            .replace("SMEM", if self.smem { "1u" } else { "0u" })
            .replace("ACC_DECLS", &decls)
            .replace("STEP_CODE", &step)
            .replace("STORE_CODE", &store)
    }
}

fn main() {
    pollster::block_on(run());
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

async fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let configs: Vec<Config> = if args.is_empty() {
        [
            "2x2x2x2:1",
            "2x4x4x2:1",
            "4x2x2x4:1",
            "2x2x4x4:1",
            "2x4x4x2:0",
            "2x2x4x4:0",
        ]
        .iter()
        .filter_map(|s| Config::parse(s))
        .collect()
    } else {
        args.iter().filter_map(|s| Config::parse(s)).collect()
    };
    if let Ok(dir) = std::env::var("GEMM_PROBE_DUMP") {
        for (i, cfg) in configs.iter().enumerate() {
            let _ = std::fs::write(format!("{dir}/gemm_{i}.wgsl"), cfg.source());
        }
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    let Some(adapter) = adapters.into_iter().find(|a| {
        a.features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    }) else {
        println!("no adapter with cooperative matrices");
        return;
    };
    println!("adapter: {}", adapter.get_info().name);
    let (device, queue) = match adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("gemm_probe"),
            required_features: wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
                | wgpu::Features::SHADER_F16
                | wgpu::Features::SUBGROUP,
            required_limits: adapter.limits(),
            // SAFETY: a probe; wgpu marks cooperative matrices experimental (possible bugs).
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            ..Default::default()
        })
        .await
    {
        Ok(d) => d,
        Err(e) => {
            println!("cannot open the device: {e}");
            return;
        }
    };
    // GEMM_PROBE_UNCHECKED: "bounds" drops wgpu's index clamping, "loops" also the loop
    // bounding counters, "all" also the division guards.
    let unchecked_level = std::env::var("GEMM_PROBE_UNCHECKED").unwrap_or_default();
    let unchecked = !unchecked_level.is_empty();
    println!("runtime checks dropped: {unchecked_level:?}");
    let mut rng = Rng(0x1234_5678);
    for &(m, k, n) in &[
        (512u32, 4096u32, 16384u32),
        (512, 4096, 4096),
        (512, 16384, 4096),
    ] {
        let av: Vec<half::f16> = (0..m * k)
            .map(|_| half::f16::from_f32(rng.next()))
            .collect();
        let bv: Vec<half::f16> = (0..k * n)
            .map(|_| half::f16::from_f32(rng.next()))
            .collect();
        let st = wgpu::BufferUsages::STORAGE;
        let init = |data: &[u8], usage| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: data,
                usage,
            })
        };
        let f16_bytes =
            |v: &[half::f16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let ba = init(&f16_bytes(&av), st);
        let bb = init(&f16_bytes(&bv), st);
        let dims = init(
            bytemuck::cast_slice(&[m, n, k, 0]),
            wgpu::BufferUsages::UNIFORM,
        );
        let c_bytes = (m as u64) * (n as u64) * 4;
        let bc = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: c_bytes,
            usage: st | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: c_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        for cfg in &configs {
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let desc = wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(cfg.source().into()),
            };
            let module = if unchecked {
                // SAFETY: a probe whose indices stay inside the buffers by construction
                // (dimensions are multiples of the tiles).
                unsafe {
                    device.create_shader_module_trusted(
                        desc,
                        wgpu::ShaderRuntimeChecks {
                            bounds_checks: false,
                            force_loop_bounding: !(unchecked_level == "loops"
                                || unchecked_level == "all"),
                            int_div_checks: unchecked_level != "all",
                            ..wgpu::ShaderRuntimeChecks::checked()
                        },
                    )
                }
            } else {
                device.create_shader_module(desc)
            };
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = scope.pop().await {
                println!("{cfg:?}: rejected: {e}");
                continue;
            }
            let layout = pipeline.get_bind_group_layout(0);
            let mut entries = vec![
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: dims.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: bc.as_entire_binding(),
                },
            ];
            // The staged variant uses only the vec4 views; the direct one also has the fill
            // function (unused, but part of the module's layout).
            let views: &[(u32, &wgpu::Buffer)] = if cfg.smem {
                &[(4, &ba), (5, &bb)]
            } else {
                &[(1, &ba), (2, &bb), (4, &ba), (5, &bb)]
            };
            for &(binding, buffer) in views {
                entries.push(wgpu::BindGroupEntry {
                    binding,
                    resource: buffer.as_entire_binding(),
                });
            }
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &layout,
                entries: &entries,
            });
            if let Some(e) = scope.pop().await {
                println!("{cfg:?}: bind group rejected: {e}");
                continue;
            }
            let groups = (n / cfg.bn(), m / cfg.bm());
            let run = |reps: u32| {
                let mut enc = device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bg, &[]);
                    for _ in 0..reps {
                        pass.dispatch_workgroups(groups.0, groups.1, 1);
                    }
                }
                queue.submit([enc.finish()]);
                let _ = device.poll(wgpu::PollType::wait_indefinitely());
            };
            run(2);
            let reps = 20;
            let t = Instant::now();
            run(reps);
            let secs = t.elapsed().as_secs_f64() / reps as f64;
            let tflops = 2.0 * (m as f64) * (n as f64) * (k as f64) / secs / 1e12;
            // Sampled check against the CPU.
            let mut enc = device.create_command_encoder(&Default::default());
            enc.copy_buffer_to_buffer(&bc, 0, &read, 0, c_bytes);
            queue.submit([enc.finish()]);
            read.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            let _ = device.poll(wgpu::PollType::wait_indefinitely());
            let got: Vec<f32> = match read.slice(..).get_mapped_range() {
                Ok(view) => bytemuck::cast_slice(&view).to_vec(),
                Err(e) => {
                    println!("read-back failed: {e}");
                    return;
                }
            };
            read.unmap();
            let mut worst = 0f32;
            for s in 0..64u32 {
                let i = (s * 7919 + 13) % m;
                let j = (s * 104_729 + 71) % n;
                let want: f32 = (0..k)
                    .map(|q| av[(i * k + q) as usize].to_f32() * bv[(q * n + j) as usize].to_f32())
                    .sum();
                worst = worst.max((got[(i * n + j) as usize] - want).abs());
            }
            println!(
                "{m}x{k}x{n} tile {}x{} wg {} smem {}: {:.3} ms, {tflops:.1} TFLOP/s, max sampled |diff| {worst:.2e}",
                cfg.bm(),
                cfg.bn(),
                cfg.sgm * cfg.sgn * 32,
                cfg.smem,
                secs * 1e3
            );
        }
    }
}
