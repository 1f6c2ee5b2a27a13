//! Failure paths: bad arguments, limits, device loss. Each must be an `Err`, never a panic or
//! a hang.

mod common;

use common::*;
use rwkv_core::backend::{Act, Backend, BufferDecl, MatJob, Op, Plan, StepOutput, StepShape};
use rwkv_core::{BackendErrorKind, Error, Result};
use rwkv_wgpu::{probe, WgpuBackend, WgpuOptions};

fn tiny_plan(c: usize, n_out: usize, shape: StepShape) -> Plan {
    Plan {
        shape,
        buffers: vec![
            BufferDecl {
                name: "x".into(),
                width: c,
                last_only: false,
            },
            BufferDecl {
                name: "y".into(),
                width: n_out,
                last_only: false,
            },
        ],
        weights: vec!["emb.weight".into(), "w".into()],
        ops: vec![
            Op::Embed { table: 0, out: 0 },
            Op::MatMul {
                jobs: vec![MatJob {
                    weight: 1,
                    x: 0,
                    out: 1,
                    bias: None,
                    act: Act::None,
                    accumulate: false,
                }],
            },
        ],
        state: rwkv_core::backend::StateLayout::default(),
        logits: 1,
    }
}

fn setup(b: &mut WgpuBackend, rng: &mut Rng, vocab: usize, c: usize, n_out: usize) -> Result<()> {
    b.upload_weight(
        0,
        "emb.weight",
        &f32_tensor(vec![vocab, c], &rng.vec(vocab * c, -1.0, 1.0)),
    )?;
    b.upload_weight(
        1,
        "w",
        &f32_tensor(vec![n_out, c], &rng.vec(n_out * c, -1.0, 1.0)),
    )
}

fn is_backend(r: &Result<()>) -> bool {
    matches!(r, Err(Error::Backend { .. }))
}

/// The failure kind of a backend error (what the router's Auto fallback looks at).
fn kind(r: &Result<()>) -> Option<BackendErrorKind> {
    r.as_ref().err().and_then(Error::backend_error_kind)
}

/// A contract violation the caller can fix: the kind a server answers with 400/500, not 503.
fn is_invalid(r: &Result<()>) -> bool {
    matches!(
        r,
        Err(Error::Backend {
            kind: BackendErrorKind::InvalidArgument,
            ..
        })
    )
}

#[test]
fn probe_lists_the_adapter_we_open() {
    let adapters = probe();
    for a in &adapters {
        println!("{a:?}");
    }
    let Some((_, b)) = backends(WgpuOptions::default()).into_iter().next() else {
        return;
    };
    let info = b.info();
    assert!(
        adapters.iter().any(|a| a.name == info.device),
        "{} not in probe()",
        info.device
    );
    assert!(adapters
        .iter()
        .all(|a| a.max_storage_buffer_binding_size > 0 && !a.backend.is_empty()));
}

