//! The official RWKV-7 checkpoint layout (`.pth`, safetensors) and rwkv.cpp's variant of it,
//! mapped to and from the canonical [`Model`] (docs/ARCHITECTURE.md, `model::v7`).
//!
//! Official (torch shapes): `att.x_r..x_g`, `w0`, `a0`, `v0`, `k_k`, `k_a`, `ffn.x_k` are (1,1,C);
//! `r_k` is (H,N); LoRA `w1` is (C,D) and `w2` (D,C), used as `x·w1`; block 0 carries unused
//! `v0/v1/v2`. rwkv.cpp: the six mixes fused as `att.x_rwkvag` (6,1,C), LoRA already `[out,in]`,
//! block 0 without `v0/v1/v2`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::{make_tensor, plain_elem_bytes, sub_bytes, transpose_bytes};
use crate::model::v7::{self, ATT_MIXES};
use crate::model::{LoraRanks, Model, ModelDesc, RwkvVersion, Tensor, TensorBytes};

/// A tensor as a file stores it: the file's name, torch-order shape (outermost first).
#[derive(Clone, Debug)]
pub(crate) struct RawTensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: TensorBytes,
}

/// Which variant of the official names a file uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// RWKV-LM checkpoints (`.pth`) and their safetensors conversions.
    Official,
    /// rwkv.cpp `.bin`: fused mixes, LoRA transposed to `[out,in]`.
    RwkvCpp,
}

/// Per-block tensors stored with singleton dimensions that the canonical model squeezes to `[C]`.
const VECTORS: [&str; 13] = [
    "att.x_r", "att.x_w", "att.x_k", "att.x_v", "att.x_a", "att.x_g", "att.w0", "att.a0", "att.v0",
    "att.k_k", "att.k_a", "att.r_k", "ffn.x_k",
];

/// LoRA down-projections (official (C,D)) and up-projections (official (D,C)).
const LORA: [&str; 8] = [
    "att.w1", "att.a1", "att.v1", "att.g1", "att.w2", "att.a2", "att.v2", "att.g2",
];

/// The architecture generation from tensor names (rwkv.cpp's rule, which holds for
/// official checkpoints too). None when nothing looks like RWKV.
pub(crate) fn detect_version<'a>(
    names: impl Iterator<Item = &'a str> + Clone,
) -> Option<RwkvVersion> {
    let any = |pred: &dyn Fn(&str) -> bool| names.clone().any(pred);
    if any(&|n| n.ends_with(".att.r_k")) {
        Some(RwkvVersion::V7)
    } else if any(&|n| n.contains(".att.time_maa_x")) {
        Some(RwkvVersion::V6)
    } else if any(&|n| n.contains(".att.ln_x.")) {
        if any(&|n| n.contains(".att.gate.")) {
            Some(RwkvVersion::V5_2)
        } else {
            Some(RwkvVersion::V5_1)
        }
    } else if any(&|n| n.contains(".att.time_decay") || n.contains(".att.time_mix_k")) {
        Some(RwkvVersion::V4)
    } else {
        None
    }
}

/// The error for a recognised but unsupported generation.
pub(crate) fn unsupported_version(path: &Path, v: RwkvVersion) -> Error {
    Error::model(
        path,
        format!("RWKV {} is not supported yet (only v7)", v.name()),
    )
}

/// Splits "blocks.12.att.w1" into (12, "att.w1").
pub(crate) fn split_block(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blocks.")?;
    let dot = rest.find('.')?;
    let digits = &rest[..dot];
    // More digits than any model has layers would only overflow; such names are not blocks.
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &rest[dot + 1..]))
}

/// The block count implied by `blocks.N.*` names, checked against the number of tensors so a
/// single hostile name cannot make us plan millions of layers.
pub(crate) fn count_layers<'a>(
    path: &Path,
    names: impl Iterator<Item = &'a str>,
    n_tensors: usize,
) -> Result<usize> {
    let max = names.filter_map(|n| split_block(n).map(|(i, _)| i)).max();
    let Some(max) = max else {
        return Err(Error::model(
            path,
            "no 'blocks.N.*' tensors: not an RWKV model",
        ));
    };
    if max >= n_tensors {
        return Err(Error::model(
            path,
            format!("tensor names mention block {max}, but the file has only {n_tensors} tensors"),
        ));
    }
    Ok(max + 1)
}

fn get<'a>(path: &Path, t: &'a BTreeMap<String, RawTensor>, name: &str) -> Result<&'a RawTensor> {
    t.get(name)
        .ok_or_else(|| Error::model(path, format!("missing tensor '{name}'")))
}

fn dims2(path: &Path, t: &RawTensor) -> Result<(usize, usize)> {
    match t.shape.as_slice() {
        &[a, b] => Ok((a, b)),
        s => Err(Error::model(
            path,
            format!("tensor '{}' has shape {s:?}, expected a matrix", t.name),
        )),
    }
}

