//! Batching, sequence mode, last-only logits, state save/restore and argmax agree with plain
//! one-token-at-a-time decoding.

mod common;

use common::{argmax, max_abs_diff, Rng, Runner};
use rwkv_core::backend::{Backend, StepOutput};
use rwkv_core::model::{Tensor, TensorBytes};
use rwkv_core::synth::{synth_model, SynthShape};
use rwkv_core::{DType, Model};
use rwkv_cpu::CpuBackend;

/// Tight but not bit-exact: a backend may reorder sums between shapes.
const TOL: f32 = 1e-5;

fn model() -> Model {
    synth_model(SynthShape::Tiny, DType::F32, 31).unwrap()
}

/// Logits after each token of each sequence, every sequence run alone in slot 0.
fn alone(runner: &mut Runner, seqs: &[Vec<u32>]) -> Vec<Vec<f32>> {
    seqs.iter()
        .map(|seq| {
            runner.reset(0).unwrap();
            runner.one_by_one(seq, 0).unwrap()
        })
        .collect()
}

#[test]
fn three_sequences_in_one_step_equal_each_run_alone() {
    let model = model();
    let vocab = model.desc.vocab_size;
    let mut rng = Rng(1);
    let seqs: Vec<Vec<u32>> = (0..3).map(|_| rng.tokens(5, vocab)).collect();
    let mut runner = Runner::new(&model, 4).unwrap();
    let want = alone(&mut runner, &seqs);

    // Slots in a scrambled order, and slot 3 left alone (it must stay untouched).
    let slots = [2, 0, 3];
    for &s in &slots {
        runner.reset(s).unwrap();
    }
    runner.reset(1).unwrap();
    for t in 0..5 {
        let tokens: Vec<u32> = seqs.iter().map(|s| s[t]).collect();
        let got = runner.step(1, false, &tokens, &slots).unwrap();
        for (s, row) in got.chunks_exact(vocab).enumerate() {
            let diff = max_abs_diff(row, &want[s][t * vocab..(t + 1) * vocab]);
            assert!(diff <= TOL, "sequence {s} token {t}: {diff}");
        }
    }
    let mut untouched = vec![1f32; model.desc.state_len()];
    runner.backend.read_state(1, &mut untouched).unwrap();
    assert!(
        untouched.iter().all(|&v| v == 0.0),
        "slot 1 was not in the step but changed"
    );
}

#[test]
fn sequence_mode_equals_single_token_steps() {
    let model = model();
    let vocab = model.desc.vocab_size;
    let mut rng = Rng(2);
    let seqs: Vec<Vec<u32>> = (0..3).map(|_| rng.tokens(5, vocab)).collect();
    let mut runner = Runner::new(&model, 3).unwrap();
    let want = alone(&mut runner, &seqs);
    let mut single_state = vec![0f32; model.desc.state_len()];
    runner.backend.read_state(0, &mut single_state).unwrap();

    // One sequence of five tokens, all logits.
    runner.reset(0).unwrap();
    let got = runner.step(5, true, &seqs[2], &[0]).unwrap();
    let diff = max_abs_diff(&got, &want[2]);
    assert!(diff <= TOL, "n_tok 5: {diff}");
    // Its final state is the state after five single steps.
    let mut seq_state = vec![0f32; model.desc.state_len()];
    runner.backend.read_state(0, &mut seq_state).unwrap();
    let diff = max_abs_diff(&seq_state, &single_state);
    assert!(diff <= TOL, "state after n_tok 5: {diff}");

    // Three sequences of five tokens in one step, all logits (sequence-major rows).
    for s in 0..3 {
        runner.reset(s).unwrap();
    }
    let tokens: Vec<u32> = seqs.concat();
    let got = runner.step(5, true, &tokens, &[1, 2, 0]).unwrap();
    let diff = max_abs_diff(&got, &want.concat());
    assert!(diff <= TOL, "3 × 5 all logits: {diff}");

    // Split into 2 + 3 tokens: the state carries over between steps.
    runner.reset(0).unwrap();
    let first = runner.step(2, true, &seqs[1][..2], &[0]).unwrap();
    let rest = runner.step(3, true, &seqs[1][2..], &[0]).unwrap();
    let diff = max_abs_diff(&[first, rest].concat(), &want[1]);
    assert!(diff <= TOL, "2 + 3 tokens: {diff}");
}

#[test]
fn last_only_logits_are_the_last_rows_of_all_logits() {
    let model = model();
    let vocab = model.desc.vocab_size;
    let tokens = Rng(3).tokens(12, vocab);
    let mut runner = Runner::new(&model, 3).unwrap();
    let all = runner.step(4, true, &tokens, &[0, 1, 2]).unwrap();
    for s in 0..3 {
        runner.reset(s).unwrap();
    }
    let last = runner.step(4, false, &tokens, &[0, 1, 2]).unwrap();
    for s in 0..3 {
        let row = s * 4 + 3;
        assert_eq!(
            &last[s * vocab..(s + 1) * vocab],
            &all[row * vocab..(row + 1) * vocab],
            "sequence {s}"
        );
    }
}

