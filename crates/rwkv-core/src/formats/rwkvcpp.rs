//! rwkv.cpp `.bin` (../shared/refdata/rwkv.cpp/SOURCES.md): a 24-byte header
//! (magic 0x67676d66, version 100/101, n_vocab, n_embed, n_layer, data type), then tensor records
//! until the end of the file, unaligned: `i32 n_dims, i32 key_len, i32 type, i32 dims[n_dims]`
//! (ggml order, innermost first), the name, the data. Types use rwkv.cpp's own numbering.

use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::canonical::{
    detect_version, model_from_official, unsupported_version, Layout, RawTensor,
};
use crate::formats::{map_file, mapped, ByteReader, HeaderRead};
use crate::model::{FileBytes, Model, RwkvVersion};

const MAGIC: u32 = 0x6767_6d66;
/// rwkv.cpp writes at most 3 dimensions; ggml allows 4.
const MAX_DIMS: i32 = 4;
/// Tensor names are short ("blocks.11.att.receptance.weight"); a longer key is corrupt.
const MAX_KEY_BYTES: i32 = 1024;

/// rwkv.cpp's type codes (not ggml's).
fn dtype_from_code(code: i32) -> Option<DType> {
    match code {
        0 => Some(DType::F32),
        1 => Some(DType::F16),
        2 => Some(DType::Q4_0),
        3 => Some(DType::Q4_1),
        7 => Some(DType::Q5_0),
        8 => Some(DType::Q5_1),
        9 => Some(DType::Q8_0),
        _ => None,
    }
}

fn code_name(code: i32) -> String {
    match code {
        4 => "Q4_1_O (removed)".into(),
        5 => "Q4_2 (removed)".into(),
        6 => "Q4_3 (removed)".into(),
        10 => "Q8_1".into(),
        c => format!("{c}"),
    }
}

/// The header of an rwkv.cpp file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RwkvCppHeader {
    pub version: u32,
    pub n_vocab: usize,
    pub n_embed: usize,
    pub n_layer: usize,
    pub data_type: i32,
}

fn positive(r: &ByteReader, v: i32, what: &str) -> Result<usize> {
    usize::try_from(v)
        .ok()
        .filter(|&x| x > 0)
        .ok_or_else(|| r.err(format!("{what} is {v}")))
}

/// One tensor record: name, type, torch-order shape, byte range in the file.
pub(crate) struct Record {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub range: std::ops::Range<usize>,
}

/// Parses the header and every record (validating sizes) without touching tensor data.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<(RwkvCppHeader, Vec<Record>)> {
    let mut r = ByteReader::new(path, bytes);
    let magic = r.u32("magic")?;
    if magic != MAGIC {
        return Err(r.err(format!(
            "not an rwkv.cpp file (magic {magic:#010x}, expected 0x67676d66)"
        )));
    }
    let version = r.u32("version")?;
    if version != 100 && version != 101 {
        return Err(r.err(format!(
            "unsupported rwkv.cpp file version {version} (100 or 101)"
        )));
    }
    let n_vocab = r.i32("n_vocab")?;
    let n_vocab = positive(&r, n_vocab, "n_vocab")?;
    let n_embed = r.i32("n_embed")?;
    let n_embed = positive(&r, n_embed, "n_embed")?;
    let n_layer = r.i32("n_layer")?;
    let n_layer = positive(&r, n_layer, "n_layer")?;
    let data_type = r.i32("data type")?;
    let header = RwkvCppHeader {
        version,
        n_vocab,
        n_embed,
        n_layer,
        data_type,
    };
    let mut records = Vec::new();
    while r.remaining() > 0 {
        let n_dims = r.i32("tensor dimension count")?;
        let key_len = r.i32("tensor name length")?;
        let code = r.i32("tensor type")?;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return Err(r.err(format!(
                "tensor record at offset {} has {n_dims} dimensions (1 to {MAX_DIMS})",
                r.pos() - 12
            )));
        }
        if !(1..=MAX_KEY_BYTES).contains(&key_len) {
            return Err(r.err(format!(
                "tensor name length {key_len} at offset {} is out of range",
                r.pos() - 8
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = r.i32("tensor dimension")?;
            dims.push(positive(&r, d, "tensor dimension")?);
        }
        let name_bytes = r.bytes(key_len as u64, "tensor name")?;
        let name = String::from_utf8(name_bytes.to_vec())
            .map_err(|_| r.err("tensor name is not valid UTF-8"))?;
        let dtype = dtype_from_code(code).ok_or_else(|| {
            r.err(format!(
                "tensor '{name}' has unknown or unsupported rwkv.cpp type {}",
                code_name(code)
            ))
        })?;
        let shape: Vec<usize> = dims.iter().rev().copied().collect();
        let n_bytes = dtype
            .tensor_bytes(&shape)
            .ok_or_else(|| r.err(format!("tensor '{name}' of {dtype} has dimensions {dims:?} that are not whole blocks or too large")))?;
        let start = r.pos();
        r.bytes(n_bytes as u64, &format!("data of tensor '{name}'"))?;
        records.push(Record {
            name,
            dtype,
            shape,
            range: start..start + n_bytes,
        });
    }
    Ok((header, records))
}

/// Reads an rwkv.cpp `.bin` into the canonical model. RWKV v4/v5/v6 files parse but are
/// refused with a clear model error (only v7 runs).
pub fn read_model(path: &Path) -> Result<Model> {
    read_model_from(path, map_file(path)?)
}

/// [`read_model`] over bytes already in memory; `path` names them in errors.
pub fn read_model_from(path: &Path, map: Arc<FileBytes>) -> Result<Model> {
    let (header, records) = parse(path, &map)?;
    let version = detect_version(records.iter().map(|r| r.name.as_str()));
    match version {
        Some(RwkvVersion::V7) => {}
        Some(v) => return Err(unsupported_version(path, v)),
        None => return Err(Error::model(path, "no RWKV tensors found")),
    }
    let raws = records
        .into_iter()
        .map(|r| RawTensor {
            name: r.name,
            dtype: r.dtype,
            shape: r.shape,
            data: mapped(&map, r.range),
        })
        .collect();
    let model = model_from_official(path, raws, Layout::RwkvCpp, "rwkv.cpp")?;
    let d = &model.desc;
    let checks = [
        ("n_vocab", header.n_vocab, d.vocab_size),
        ("n_embed", header.n_embed, d.n_embd),
        ("n_layer", header.n_layer, d.n_layer),
    ];
    for (what, said, found) in checks {
        if said != found {
            return Err(Error::model(
                path,
                format!("header says {what} {said}, the tensors say {found}"),
            ));
        }
    }
    Ok(model)
}