/// The rank of LoRA `stem1` (e.g. "att.w1") from its shape in `layout`, with its C checked.
fn lora_rank(path: &Path, t: &RawTensor, layout: Layout, c: usize) -> Result<usize> {
    let (a, b) = dims2(path, t)?;
    let (rank, cc) = match layout {
        Layout::Official => (b, a),
        Layout::RwkvCpp => (a, b),
    };
    if cc != c {
        return Err(Error::model(
            path,
            format!(
                "tensor '{}' has shape {:?}, which does not fit n_embd {c}",
                t.name, t.shape
            ),
        ));
    }
    Ok(rank)
}

/// Shapes of the model from its tensors: vocab and C from `emb.weight`, N from `r_k`, F from
/// `ffn.key.weight`, LoRA ranks from block 0 (value rank from block 1).
fn infer_desc(path: &Path, t: &BTreeMap<String, RawTensor>, layout: Layout) -> Result<ModelDesc> {
    let n_layer = count_layers(path, t.keys().map(|s| s.as_str()), t.len())?;
    let (vocab_size, n_embd) = dims2(path, get(path, t, "emb.weight")?)?;
    let r_k = get(path, t, "blocks.0.att.r_k")?;
    let head_size = match r_k.shape.as_slice() {
        // (H, N), rwkv.cpp dims [N, H] read back the same way.
        [.., h, n] if h.checked_mul(*n) == Some(n_embd) => *n,
        // Already flattened: released models all use N = 64.
        [n] if *n == n_embd && n_embd % 64 == 0 => 64,
        s => {
            return Err(Error::model(
                path,
                format!("tensor 'blocks.0.att.r_k' has shape {s:?}, expected (heads, head size) for n_embd {n_embd}"),
            ))
        }
    };
    let ffn_size = dims2(path, get(path, t, "blocks.0.ffn.key.weight")?)?.0;
    let rank = |name: &str| lora_rank(path, get(path, t, name)?, layout, n_embd);
    let (w, a, g) = (
        rank("blocks.0.att.w1")?,
        rank("blocks.0.att.a1")?,
        rank("blocks.0.att.g1")?,
    );
    // Block 0's value LoRA is unused (and absent in rwkv.cpp files): read the rank from block 1.
    let v = if t.contains_key("blocks.1.att.v1") {
        rank("blocks.1.att.v1")?
    } else if t.contains_key("blocks.0.att.v1") {
        rank("blocks.0.att.v1")?
    } else {
        a
    };
    Ok(ModelDesc {
        version: RwkvVersion::V7,
        n_layer,
        n_embd,
        head_size,
        vocab_size,
        ffn_size,
        lora: LoraRanks { w, a, v, g },
    })
}

/// The number of values of `shape`, checked: a shape with a zero dimension holds no bytes, so
/// its other dimensions can be anything a file says and their product may overflow.
pub(crate) fn checked_numel(path: &Path, name: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            Error::format(
                path,
                format!("tensor '{name}' shape {shape:?} is too large"),
            )
        })
}

/// Reshapes a stored vector ((1,1,C), (H,N), (C,1,1) ...) to `[numel]`.
fn squeeze(path: &Path, raw: RawTensor, name: &str) -> Result<Tensor> {
    let n = checked_numel(path, name, &raw.shape)?;
    make_tensor(path, name, raw.dtype, vec![n], raw.data)
}

/// Transposes a 2-D plain-float tensor.
pub(crate) fn transpose(path: &Path, name: &str, t: &Tensor) -> Result<Tensor> {
    let (rows, cols) = match t.shape.as_slice() {
        &[r, c] => (r, c),
        s => {
            return Err(Error::model(
                path,
                format!("tensor '{name}' has shape {s:?}, expected a matrix"),
            ))
        }
    };
    let elem = plain_elem_bytes(t.dtype).ok_or_else(|| {
        Error::model(
            path,
            format!(
                "tensor '{name}' is {}; only f32/f16/bf16 LoRA matrices can be transposed",
                t.dtype
            ),
        )
    })?;
    let bytes = transpose_bytes(&t.data.read()?, rows, cols, elem);
    make_tensor(
        path,
        name,
        t.dtype,
        vec![cols, rows],
        TensorBytes::owned(bytes),
    )
}

