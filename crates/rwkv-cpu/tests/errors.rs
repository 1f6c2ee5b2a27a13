//! Bad calls return `Error::Backend` instead of panicking, and leave the backend usable.

mod common;

use common::{Rng, Runner};
use rwkv_core::backend::{Backend, PlanId, StepOutput, StepShape};
use rwkv_core::model::v7::PlanBuilder;
use rwkv_core::synth::{synth_model, SynthShape};
use rwkv_core::{DType, Error, Model};
use rwkv_cpu::CpuBackend;

fn model() -> Model {
    synth_model(SynthShape::Tiny, DType::F32, 11).unwrap()
}

fn is_backend_error<T: std::fmt::Debug>(r: rwkv_core::Result<T>, what: &str) {
    match r {
        Err(Error::Backend {
            backend, what: msg, ..
        }) => {
            assert_eq!(backend, "cpu");
            println!("{what}: {msg}");
        }
        other => panic!("{what}: expected a backend error, got {other:?}"),
    }
}

#[test]
fn bad_execute_arguments_are_errors() {
    let model = model();
    let vocab = model.desc.vocab_size as u32;
    let mut runner = Runner::new(&model, 3).unwrap();
    let plan = runner.plan(2, 1, false).unwrap();
    let mut logits = vec![0f32; 2 * vocab as usize];
    let b = &mut runner.backend;
    let tokens = Rng(1).tokens(2, vocab as usize);
    is_backend_error(
        b.execute(plan, &tokens, &[0, 3], StepOutput::Logits(&mut logits)),
        "slot out of range",
    );
    is_backend_error(
        b.execute(plan, &tokens, &[1, 1], StepOutput::Logits(&mut logits)),
        "duplicate slots",
    );
    is_backend_error(
        b.execute(plan, &tokens, &[0], StepOutput::Logits(&mut logits)),
        "too few slots",
    );
    is_backend_error(
        b.execute(plan, &tokens[..1], &[0, 1], StepOutput::Logits(&mut logits)),
        "too few tokens",
    );
    is_backend_error(
        b.execute(plan, &[tokens[0], vocab], &[0, 1], StepOutput::None),
        "token id = vocab",
    );
    is_backend_error(
        b.execute(plan, &[u32::MAX, 0], &[0, 1], StepOutput::None),
        "token id u32::MAX",
    );
    is_backend_error(
        b.execute(PlanId(99), &tokens, &[0, 1], StepOutput::None),
        "unknown plan",
    );
    is_backend_error(
        b.execute(plan, &tokens, &[0, 1], StepOutput::Logits(&mut logits[1..])),
        "short logits",
    );
    is_backend_error(
        b.execute(plan, &tokens, &[0, 1], StepOutput::Argmax(&mut [0u32; 3])),
        "long argmax",
    );

    // None of the failed calls touched a state; the backend still works.
    let mut state = vec![1f32; model.desc.state_len()];
    for slot in 0..3 {
        b.read_state(slot, &mut state).unwrap();
        assert!(
            state.iter().all(|&v| v == 0.0),
            "slot {slot} changed by a failed call"
        );
    }
    b.execute(plan, &tokens, &[0, 1], StepOutput::Logits(&mut logits))
        .unwrap();
    assert!(logits.iter().all(|v| v.is_finite()));
}

#[test]
fn bad_state_access_is_an_error() {
    let model = model();
    let mut runner = Runner::new(&model, 2).unwrap();
    let len = model.desc.state_len();
    let b = &mut runner.backend;
    is_backend_error(
        b.read_state(2, &mut vec![0f32; len]),
        "read slot out of range",
    );
    is_backend_error(
        b.read_state(0, &mut vec![0f32; len - 1]),
        "read short buffer",
    );
    is_backend_error(
        b.write_state(5, &vec![0f32; len]),
        "write slot out of range",
    );
    is_backend_error(b.write_state(1, &vec![0f32; len + 1]), "write long buffer");
}

#[test]
fn bad_uploads_and_plans_are_errors() {
    let model = model();
    let builder = PlanBuilder::new(&model.desc);
    let names = builder.weights();
    let plan = builder.build(StepShape { n_seq: 1, n_tok: 1 }, false);

    let mut b = CpuBackend::with_threads(2);
    let t0 = model.tensor(&names[0]).unwrap();
    is_backend_error(
        b.upload_weight(1, &names[1], model.tensor(&names[1]).unwrap()),
        "upload out of order",
    );
    b.upload_weight(0, &names[0], t0).unwrap();
    is_backend_error(b.compile(&plan), "compile before every weight is uploaded");

    // A tensor whose bytes disagree with its shape.
    let mut bad = model.tensor(&names[1]).unwrap().clone();
    bad.shape = vec![bad.shape[0] + 1];
    is_backend_error(b.upload_weight(1, &names[1], &bad), "shape/bytes mismatch");

    // Weights uploaded in a different order than the plan names them.
    let mut swapped = CpuBackend::with_threads(1);
    for (id, name) in names.iter().enumerate() {
        let other = if id == 1 {
            &names[2]
        } else if id == 2 {
            &names[1]
        } else {
            name
        };
        swapped
            .upload_weight(id, other, model.tensor(other).unwrap())
            .unwrap();
    }
    is_backend_error(swapped.compile(&plan), "weights in another order");

    // A plan whose MatMul uses a weight of the wrong shape.
    let mut full = CpuBackend::with_threads(1);
    for (id, name) in names.iter().enumerate() {
        full.upload_weight(id, name, model.tensor(name).unwrap())
            .unwrap();
    }
    let mut broken = plan.clone();
    for op in broken.ops.iter_mut() {
        if let rwkv_core::backend::Op::MatMul { jobs } = op {
            jobs[0].weight = 0; // emb.weight: [vocab, C], not what any job maps
            break;
        }
    }
    is_backend_error(full.compile(&broken), "matmul with a mismatched weight");
    let mut empty = plan.clone();
    empty.buffers[plan.logits].width = 0;
    is_backend_error(full.compile(&empty), "zero-width buffer");

    // A weight with a zero dimension.
    let mut fresh = CpuBackend::with_threads(1);
    let zero = rwkv_core::model::Tensor::from_f32(vec![3, 0], &[]).unwrap();
    is_backend_error(fresh.upload_weight(0, &names[0], &zero), "zero-size weight");

    // States shorter than the plan's layout (longer ones are allowed: the tail is untouched).
    let id = full.compile(&plan).unwrap();
    full.alloc_states(1, model.desc.state_len() - 1).unwrap();
    is_backend_error(
        full.execute(id, &[1], &[0], StepOutput::None),
        "state length mismatch",
    );
    // No states at all.
    full.alloc_states(0, model.desc.state_len()).unwrap();
    is_backend_error(full.execute(id, &[1], &[0], StepOutput::None), "no slots");
}
