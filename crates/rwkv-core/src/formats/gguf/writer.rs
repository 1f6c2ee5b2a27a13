//! Writes a canonical [`Model`] as a GGUF v3 file llama.cpp can load.

use std::io::Write;
use std::path::Path;

use super::container::{GgufArray, GgufValue, DEFAULT_ALIGNMENT};
use super::names::{is_vector, BLOCK_NAMES, GLOBAL_NAMES, LERP_FUSED};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::{plain_elem_bytes, plain_to_f32, write_atomic, write_err, CountingWriter};
use crate::model::v7;
use crate::model::{Model, Tensor};

fn write_value(w: &mut impl Write, v: &GgufValue) -> std::io::Result<()> {
    match v {
        GgufValue::U8(x) => w.write_all(&[*x]),
        GgufValue::I8(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I16(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::U32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F32(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::Bool(x) => w.write_all(&[*x as u8]),
        GgufValue::Str(s) => write_str(w, s),
        GgufValue::Array(a) => write_array(w, a),
        GgufValue::U64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::I64(x) => w.write_all(&x.to_le_bytes()),
        GgufValue::F64(x) => w.write_all(&x.to_le_bytes()),
    }
}

fn write_str(w: &mut impl Write, s: &str) -> std::io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_array(w: &mut impl Write, a: &GgufArray) -> std::io::Result<()> {
    w.write_all(&a.elem_type_id().to_le_bytes())?;
    w.write_all(&(a.len() as u64).to_le_bytes())?;
    macro_rules! each {
        ($v:expr, $f:expr) => {{
            for x in $v {
                $f(w, x)?;
            }
        }};
    }
    match a {
        GgufArray::U8(v) => w.write_all(v)?,
        GgufArray::I8(v) => each!(v, |w: &mut _, x: &i8| Write::write_all(w, &x.to_le_bytes())),
        GgufArray::U16(v) => each!(v, |w: &mut _, x: &u16| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::I16(v) => each!(v, |w: &mut _, x: &i16| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::U32(v) => each!(v, |w: &mut _, x: &u32| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::I32(v) => each!(v, |w: &mut _, x: &i32| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::F32(v) => each!(v, |w: &mut _, x: &f32| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::Bool(v) => each!(v, |w: &mut _, x: &bool| Write::write_all(w, &[*x as u8])),
        GgufArray::Str(v) => each!(v, |w: &mut _, x: &String| write_str(w, x)),
        GgufArray::Array(v) => each!(v, |w: &mut _, x: &GgufArray| write_array(w, x)),
        GgufArray::U64(v) => each!(v, |w: &mut _, x: &u64| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::I64(v) => each!(v, |w: &mut _, x: &i64| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
        GgufArray::F64(v) => each!(v, |w: &mut _, x: &f64| Write::write_all(
            w,
            &x.to_le_bytes()
        )),
    }
    Ok(())
}

/// llama.cpp's LlamaFileType for a model whose matrices are `d` (informational only).
fn file_type(d: DType) -> u32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        DType::Q4K => 15,
        DType::Q5K => 17,
        DType::Q6K => 18,
        DType::BF16 => 32,
    }
}

/// A tensor to write: llama.cpp name, ggml dims, type, bytes.
struct OutTensor<'a> {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    data: std::borrow::Cow<'a, [u8]>,
}

fn out_tensor<'a>(name: String, t: &'a Tensor, squeeze: bool) -> Result<OutTensor<'a>> {
    let dims = if squeeze {
        vec![t.n_elements() as u64]
    } else {
        t.shape.iter().rev().map(|&d| d as u64).collect()
    };
    Ok(OutTensor {
        name,
        dims,
        dtype: t.dtype,
        data: t.data.read()?,
    })
}

/// The six mixes of block `i` fused into `[C,1,1,6]` (one dtype; mixed plain types become f32).
fn fused_mixes(path: &Path, model: &Model, i: usize) -> Result<OutTensor<'static>> {
    let c = model.desc.n_embd;
    let parts: Vec<&Tensor> = v7::ATT_MIXES
        .iter()
        .map(|m| model.tensor(&format!("blocks.{i}.att.{m}")))
        .collect::<Result<_>>()?;
    let first = parts[0].dtype;
    let plain = parts
        .iter()
        .all(|t| plain_elem_bytes(t.dtype).is_some() && t.n_elements() == c);
    if !plain {
        return Err(Error::model(
            path,
            format!("blocks.{i}.att.x_* must be f32/f16/bf16 vectors of {c}"),
        ));
    }
    let (dtype, bytes) = if parts.iter().all(|t| t.dtype == first) {
        (
            first,
            parts
                .iter()
                .map(|t| t.data.read())
                .collect::<Result<Vec<_>>>()?
                .concat(),
        )
    } else {
        let mut b = Vec::with_capacity(6 * c * 4);
        for t in &parts {
            for v in plain_to_f32(t.dtype, &t.data.read()?).unwrap_or_default() {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        (DType::F32, b)
    };
    Ok(OutTensor {
        name: format!("blk.{i}.{LERP_FUSED}"),
        dims: vec![c as u64, 1, 1, 6],
        dtype,
        data: std::borrow::Cow::Owned(bytes),
    })
}

fn u32_kv(key: &str, v: usize) -> (String, GgufValue) {
    (key.to_string(), GgufValue::U32(v as u32))
}

/// Writes `model` as a llama.cpp-compatible `rwkv7` GGUF v3 (alignment 32, llama.cpp tensor
/// names, dummy layer-0 `v0/v1/v2` as llama.cpp expects, tokenizer tokens when the model has a
/// vocabulary).
pub fn write(model: &Model, path: &Path) -> Result<()> {
    let d = &model.desc;
    let sizes = [
        (d.n_embd, "n_embd"),
        (d.n_layer, "n_layer"),
        (d.ffn_size, "ffn_size"),
        (d.head_size, "head_size"),
        (d.lora.w, "decay rank"),
        (d.lora.a, "iclr rank"),
        (d.lora.v, "value rank"),
        (d.lora.g, "gate rank"),
    ];
    for (x, what) in sizes {
        if u32::try_from(x).is_err() {
            return Err(Error::invalid(format!(
                "{}: {what} {x} does not fit GGUF's u32",
                path.display()
            )));
        }
    }
    let mut out: Vec<OutTensor> = Vec::new();
    for (ours, canon) in GLOBAL_NAMES.iter().take(3) {
        out.push(out_tensor(ours.to_string(), model.tensor(canon)?, false)?);
    }
    for i in 0..d.n_layer {
        out.push(fused_mixes(&model.source, model, i)?);
        for (ours, canon_suffix) in BLOCK_NAMES.iter() {
            if canon_suffix.is_empty() {
                continue;
            }
            // Layer 0 has no value mix; llama.cpp still wants tensors there (copies of a0/a1/a2).
            let source = match (i, *canon_suffix) {
                (0, "att.v0") => "att.a0",
                (0, "att.v1") => "att.a1",
                (0, "att.v2") => "att.a2",
                (_, s) => s,
            };
            let t = model.tensor(&format!("blocks.{i}.{source}"))?;
            out.push(out_tensor(
                format!("blk.{i}.{ours}"),
                t,
                is_vector(canon_suffix),
            )?);
        }
    }
    for (ours, canon) in GLOBAL_NAMES.iter().skip(3) {
        out.push(out_tensor(ours.to_string(), model.tensor(canon)?, false)?);
    }

    let matrix_type = model.tensor("blocks.0.att.key.weight")?.dtype;
    let any_quant = out.iter().any(|t| t.dtype.is_quantized());
    let mut kv: Vec<(String, GgufValue)> = vec![
        (
            "general.architecture".into(),
            GgufValue::Str("rwkv7".into()),
        ),
        ("general.name".into(), GgufValue::Str("rwkv7".into())),
        u32_kv("general.alignment", DEFAULT_ALIGNMENT as usize),
        u32_kv("general.file_type", file_type(matrix_type) as usize),
        u32_kv("rwkv7.context_length", 1 << 20),
        u32_kv("rwkv7.embedding_length", d.n_embd),
        u32_kv("rwkv7.block_count", d.n_layer),
        u32_kv("rwkv7.feed_forward_length", d.ffn_size),
        (
            "rwkv7.attention.layer_norm_epsilon".into(),
            GgufValue::F32(v7::LN_EPS),
        ),
        u32_kv("rwkv7.wkv.head_size", d.head_size),
        u32_kv("rwkv7.attention.head_count", 0),
        u32_kv("rwkv7.attention.decay_lora_rank", d.lora.w),
        u32_kv("rwkv7.attention.iclr_lora_rank", d.lora.a),
        u32_kv("rwkv7.attention.value_residual_mix_lora_rank", d.lora.v),
        u32_kv("rwkv7.attention.gate_lora_rank", d.lora.g),
        u32_kv("rwkv7.token_shift_count", 2),
    ];
    if any_quant {
        kv.push(u32_kv("general.quantization_version", 2));
    }
    if let Some(vocab) = &model.vocab {
        // llama.cpp's rwkv tokens keep id 0 for end of text ("<s>"): a vocabulary whose id 0 is
        // a real token (the 256-id byte-level one, id = byte) would come back without it.
        if let Some(first @ [_, ..]) = vocab.token_bytes(0) {
            return Err(Error::invalid(format!(
                "{}: the vocabulary's id 0 is the token {first:?}; GGUF keeps id 0 for end of text, so it cannot hold this vocabulary",
                path.display()
            )));
        }
        let tokens = vocab.to_gguf_tokens();
        let types: Vec<i32> = (0..tokens.len())
            .map(|i| if i == 0 { 3 } else { 1 })
            .collect();
        kv.push(("tokenizer.ggml.model".into(), GgufValue::Str("rwkv".into())));
        kv.push((
            "tokenizer.ggml.tokens".into(),
            GgufValue::Array(GgufArray::Str(tokens)),
        ));
        kv.push((
            "tokenizer.ggml.token_type".into(),
            GgufValue::Array(GgufArray::I32(types)),
        ));
    }

    // Offsets: each tensor aligned.
    let align = DEFAULT_ALIGNMENT;
    let mut offsets = Vec::with_capacity(out.len());
    let mut next = 0u64;
    for t in &out {
        offsets.push(next);
        next = (next + t.data.len() as u64).div_ceil(align) * align;
    }
    write_atomic(path, |w: &mut CountingWriter<_>| {
        let io = write_err(path);
        w.write_all(b"GGUF").map_err(&io)?;
        w.write_all(&3u32.to_le_bytes()).map_err(&io)?;
        w.write_all(&(out.len() as u64).to_le_bytes())
            .map_err(&io)?;
        w.write_all(&(kv.len() as u64).to_le_bytes()).map_err(&io)?;
        for (k, v) in &kv {
            write_str(w, k).map_err(&io)?;
            w.write_all(&v.type_id().to_le_bytes()).map_err(&io)?;
            write_value(w, v).map_err(&io)?;
        }
        for (t, off) in out.iter().zip(&offsets) {
            write_str(w, &t.name).map_err(&io)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())
                .map_err(&io)?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes()).map_err(&io)?;
            }
            w.write_all(&t.dtype.ggml_id().to_le_bytes()).map_err(&io)?;
            w.write_all(&off.to_le_bytes()).map_err(&io)?;
        }
        w.pad_to(align).map_err(&io)?;
        for t in &out {
            w.write_all(&t.data).map_err(&io)?;
            w.pad_to(align).map_err(&io)?;
        }
        Ok(())
    })
}
