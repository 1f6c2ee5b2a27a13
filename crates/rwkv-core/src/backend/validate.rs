//! One check of a plan against the uploaded weights ([`Plan::validate`]) and one of a step's
//! run-time arguments ([`Plan::check_step`]), shared by every backend so that each only checks
//! what is its own (device limits, dtypes it runs).

use std::collections::HashSet;

use super::state::StatePart;
use super::{BufId, Op, Plan, ShiftKind, StepOutput, WeightId};
use crate::error::{BackendErrorKind, Error, Result};
use crate::model::Tensor;
use crate::DType;

/// What a plan needs to know of an uploaded weight: its name, dtype and shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightMeta {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl WeightMeta {
    pub fn of(name: &str, tensor: &Tensor) -> WeightMeta {
        WeightMeta {
            name: name.to_string(),
            dtype: tensor.dtype,
            shape: tensor.shape.clone(),
        }
    }

    /// A 1-D tensor.
    pub fn is_vector(&self) -> bool {
        self.shape.len() == 1
    }

    /// Rows and row length viewed as a matrix.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        let rows = self.shape.iter().rev().skip(1).product();
        (rows, cols)
    }
}

/// What [`Plan::validate`] learned that a step's check needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanFacts {
    /// Token ids must be below this: the smallest embedding table's rows (`usize::MAX` without
    /// an `Embed` op).
    pub vocab: usize,
}

impl Plan {
    /// Checks every op against the buffer declarations, the state layout and the uploaded
    /// `weights` (in [`WeightId`] order; the plan's names must be their first names), so that a backend's `execute` has only run-time
    /// inputs left to check. Errors are `InvalidArgument` backend errors of `backend`.
    pub fn validate(&self, backend: &str, weights: &[WeightMeta]) -> Result<PlanFacts> {
        let fail =
            |what: String| Error::backend_kind(backend, BackendErrorKind::InvalidArgument, what);
        let shape = self.shape;
        if shape.n_seq == 0 || shape.n_tok == 0 {
            return Err(fail(format!("empty step shape {shape:?}")));
        }
        shape
            .n_seq
            .checked_mul(shape.n_tok)
            .ok_or_else(|| fail(format!("step shape {shape:?} overflows")))?;
        // A plan may use a prefix of what was uploaded (tests reuse one backend), never more.
        if self.weights.len() > weights.len() {
            return Err(fail(format!(
                "plan names {} weights, {} were uploaded",
                self.weights.len(),
                weights.len()
            )));
        }
        if let Some((id, (name, w))) = self
            .weights
            .iter()
            .zip(weights)
            .enumerate()
            .find(|(_, (n, w))| **n != w.name)
        {
            return Err(fail(format!(
                "plan weight {id} is '{name}', '{}' was uploaded as {id}",
                w.name
            )));
        }
        let state = &self.state;
        if self
            .ops
            .iter()
            .any(|op| matches!(op, Op::TokenShift { .. } | Op::Wkv7(_)))
        {
            state.check().map_err(fail)?;
        }
        let buf = |b: BufId| {
            self.buffers
                .get(b)
                .ok_or_else(|| fail(format!("buffer id {b} out of range")))
        };
        let weight = |w: WeightId| {
            weights
                .get(w)
                .ok_or_else(|| fail(format!("weight id {w} out of range")))
        };
        let vector = |w: WeightId, len: usize| -> Result<()> {
            let wt = weight(w)?;
            if wt.is_vector() && wt.shape[0] == len {
                Ok(())
            } else {
                Err(fail(format!(
                    "weight '{}' is not a vector of {len} values",
                    wt.name
                )))
            }
        };
        // Buffers that ops write must not be read by the same op (except LayerNorm in place).
        let distinct = |ids: &[BufId], what: &str| -> Result<()> {
            let set: HashSet<_> = ids.iter().collect();
            if set.len() == ids.len() {
                Ok(())
            } else {
                Err(fail(format!(
                    "{what}: a buffer is both read and written, or written twice"
                )))
            }
        };
        let full_rows = |b: BufId, what: &str| -> Result<usize> {
            let d = buf(b)?;
            if d.last_only {
                return Err(fail(format!(
                    "{what}: buffer '{}' must have one row per token",
                    d.name
                )));
            }
            Ok(d.width)
        };
        let state_op = |layer: usize, c: usize, part: StatePart, what: &str| -> Result<()> {
            if layer >= state.n_layer || c != state.width || state.part_offset(part).is_none() {
                return Err(fail(format!(
                    "{what}: layer {layer} of width {c} is not in the plan's state \
                     ({} layers of width {}, parts {:?})",
                    state.n_layer, state.width, state.parts
                )));
            }
            Ok(())
        };

        let mut vocab = usize::MAX;
        for op in &self.ops {
            match op {
                Op::Embed { table, out } => {
                    let t = weight(*table)?;
                    let c = full_rows(*out, "Embed")?;
                    let (rows, cols) = t.rows_cols();
                    if t.is_vector() || cols != c || rows == 0 {
                        return Err(fail(format!(
                            "Embed: table '{}' is not [vocab, {c}]",
                            t.name
                        )));
                    }
                    vocab = vocab.min(rows);
                }
                Op::LayerNorm { x, w, b, out, .. } => {
                    let (xd, od) = (buf(*x)?, buf(*out)?);
                    if xd.width != od.width || self.rows_of(*x) != self.rows_of(*out) {
                        return Err(fail(format!(
                            "LayerNorm: '{}' and '{}' differ in shape",
                            xd.name, od.name
                        )));
                    }
                    vector(*w, xd.width)?;
                    vector(*b, xd.width)?;
                }
                Op::TokenShift {
                    x,
                    layer,
                    kind,
                    mixes,
                } => {
                    let c = full_rows(*x, "TokenShift")?;
                    let part = match kind {
                        ShiftKind::Att => StatePart::AttShift,
                        ShiftKind::Ffn => StatePart::FfnShift,
                    };
                    state_op(*layer, c, part, "TokenShift")?;
                    let mut ids = vec![*x];
                    for &(mix, out) in mixes {
                        vector(mix, c)?;
                        if full_rows(out, "TokenShift")? != c {
                            return Err(fail("TokenShift: output width differs from input".into()));
                        }
                        ids.push(out);
                    }
                    distinct(&ids, "TokenShift")?;
                }
                Op::MatMul { jobs } => {
                    for job in jobs {
                        let w = weight(job.weight)?;
                        let (xd, od) = (buf(job.x)?, buf(job.out)?);
                        let (rows, cols) = w.rows_cols();
                        if w.is_vector() || cols != xd.width || rows != od.width {
                            return Err(fail(format!(
                                "MatMul: weight '{}' [{rows}, {cols}] does not map '{}' ({}) to '{}' ({})",
                                w.name, xd.name, xd.width, od.name, od.width
                            )));
                        }
                        if self.rows_of(job.x) != self.rows_of(job.out) {
                            return Err(fail(format!(
                                "MatMul: '{}' and '{}' differ in rows",
                                xd.name, od.name
                            )));
                        }
                        if let Some(bias) = job.bias {
                            vector(bias, od.width)?;
                        }
                        distinct(&[job.x, job.out], "MatMul")?;
                    }
                }
                Op::Wkv7(a) => {
                    let c = full_rows(a.r, "Wkv7")?;
                    state_op(a.layer, c, StatePart::WkvMatrix, "Wkv7")?;
                    let ids = a.buffers();
                    for &b in &ids {
                        if full_rows(b, "Wkv7")? != c {
                            return Err(fail("Wkv7: buffers differ in width".into()));
                        }
                    }
                    distinct(&ids, "Wkv7")?;
                    for v in a.vectors() {
                        vector(v, c)?;
                    }
                }
                Op::LastRows { x, out } => {
                    let (xd, od) = (buf(*x)?, buf(*out)?);
                    if xd.last_only || !od.last_only || xd.width != od.width || x == out {
                        return Err(fail(format!(
                            "LastRows: '{}' → '{}' is not per-token → per-sequence",
                            xd.name, od.name
                        )));
                    }
                }
            }
        }
        buf(self.logits)?;
        // Every row is walked with chunks of `width` values: an empty row has no meaning.
        if let Some(empty) = self.buffers.iter().find(|b| b.width == 0) {
            return Err(fail(format!("buffer '{}' has width 0", empty.name)));
        }
        for (b, decl) in self.buffers.iter().enumerate() {
            self.rows_of(b)
                .checked_mul(decl.width)
                .and_then(|n| n.checked_mul(4))
                .ok_or_else(|| fail(format!("buffer '{}' size overflows", decl.name)))?;
        }
        Ok(PlanFacts { vocab })
    }

