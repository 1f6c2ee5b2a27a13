//! llama.cpp's `rwkv7` tensor names and metadata mapped onto the canonical [`Model`] (and the
//! tables the writer uses to go back).

use std::collections::BTreeMap;

use super::container::{GgufArray, GgufFile, GgufValue};
use crate::error::{Error, Result};
use crate::formats::canonical::{checked_numel, split_fused_mixes, RawTensor};
use crate::formats::make_tensor;
use crate::model::{LoraRanks, Model, ModelDesc, RwkvVersion, Tensor};
use crate::tokenizer::Vocab;

/// Per-block names: (llama.cpp suffix after "blk.N.", canonical suffix after "blocks.N.").
pub(super) const BLOCK_NAMES: [(&str, &str); 28] = [
    ("attn_norm.weight", "ln1.weight"),
    ("attn_norm.bias", "ln1.bias"),
    ("attn_norm_2.weight", "ln2.weight"),
    ("attn_norm_2.bias", "ln2.bias"),
    ("time_mix_w0.weight", "att.w0"),
    ("time_mix_w1.weight", "att.w1"),
    ("time_mix_w2.weight", "att.w2"),
    ("time_mix_a0.weight", "att.a0"),
    ("time_mix_a1.weight", "att.a1"),
    ("time_mix_a2.weight", "att.a2"),
    ("time_mix_v0.weight", "att.v0"),
    ("time_mix_v1.weight", "att.v1"),
    ("time_mix_v2.weight", "att.v2"),
    ("time_mix_g1.weight", "att.g1"),
    ("time_mix_g2.weight", "att.g2"),
    ("time_mix_k_k.weight", "att.k_k"),
    ("time_mix_k_a.weight", "att.k_a"),
    ("time_mix_r_k.weight", "att.r_k"),
    ("time_mix_receptance.weight", "att.receptance.weight"),
    ("time_mix_key.weight", "att.key.weight"),
    ("time_mix_value.weight", "att.value.weight"),
    ("time_mix_output.weight", "att.output.weight"),
    ("time_mix_ln.weight", "att.ln_x.weight"),
    ("time_mix_ln.bias", "att.ln_x.bias"),
    ("channel_mix_lerp_k.weight", "ffn.x_k"),
    ("channel_mix_key.weight", "ffn.key.weight"),
    ("channel_mix_value.weight", "ffn.value.weight"),
    ("time_mix_lerp_fused.weight", ""),
];

pub(super) const GLOBAL_NAMES: [(&str, &str); 6] = [
    ("token_embd.weight", "emb.weight"),
    ("token_embd_norm.weight", "blocks.0.ln0.weight"),
    ("token_embd_norm.bias", "blocks.0.ln0.bias"),
    ("output_norm.weight", "ln_out.weight"),
    ("output_norm.bias", "ln_out.bias"),
    ("output.weight", "head.weight"),
];

pub(super) const LERP_FUSED: &str = "time_mix_lerp_fused.weight";

/// Canonical tensors stored squeezed to `[C]` in GGUF.
pub(super) fn is_vector(canon_suffix: &str) -> bool {
    matches!(
        canon_suffix,
        "att.w0" | "att.a0" | "att.v0" | "att.k_k" | "att.k_a" | "att.r_k" | "ffn.x_k"
    )
}

/// (block, llama.cpp suffix) of a "blk.N.suffix" name.
fn split_blk(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("blk.")?;
    let dot = rest.find('.')?;
    let digits = &rest[..dot];
    if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, &rest[dot + 1..]))
}