#[test]
fn state_read_write_restores_logits() {
    let model = model();
    let vocab = model.desc.vocab_size;
    let mut rng = Rng(4);
    let prompt = rng.tokens(6, vocab);
    let next = rng.tokens(3, vocab);
    let mut runner = Runner::new(&model, 2).unwrap();
    runner.step(6, false, &prompt, &[0]).unwrap();
    let mut saved = vec![0f32; model.desc.state_len()];
    runner.backend.read_state(0, &mut saved).unwrap();
    assert!(saved.iter().any(|&v| v != 0.0));

    let first = runner.one_by_one(&next, 0).unwrap();
    // Restore into the same slot and into another: both continue identically.
    runner.backend.write_state(0, &saved).unwrap();
    let again = runner.one_by_one(&next, 0).unwrap();
    assert_eq!(first, again);
    runner.backend.write_state(1, &saved).unwrap();
    let moved = runner.one_by_one(&next, 1).unwrap();
    assert_eq!(first, moved);
    // A fresh state gives different logits (the state matters).
    runner.reset(1).unwrap();
    let fresh = runner.one_by_one(&next, 1).unwrap();
    assert!(max_abs_diff(&first, &fresh) > 1e-3);
}

#[test]
fn argmax_output_is_argmax_of_logits() {
    let model = model();
    let vocab = model.desc.vocab_size;
    let tokens = Rng(5).tokens(6, vocab);
    let mut runner = Runner::new(&model, 3).unwrap();
    let logits = runner.step(2, true, &tokens, &[0, 1, 2]).unwrap();
    for s in 0..3 {
        runner.reset(s).unwrap();
    }
    let plan = runner.plan(3, 2, true).unwrap();
    let mut ids = vec![u32::MAX; 6];
    runner
        .backend
        .execute(plan, &tokens, &[0, 1, 2], StepOutput::Argmax(&mut ids))
        .unwrap();
    let want: Vec<u32> = logits.chunks_exact(vocab).map(argmax).collect();
    assert_eq!(ids, want);
}

#[test]
fn argmax_ties_go_to_the_lowest_index() {
    // A head whose rows 10, 20 and 30 are the same vector and all other rows are zero: logits
    // 10, 20, 30 tie, and when they are negative every other logit (0.0) ties at the top.
    let mut model = model();
    let (vocab, c) = (model.desc.vocab_size, model.desc.n_embd);
    let mut rng = Rng(6);
    let direction: Vec<f32> = (0..c)
        .map(|_| rng.below(1000) as f32 / 500.0 - 1.0)
        .collect();
    let mut head = vec![0f32; vocab * c];
    for row in [10, 20, 30] {
        head[row * c..(row + 1) * c].copy_from_slice(&direction);
    }
    let bytes = head.iter().flat_map(|v| v.to_le_bytes()).collect();
    model.tensors.insert(
        "head.weight".into(),
        Tensor::new(DType::F32, vec![vocab, c], TensorBytes::owned(bytes)).unwrap(),
    );
    let mut runner = Runner::new(&model, 1).unwrap();
    let plan = runner.plan(1, 1, false).unwrap();
    let (mut positive, mut negative) = (0, 0);
    for t in Rng(7).tokens(16, vocab) {
        let mut logits = vec![0f32; vocab];
        runner
            .backend
            .write_state(0, &vec![0f32; model.desc.state_len()])
            .unwrap();
        runner
            .backend
            .execute(plan, &[t], &[0], StepOutput::Logits(&mut logits))
            .unwrap();
        assert_eq!(logits[10], logits[30]);
        let mut id = [u32::MAX];
        runner
            .backend
            .write_state(0, &vec![0f32; model.desc.state_len()])
            .unwrap();
        runner
            .backend
            .execute(plan, &[t], &[0], StepOutput::Argmax(&mut id))
            .unwrap();
        if logits[10] > 0.0 {
            assert_eq!(id[0], 10);
            positive += 1;
        } else {
            assert_eq!(id[0], 0);
            negative += 1;
        }
    }
    println!("ties: {positive} tokens with a positive tied logit, {negative} negative");
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let model = model();
    let tokens = Rng(8).tokens(8, model.desc.vocab_size);
    let mut one = Runner::with_backend(CpuBackend::with_threads(1), &model, 2).unwrap();
    let mut many = Runner::with_backend(CpuBackend::with_threads(5), &model, 2).unwrap();
    assert_eq!(
        one.step(4, true, &tokens, &[0, 1]).unwrap(),
        many.step(4, true, &tokens, &[1, 0]).unwrap()
    );
}