    /// Checks one step's run-time arguments: `tokens` has `rows()` ids below `facts.vocab`,
    /// `slots` names `n_seq` distinct slots below `n_slots`, and `out` has the logits' size.
    /// Errors are `InvalidArgument` backend errors of `backend`.
    pub fn check_step(
        &self,
        backend: &str,
        facts: &PlanFacts,
        tokens: &[u32],
        slots: &[usize],
        n_slots: usize,
        out: &StepOutput<'_>,
    ) -> Result<()> {
        let fail =
            |what: String| Error::backend_kind(backend, BackendErrorKind::InvalidArgument, what);
        let shape = self.shape;
        if tokens.len() != shape.rows() {
            return Err(fail(format!(
                "{} tokens for a step of {} rows",
                tokens.len(),
                shape.rows()
            )));
        }
        if slots.len() != shape.n_seq {
            return Err(fail(format!(
                "{} slots for a step of {} sequences",
                slots.len(),
                shape.n_seq
            )));
        }
        let mut seen = HashSet::new();
        for &slot in slots {
            if slot >= n_slots {
                return Err(fail(format!("slot {slot} out of range (0..{n_slots})")));
            }
            if !seen.insert(slot) {
                return Err(fail(format!("slot {slot} named twice in one step")));
            }
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= facts.vocab) {
            return Err(fail(format!(
                "token id {bad} out of range (vocabulary {})",
                facts.vocab
            )));
        }
        let rows = self.rows_of(self.logits);
        let width = self.buffers[self.logits].width;
        match out {
            StepOutput::Logits(values) if values.len() != rows * width => Err(fail(format!(
                "logits output holds {}, the step makes {}",
                values.len(),
                rows * width
            ))),
            StepOutput::Argmax(ids) if ids.len() != rows => Err(fail(format!(
                "argmax output holds {}, the step makes {rows}",
                ids.len()
            ))),
            _ => Ok(()),
        }
    }
}