pub(super) fn to_model(g: &GgufFile) -> Result<Model> {
    let path = g.path.as_path();
    let merr = |what: String| Error::model(path, what);
    let arch = g
        .get("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| merr("missing metadata 'general.architecture'".into()))?;
    match arch {
        "rwkv7" => {}
        "rwkv6" => return Err(merr("RWKV v6 is not supported yet (only v7)".into())),
        other => {
            return Err(merr(format!(
                "architecture '{other}' is not supported (only rwkv7)"
            )))
        }
    }
    let kv_u = |key: &str| -> Result<Option<usize>> {
        match g.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| {
                    Error::format(
                        path,
                        format!("metadata '{key}' is {v}, expected an integer"),
                    )
                }),
        }
    };
    let need = |key: &str| -> Result<usize> {
        kv_u(key)?.ok_or_else(|| Error::model(path, format!("missing metadata '{key}'")))
    };
    let n_embd = need("rwkv7.embedding_length")?;
    let n_layer = need("rwkv7.block_count")?;
    let ffn_size = need("rwkv7.feed_forward_length")?;
    let head_size = need("rwkv7.wkv.head_size")?;
    if n_layer == 0 || n_layer > g.tensors.len() {
        return Err(merr(format!(
            "rwkv7.block_count {n_layer} does not fit a file of {} tensors",
            g.tensors.len()
        )));
    }
    if let Some(shift) = kv_u("rwkv7.token_shift_count")? {
        if shift != 2 {
            return Err(merr(format!(
                "rwkv7.token_shift_count is {shift}, RWKV-7 needs 2"
            )));
        }
    }

    // The width every split and squeeze below relies on must agree with the embedding.
    let emb = g
        .tensor("token_embd.weight")
        .ok_or_else(|| merr("missing tensor 'token_embd.weight'".into()))?;
    if emb.dims.len() != 2 || emb.dims[0] != n_embd as u64 {
        return Err(merr(format!(
            "rwkv7.embedding_length is {n_embd} but token_embd.weight has dims {:?} (expected [{n_embd}, vocab])",
            emb.dims
        )));
    }

    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for info in &g.tensors {
        let dtype = info.dtype.ok_or_else(|| {
            merr(format!(
                "tensor '{}' has ggml type {}, which rwkv-hybrid cannot run",
                info.name, info.type_name
            ))
        })?;
        let shape = info.shape();
        let data = g.tensor_data(info);
        let not_ours = || {
            merr(format!(
                "tensor '{}' is not part of llama.cpp's rwkv7 layout",
                info.name
            ))
        };
        if let Some((_, canon)) = GLOBAL_NAMES.iter().find(|(ours, _)| *ours == info.name) {
            tensors.insert(
                canon.to_string(),
                make_tensor(path, canon, dtype, shape, data)?,
            );
            continue;
        }
        let (block, suffix) = split_blk(&info.name).ok_or_else(not_ours)?;
        if block >= n_layer {
            return Err(merr(format!(
                "tensor '{}' is beyond rwkv7.block_count {n_layer}",
                info.name
            )));
        }
        if suffix == LERP_FUSED {
            let raw = RawTensor {
                name: info.name.clone(),
                dtype,
                shape,
                data,
            };
            split_fused_mixes(path, &info.name, block, n_embd, raw, &mut tensors)?;
            continue;
        }
        let (_, canon_suffix) = BLOCK_NAMES
            .iter()
            .find(|(ours, _)| *ours == suffix)
            .ok_or_else(not_ours)?;
        if block == 0 && matches!(*canon_suffix, "att.v0" | "att.v1" | "att.v2") {
            continue; // llama.cpp's dummy copies of a0/a1/a2; layer 0 has no value mix
        }
        let canon = format!("blocks.{block}.{canon_suffix}");
        let shape = if is_vector(canon_suffix) {
            vec![checked_numel(path, &info.name, &shape)?]
        } else {
            shape
        };
        let t = make_tensor(path, &canon, dtype, shape, data)?;
        tensors.insert(canon, t);
    }

    // Cross-check the metadata with the shapes; LoRA ranks come from the shapes.
    let shape_of = |name: &str| -> Result<&[usize]> {
        tensors
            .get(name)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| Error::model(path, format!("missing tensor '{name}'")))
    };
    let vocab_size = shape_of("emb.weight")?.first().copied().unwrap_or(0);
    let ffn_rows = shape_of("blocks.0.ffn.key.weight")?
        .first()
        .copied()
        .unwrap_or(0);
    if ffn_rows != ffn_size {
        return Err(merr(format!(
            "rwkv7.feed_forward_length is {ffn_size} but channel_mix_key has {ffn_rows} outputs"
        )));
    }
    let rank = |name: &str, key: &str| -> Result<usize> {
        let r = shape_of(name)?.first().copied().unwrap_or(0);
        match kv_u(key)? {
            Some(k) if k != r => Err(Error::model(
                path,
                format!("{key} is {k} but tensor '{name}' has rank {r}"),
            )),
            _ => Ok(r),
        }
    };
    let w = rank("blocks.0.att.w1", "rwkv7.attention.decay_lora_rank")?;
    let a = rank("blocks.0.att.a1", "rwkv7.attention.iclr_lora_rank")?;
    let gr = rank("blocks.0.att.g1", "rwkv7.attention.gate_lora_rank")?;
    let v = if n_layer > 1 {
        rank(
            "blocks.1.att.v1",
            "rwkv7.attention.value_residual_mix_lora_rank",
        )?
    } else {
        kv_u("rwkv7.attention.value_residual_mix_lora_rank")?.unwrap_or(a)
    };
    let desc = ModelDesc {
        version: RwkvVersion::V7,
        n_layer,
        n_embd,
        head_size,
        vocab_size,
        ffn_size,
        lora: LoraRanks { w, a, v, g: gr },
    };

    let vocab = match (
        g.get("tokenizer.ggml.tokens"),
        g.get("tokenizer.ggml.model").and_then(GgufValue::as_str),
    ) {
        (Some(GgufValue::Array(GgufArray::Str(tokens))), None | Some("rwkv")) => {
            Some(Vocab::from_gguf_tokens(tokens).map_err(|e| match e {
                Error::Format { what, .. } => {
                    Error::format(path, format!("tokenizer.ggml.tokens: {what}"))
                }
                other => Error::format(path, format!("tokenizer.ggml.tokens: {other}")),
            })?)
        }
        _ => None,
    };
    Ok(Model {
        desc,
        tensors,
        vocab,
        source: path.to_path_buf(),
        format: "gguf",
    })
}