#[test]
fn bad_steps_are_errors() {
    let mut rng = Rng::new(seed());
    for (label, mut b) in backends(WgpuOptions::default()) {
        setup(&mut b, &mut rng, 6, 32, 8).expect("upload");
        let shape = StepShape { n_seq: 2, n_tok: 2 };
        let p = tiny_plan(32, 8, shape);
        // Compiling before states exist is fine; running is not.
        let id = b.compile(&p).expect("compile");
        let mut out = vec![0f32; 4 * 8];
        let r = b.execute(id, &[0, 1, 2, 3], &[0, 1], StepOutput::Logits(&mut out));
        assert!(is_backend(&r), "{label}: run without states: {r:?}");
        b.alloc_states(2, 16).expect("states");
        let r = b.execute(id, &[0, 1, 2, 6], &[0, 1], StepOutput::Logits(&mut out));
        assert!(is_invalid(&r), "{label}: token 6 of 6: {r:?}");
        let r = b.execute(id, &[0, 1, 2, 3], &[0, 2], StepOutput::Logits(&mut out));
        assert!(is_invalid(&r), "{label}: slot 2 of 2: {r:?}");
        let r = b.execute(id, &[0, 1, 2, 3], &[1, 1], StepOutput::Logits(&mut out));
        assert!(is_invalid(&r), "{label}: repeated slot: {r:?}");
        let r = b.execute(id, &[0, 1, 2], &[0, 1], StepOutput::Logits(&mut out));
        assert!(is_invalid(&r), "{label}: 3 tokens for 4 rows: {r:?}");
        let mut short = vec![0f32; 5];
        let r = b.execute(id, &[0, 1, 2, 3], &[0, 1], StepOutput::Logits(&mut short));
        assert!(is_invalid(&r), "{label}: short logits: {r:?}");
        let mut bad = tiny_plan(32, 8, shape);
        bad.buffers[0].width = 31;
        assert!(b.compile(&bad).is_err(), "{label}: width mismatch compiled");
        // And the good step still runs afterwards.
        b.execute(id, &[0, 1, 2, 3], &[1, 0], StepOutput::Logits(&mut out))
            .expect("good step");
        assert!(out.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn limits_are_errors_not_crashes() {
    let mut rng = Rng::new(seed());
    let opts = WgpuOptions {
        max_binding_bytes: Some(1024),
        ..Default::default()
    };
    for (label, mut b) in backends(opts) {
        // A 512-float row (2 KiB) cannot fit a 1 KiB binding.
        let r = b.upload_weight(
            0,
            "emb.weight",
            &f32_tensor(vec![2, 512], &rng.vec(1024, -1.0, 1.0)),
        );
        assert!(is_backend(&r), "{label}: oversized row: {r:?}");
        assert_eq!(
            kind(&r),
            Some(BackendErrorKind::OutOfMemory),
            "{label}: {r:?}"
        );
        // Activations of 64 rows x 32 floats (8 KiB) cannot fit either.
        setup(&mut b, &mut rng, 4, 32, 8).expect("small weights fit");
        b.alloc_states(1, 8).expect("states");
        let r = b
            .compile(&tiny_plan(
                32,
                8,
                StepShape {
                    n_seq: 1,
                    n_tok: 64,
                },
            ))
            .map(|_| ());
        assert!(is_backend(&r), "{label}: oversized activations: {r:?}");
        assert_eq!(
            kind(&r),
            Some(BackendErrorKind::OutOfMemory),
            "{label}: {r:?}"
        );
    }
}

#[test]
fn device_loss_is_an_error() {
    let mut rng = Rng::new(seed());
    for (label, mut b) in backends(WgpuOptions::default()) {
        setup(&mut b, &mut rng, 6, 32, 8).expect("upload");
        b.alloc_states(1, 16).expect("states");
        let id = b
            .compile(&tiny_plan(32, 8, StepShape { n_seq: 1, n_tok: 1 }))
            .expect("compile");
        let mut out = vec![0f32; 8];
        b.execute(id, &[3], &[0], StepOutput::Logits(&mut out))
            .expect("step before loss");
        b.simulate_device_loss();
        let r = b.execute(id, &[3], &[0], StepOutput::Logits(&mut out));
        assert!(is_backend(&r), "{label}: step after loss: {r:?}");
        assert_eq!(
            kind(&r),
            Some(BackendErrorKind::DeviceLost),
            "{label}: {r:?}"
        );
        println!(
            "{label}: {}",
            r.err().map(|e| e.to_string()).unwrap_or_default()
        );
        let r = b.execute(id, &[3], &[0], StepOutput::None);
        assert!(
            is_backend(&r),
            "{label}: step without output after loss: {r:?}"
        );
        let mut st = vec![0f32; 16];
        assert!(
            is_backend(&b.read_state(0, &mut st)),
            "{label}: read_state after loss"
        );
        assert!(
            is_backend(&b.write_state(0, &st)),
            "{label}: write_state after loss"
        );
    }
}

#[test]
fn adapter_choice_by_name_and_index() {
    let adapters = probe();
    if backends(WgpuOptions::default()).is_empty() {
        return;
    }
    let by_name = |name: &str| WgpuOptions {
        adapter: rwkv_wgpu::AdapterChoice::Name(name.into()),
        ..Default::default()
    };
    let r = WgpuBackend::new(by_name("no such adapter 42"));
    assert!(
        matches!(&r, Err(Error::Backend { what, .. }) if what.contains("no wgpu adapter")),
        "{:?}",
        r.err()
    );
    let r = WgpuBackend::new(WgpuOptions {
        adapter: rwkv_wgpu::AdapterChoice::Index(adapters.len()),
        ..Default::default()
    });
    assert!(
        matches!(&r, Err(Error::Backend { .. })),
        "index past the end opened"
    );
    let first = &adapters[0];
    let b = WgpuBackend::new(by_name(&first.name.to_uppercase())).expect("open by name");
    assert_eq!(b.device_info().device, first.name);
}
