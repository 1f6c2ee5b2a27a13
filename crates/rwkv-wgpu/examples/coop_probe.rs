//! Does this machine's wgpu reach the tensor cores? Lists each adapter's cooperative-matrix
//! configurations (`Features::EXPERIMENTAL_COOPERATIVE_MATRIX`, native only), then on the first
//! adapter offering f16 x f16 -> f32 16x16 tiles multiplies one 16x16x16 tile on the GPU and
//! compares it with the CPU. A probe for planning, not a test.
//!
//! `cargo run --release -p rwkv-wgpu --example coop_probe`

use wgpu::util::DeviceExt;

const SHADER: &str = r#"
enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> a: array<f16>;
@group(0) @binding(1) var<storage, read> b: array<f16>;
@group(0) @binding(2) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(32)
fn main() {
    let ma = coopLoadT<coop_mat16x16<f16, A>>(&a[0], 16u);
    let mb = coopLoadT<coop_mat16x16<f16, B>>(&b[0], 16u);
    var mc = coopLoadT<coop_mat16x16<f32, C>>(&c[0], 16u);
    mc = coopMultiplyAdd(ma, mb, mc);
    coopStoreT(mc, &c[0], 16u);
}
"#;

fn main() {
    pollster::block_on(run());
}

async fn run() {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
    let mut chosen = None;
    for a in adapters {
        let info = a.get_info();
        let has = a
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
        let props = a.cooperative_matrix_properties();
        println!(
            "{} ({:?}): cooperative matrix {has}, {} configurations",
            info.name,
            info.backend,
            props.len()
        );
        for p in &props {
            println!(
                "  {}x{}x{} {:?} -> {:?}",
                p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type
            );
        }
        let fits = props.iter().any(|p| {
            p.m_size == 16
                && p.n_size == 16
                && p.k_size == 16
                && p.ab_type == wgpu::CooperativeScalarType::F16
                && p.cr_type == wgpu::CooperativeScalarType::F32
        });
        if has && fits && chosen.is_none() {
            chosen = Some(a);
        }
    }
    let Some(adapter) = chosen else {
        println!("no adapter offers f16 x f16 -> f32 16x16x16 cooperative matrices");
        return;
    };
    let (device, queue) = match adapter
        .request_device(&wgpu::DeviceDescriptor {
            label: Some("coop_probe"),
            required_features: wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
                | wgpu::Features::SHADER_F16,
            // SAFETY: a probe; wgpu marks cooperative matrices experimental (possible bugs).
            experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
            ..Default::default()
        })
        .await
    {
        Ok(d) => d,
        Err(e) => {
            println!("cannot open the device with cooperative matrices: {e}");
            return;
        }
    };
    // Fresh values: a splitmix sequence scaled to [-1, 1), rounded to f16 on both sides.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let a: Vec<half::f16> = (0..256).map(|_| half::f16::from_f32(next())).collect();
    let b: Vec<half::f16> = (0..256).map(|_| half::f16::from_f32(next())).collect();
    let c0: Vec<f32> = (0..256).map(|_| next()).collect();
    let mut want = c0.clone();
    for i in 0..16 {
        for j in 0..16 {
            for k in 0..16 {
                want[i * 16 + j] += a[i * 16 + k].to_f32() * b[k * 16 + j].to_f32();
            }
        }
    }
    let buf = |data: &[u8], usage| {
        device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: None,
            contents: data,
            usage,
        })
    };
    let st = wgpu::BufferUsages::STORAGE;
    let f16_bytes = |v: &[half::f16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let ba = buf(&f16_bytes(&a), st);
    let bb = buf(&f16_bytes(&b), st);
    let bc = buf(bytemuck::cast_slice(&c0), st | wgpu::BufferUsages::COPY_SRC);
    let read = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 1024,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SHADER.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    if let Some(e) = scope.pop().await {
        println!("shader or pipeline rejected: {e}");
        return;
    }
    let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[
            wgpu::BindGroupEntry {
                binding: 0,
                resource: ba.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: bb.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 2,
                resource: bc.as_entire_binding(),
            },
        ],
    });
    let mut enc = device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bg, &[]);
        pass.dispatch_workgroups(1, 1, 1);
    }
    enc.copy_buffer_to_buffer(&bc, 0, &read, 0, 1024);
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
    let err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, f32::max);
    println!(
        "16x16x16 f16 -> f32 tile: max |GPU - CPU| = {err:.3e} (f32 accumulation: ~1e-6 expected)"
    );
}
