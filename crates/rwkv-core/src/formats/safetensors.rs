//! safetensors (`.safetensors`, `.st`): `u64` little-endian header length, a JSON header
//! `{"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the
//! data; offsets are relative to the end of the header. Tensors keep the official RWKV names
//! and shapes (see [`super::canonical`]).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::canonical::{model_from_official, official_tensors, Layout, RawTensor};
use crate::formats::{from_source, map_file, mapped, plain_elem_bytes, write_atomic, write_err};
use crate::model::{ByteSource, FileBytes, Model};

/// Largest JSON header we accept. The reference implementation refuses headers over 100 MB
/// too; real ones are a few hundred bytes per tensor, so anything larger is corrupt or hostile.
pub const MAX_HEADER_BYTES: u64 = 100 << 20;

fn dtype_from_name(s: &str) -> Option<DType> {
    match s {
        "F32" => Some(DType::F32),
        "F16" => Some(DType::F16),
        "BF16" => Some(DType::BF16),
        _ => None,
    }
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        _ => "F32",
    }
}

/// One tensor entry of a safetensors header. `range` is absolute within the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SafetensorsEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub range: std::ops::Range<usize>,
}

/// Parses and validates the header of a safetensors file held in `bytes`: header length cap,
/// JSON shape, dtypes, byte counts, offsets inside the file, no overlaps.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Vec<SafetensorsEntry>> {
    let file_len = bytes.len() as u64;
    let json_len = header_json_len(path, bytes.get(..8), file_len)?;
    // header_json_len checked 8 + json_len <= file_len, the length of `bytes`.
    let json = &bytes[8..8 + json_len as usize];
    let entries = parse_json(path, json, file_len)?;
    // Every range lies inside `bytes`, so it fits usize.
    Ok(entries
        .into_iter()
        .map(|e| SafetensorsEntry {
            name: e.name,
            dtype: e.dtype,
            shape: e.shape,
            range: e.start as usize..e.end as usize,
        })
        .collect())
}

/// The JSON header's length from the file's first 8 bytes (None: the file is shorter), checked
/// against the cap and the file's length.
fn header_json_len(path: &Path, first8: Option<&[u8]>, file_len: u64) -> Result<u64> {
    let err = |what: String| Error::format(path, what);
    let Some(first8) = first8 else {
        return Err(err(format!(
            "truncated: {file_len} bytes, a safetensors header length needs 8"
        )));
    };
    let mut n8 = [0u8; 8];
    n8.copy_from_slice(first8);
    let n = u64::from_le_bytes(n8);
    if n > MAX_HEADER_BYTES {
        return Err(err(format!(
            "header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit"
        )));
    }
    if 8 + n > file_len {
        return Err(err(format!(
            "truncated: header of {n} bytes runs past the end of the {file_len}-byte file"
        )));
    }
    Ok(n)
}

/// A header entry with its data's absolute byte range in the file (u64: a streamed file may
/// be larger than the address space).
struct EntryAt {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// Parses and validates the JSON header `json` of a `file_len`-byte file whose data starts
/// right after it.
fn parse_json(path: &Path, json: &[u8], file_len: u64) -> Result<Vec<EntryAt>> {
    let err = |what: String| Error::format(path, what);
    let header: Map<String, Value> = serde_json::from_slice(json)
        .map_err(|e| err(format!("header is not a JSON object: {e}")))?;
    let data_start = 8 + json.len() as u64;
    let data_len = file_len - data_start;
    let mut entries = Vec::new();
    for (name, v) in &header {
        if name == "__metadata__" {
            continue;
        }
        let bad = |what: &str| err(format!("tensor '{name}': {what}"));
        let obj = v.as_object().ok_or_else(|| bad("entry is not an object"))?;
        let dtype_s = obj
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing dtype"))?;
        let dtype = dtype_from_name(dtype_s).ok_or_else(|| {
            bad(&format!(
                "dtype {dtype_s} is not supported (only F32, F16, BF16)"
            ))
        })?;
        let shape_v = obj
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing shape"))?;
        let mut shape = Vec::with_capacity(shape_v.len().min(8));
        for d in shape_v {
            let d = d
                .as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| bad("shape is not a list of sizes"))?;
            shape.push(d);
        }
        let offs = obj
            .get("data_offsets")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing data_offsets"))?;
        let (begin, end) = match offs.as_slice() {
            [b, e] => (b.as_u64(), e.as_u64()),
            _ => (None, None),
        };
        let (Some(begin), Some(end)) = (begin, end) else {
            return Err(bad("data_offsets is not [begin, end]"));
        };
        if begin > end || end > data_len {
            return Err(bad(&format!(
                "data_offsets [{begin}, {end}] lie outside the {data_len} data bytes"
            )));
        }
        let elem = plain_elem_bytes(dtype).unwrap_or(4);
        let want = shape
            .iter()
            .try_fold(elem, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| bad(&format!("shape {shape:?} is too large")))?;
        if usize::try_from(end - begin).ok() != Some(want) {
            return Err(bad(&format!(
                "{dtype} shape {shape:?} needs {want} bytes, data_offsets give {}",
                end - begin
            )));
        }
        entries.push(EntryAt {
            name: name.clone(),
            dtype,
            shape,
            start: data_start + begin,
            end: data_start + end,
        });
    }
    let mut by_start: Vec<&EntryAt> = entries.iter().collect();
    by_start.sort_by_key(|e| (e.start, e.end));
    for pair in by_start.windows(2) {
        if pair[1].start < pair[0].end {
            return Err(err(format!(
                "tensors '{}' and '{}' overlap",
                pair[0].name, pair[1].name
            )));
        }
    }
    Ok(entries)
}