/// Builds the canonical model from a file's official-layout tensors (RWKV-7 only; other
/// generations are recognised and refused).
pub(crate) fn model_from_official(
    path: &Path,
    raws: Vec<RawTensor>,
    layout: Layout,
    format: &'static str,
) -> Result<Model> {
    let mut by_name: BTreeMap<String, RawTensor> = BTreeMap::new();
    for raw in raws {
        if by_name.contains_key(&raw.name) {
            return Err(Error::format(
                path,
                format!("tensor '{}' appears twice", raw.name),
            ));
        }
        by_name.insert(raw.name.clone(), raw);
    }
    match detect_version(by_name.keys().map(|s| s.as_str())) {
        Some(RwkvVersion::V7) => {}
        Some(v) => return Err(unsupported_version(path, v)),
        None => {
            return Err(Error::model(
                path,
                "no RWKV tensors found (expected emb.weight, blocks.N.att.*)",
            ))
        }
    }
    let desc = infer_desc(path, &by_name, layout)?;
    let c = desc.n_embd;
    let mut tensors = BTreeMap::new();
    for (name, raw) in by_name {
        let Some((block, rest)) = split_block(&name) else {
            let t = make_tensor(path, &name, raw.dtype, raw.shape, raw.data)?;
            tensors.insert(name, t);
            continue;
        };
        if block == 0 && matches!(rest, "att.v0" | "att.v1" | "att.v2") {
            continue; // present in official checkpoints, unused by the network
        }
        if layout == Layout::RwkvCpp && rest == "att.x_rwkvag" {
            split_fused_mixes(path, &name, block, c, raw, &mut tensors)?;
            continue;
        }
        let t = if VECTORS.contains(&rest) {
            squeeze(path, raw, &name)?
        } else if LORA.contains(&rest) && layout == Layout::Official {
            transpose(
                path,
                &name,
                &make_tensor(path, &name, raw.dtype, raw.shape, raw.data)?,
            )?
        } else {
            make_tensor(path, &name, raw.dtype, raw.shape, raw.data)?
        };
        tensors.insert(name, t);
    }
    Ok(Model {
        desc,
        tensors,
        vocab: None,
        source: path.to_path_buf(),
        format,
    })
}

/// Splits a fused (6, …, C) mix tensor into `att.x_r` … `att.x_g` (order r, w, k, v, a, g).
pub(crate) fn split_fused_mixes(
    path: &Path,
    name: &str,
    block: usize,
    c: usize,
    raw: RawTensor,
    out: &mut BTreeMap<String, Tensor>,
) -> Result<()> {
    let n = checked_numel(path, name, &raw.shape)?;
    let part = raw.dtype.tensor_bytes(&[c]);
    let (true, Some(part)) = (
        c.checked_mul(6) == Some(n) && raw.shape.last() == Some(&c),
        part,
    ) else {
        return Err(Error::model(
            path,
            format!(
                "tensor '{name}' has shape {:?}, expected 6 rows of n_embd {c}",
                raw.shape
            ),
        ));
    };
    for (i, mix) in ATT_MIXES.iter().enumerate() {
        let canon = format!("blocks.{block}.att.{mix}");
        let t = make_tensor(
            path,
            &canon,
            raw.dtype,
            vec![c],
            sub_bytes(&raw.data, i * part, part),
        )?;
        out.insert(canon, t);
    }
    Ok(())
}

/// The model's tensors under official names and torch shapes, in canonical order, for the
/// safetensors and `.pth` writers. Only f32/f16/bf16 tensors can be written this way.
pub(crate) fn official_tensors(
    model: &Model,
    path: &Path,
    format: &str,
) -> Result<Vec<(String, Tensor)>> {
    let d = &model.desc;
    let mut out = Vec::new();
    for (name, _) in v7::canonical_tensors(d) {
        let t = model.tensor(&name)?;
        if plain_elem_bytes(t.dtype).is_none() {
            return Err(Error::invalid(format!(
                "{}: tensor '{name}' is {}; {format} holds only f32/f16/bf16 (write gguf for quantized models)",
                path.display(),
                t.dtype
            )));
        }
        let rest = split_block(&name).map(|(_, r)| r).unwrap_or("");
        let t = if rest == "att.r_k" {
            reshape(t, vec![d.n_head(), d.head_size])
        } else if VECTORS.contains(&rest) {
            let n = t.n_elements();
            reshape(t, vec![1, 1, n])
        } else if LORA.contains(&rest) {
            transpose(path, &name, t)?
        } else {
            t.clone()
        };
        out.push((name, t));
    }
    Ok(out)
}

fn reshape(t: &Tensor, shape: Vec<usize>) -> Tensor {
    Tensor {
        dtype: t.dtype,
        shape,
        data: t.data.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_names_split() {
        assert_eq!(split_block("blocks.12.att.w1"), Some((12, "att.w1")));
        assert_eq!(split_block("blocks.x.att"), None);
        assert_eq!(split_block("blocks.99999999999999999999.att"), None);
        assert_eq!(split_block("emb.weight"), None);
    }

    #[test]
    fn versions_from_names() {
        let v = |n: &[&str]| detect_version(n.iter().copied());
        assert_eq!(v(&["blocks.0.att.r_k"]), Some(RwkvVersion::V7));
        assert_eq!(v(&["blocks.0.att.time_maa_x"]), Some(RwkvVersion::V6));
        assert_eq!(
            v(&["blocks.0.att.ln_x.weight", "blocks.0.att.gate.weight"]),
            Some(RwkvVersion::V5_2)
        );
        assert_eq!(v(&["blocks.0.att.ln_x.weight"]), Some(RwkvVersion::V5_1));
        assert_eq!(v(&["blocks.0.att.time_decay"]), Some(RwkvVersion::V4));
        assert_eq!(v(&["model.embed_tokens.weight"]), None);
    }
}