/// Reads a safetensors RWKV-7 checkpoint (official names) into the canonical model.
pub fn read_model(path: &Path) -> Result<Model> {
    read_model_from(path, map_file(path)?)
}

/// [`read_model`] over bytes already in memory; `path` names them in errors.
pub fn read_model_from(path: &Path, map: Arc<FileBytes>) -> Result<Model> {
    let entries = parse_header(path, &map)?;
    let raws = entries
        .into_iter()
        .map(|e| RawTensor {
            name: e.name,
            dtype: e.dtype,
            shape: e.shape,
            data: mapped(&map, e.range),
        })
        .collect();
    model_from_official(path, raws, Layout::Official, "safetensors")
}

/// [`read_model`] through a byte source: two reads for the header (its length, then the JSON,
/// at most [`MAX_HEADER_BYTES`]); tensors stay in the source ([`crate::model::TensorBytes::Source`])
/// except the LoRA matrices, which are fetched to be transposed. `path` names it in errors.
pub fn read_model_source(path: &Path, src: Arc<dyn ByteSource>) -> Result<Model> {
    let file_len = src.len();
    let mut first8 = [0u8; 8];
    let have8 = file_len >= 8;
    if have8 {
        src.read_at(0, &mut first8)?;
    }
    let json_len = header_json_len(path, have8.then_some(&first8[..]), file_len)?;
    // Capped at MAX_HEADER_BYTES above, so it fits usize.
    let mut json = vec![0u8; json_len as usize];
    src.read_at(8, &mut json)?;
    let raws = parse_json(path, &json, file_len)?
        .into_iter()
        .map(|e| RawTensor {
            name: e.name,
            dtype: e.dtype,
            shape: e.shape,
            data: from_source(&src, e.start..e.end),
        })
        .collect();
    model_from_official(path, raws, Layout::Official, "safetensors")
}

/// Writes `model` as safetensors with official names and shapes (f32/f16/bf16 only).
pub fn write(model: &Model, path: &Path) -> Result<()> {
    let mut tensors = official_tensors(model, path, "safetensors")?;
    // Widest elements first so every tensor starts aligned to its element size (the format
    // forbids gaps between tensors, so padding is not an option).
    tensors.sort_by(|a, b| {
        let ea = plain_elem_bytes(a.1.dtype).unwrap_or(4);
        let eb = plain_elem_bytes(b.1.dtype).unwrap_or(4);
        eb.cmp(&ea).then_with(|| a.0.cmp(&b.0))
    });
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({ "format": "pt" }));
    let mut offset = 0usize;
    for (name, t) in &tensors {
        let n = t.data.len();
        header.insert(
            name.clone(),
            json!({ "dtype": dtype_name(t.dtype), "shape": t.shape, "data_offsets": [offset, offset + n] }),
        );
        offset += n;
    }
    let mut json =
        serde_json::to_vec(&Value::Object(header)).map_err(|e| Error::invalid(e.to_string()))?;
    // Pad with spaces so the data starts 8-byte aligned (allowed by the format).
    while (8 + json.len()) % 8 != 0 {
        json.push(b' ');
    }
    write_atomic(path, |w| {
        let io = write_err(path);
        w.write_all(&(json.len() as u64).to_le_bytes())
            .map_err(&io)?;
        w.write_all(&json).map_err(&io)?;
        for (_, t) in &tensors {
            w.write_all(&t.data.read()?).map_err(&io)?;
        }
        Ok(())
    })
}
