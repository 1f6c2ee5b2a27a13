//! PyTorch `.pth` checkpoints (torch.save's zip format), read without executing anything:
//! our own zip reader finds `<archive>/data.pkl` and the storages `<archive>/data/<key>`, a
//! restricted unpickler ([`super::pickle`]) turns the pickle into tensor views, and contiguous
//! tensors are served straight from the memory map. [`write`] produces what torch.save does.

use std::path::Path;
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::canonical::{model_from_official, official_tensors, Layout, RawTensor};
use crate::formats::pickle::{self, TensorEntry, TensorRef, Value};
use crate::formats::zip::{self, ZipIndex, ZipWriter};
use crate::formats::{map_file, mapped, write_atomic, write_err};
use crate::model::{FileBytes, Model};

/// Finds `<prefix>data.pkl` (torch names the top folder after the file, or "archive").
fn find_pickle<'a>(path: &Path, index: &'a ZipIndex) -> Result<(&'a str, &'a zip::ZipEntry)> {
    let mut found = index.entries.iter().filter(|e| {
        e.name
            .strip_suffix("data.pkl")
            .is_some_and(|p| p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1))
    });
    let first = found.next().ok_or_else(|| {
        Error::format(
            path,
            "zip archive has no data.pkl: not a PyTorch checkpoint",
        )
    })?;
    if found.next().is_some() {
        return Err(Error::format(
            path,
            "zip archive has more than one data.pkl",
        ));
    }
    let prefix = &first.name[..first.name.len() - "data.pkl".len()];
    Ok((prefix, first))
}

/// The dict of tensors: the pickled object itself, or its "state_dict"/"model" entry when the
/// checkpoint wraps one (training checkpoints often do).
fn state_dict<'a>(path: &Path, root: &'a Value) -> Result<&'a [(pickle::V, pickle::V)]> {
    let Value::Dict(items) = root else {
        return Err(Error::format(
            path,
            "data.pkl does not hold a dict of tensors",
        ));
    };
    let has_tensors = items
        .iter()
        .any(|(_, v)| matches!(v.value, Value::Tensor(_)));
    if !has_tensors {
        for (k, v) in items {
            if let (Value::Str(k), Value::Dict(inner)) = (&k.value, &v.value) {
                if k == "state_dict" || k == "model" {
                    return Ok(inner);
                }
            }
        }
    }
    Ok(items)
}

/// The bytes of a tensor view inside its storage entry; only contiguous views.
fn tensor_range(
    path: &Path,
    name: &str,
    t: &TensorRef,
    index: &ZipIndex,
    prefix: &str,
) -> Result<std::ops::Range<usize>> {
    let err = |what: String| Error::format(path, format!("tensor '{name}': {what}"));
    let entry_name = format!("{prefix}data/{}", t.storage.key);
    let entry = index.get(&entry_name).ok_or_else(|| {
        err(format!(
            "storage '{}' is missing from the archive",
            t.storage.key
        ))
    })?;
    let elem = t.storage.kind.elem_bytes as u64;
    let storage_bytes = t
        .storage
        .numel
        .checked_mul(elem)
        .ok_or_else(|| err("storage size overflows".into()))?;
    if storage_bytes > entry.data.len() as u64 {
        return Err(err(format!(
            "storage '{}' claims {storage_bytes} bytes, the archive entry has {}",
            t.storage.key,
            entry.data.len()
        )));
    }
    let numel = t
        .shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| err(format!("size {:?} overflows", t.shape)))?;
    // Contiguous row-major: each dimension of size > 1 steps over everything after it.
    let mut want = 1u64;
    for (&d, &s) in t.shape.iter().zip(&t.stride).rev() {
        if d > 1 && s as u64 != want {
            return Err(err(format!(
                "is not contiguous (size {:?}, stride {:?}); save it after .contiguous()",
                t.shape, t.stride
            )));
        }
        want = want.saturating_mul(d as u64);
    }
    let end = t
        .offset
        .checked_add(numel)
        .filter(|&e| e <= t.storage.numel)
        .ok_or_else(|| {
            err(format!(
                "view (offset {}, {numel} elements) lies outside its storage of {}",
                t.offset, t.storage.numel
            ))
        })?;
    let start = entry.data.start + (t.offset * elem) as usize;
    Ok(start..entry.data.start + (end * elem) as usize)
}

/// Reads a PyTorch RWKV-7 checkpoint into the canonical model.
pub fn read_model(path: &Path) -> Result<Model> {
    read_model_from(path, map_file(path)?)
}

/// [`read_model`] over bytes already in memory; `path` names them in errors.
pub fn read_model_from(path: &Path, map: Arc<FileBytes>) -> Result<Model> {
    let raws = read_tensors(path, &map)?;
    model_from_official(path, raws, Layout::Official, "pth")
}

/// The checkpoint's float tensors under their own names, as views of `map` (also used for
/// state files, which hold `blocks.N.att.time_state` tensors instead of a model).
pub(crate) fn read_tensors(path: &Path, map: &Arc<FileBytes>) -> Result<Vec<RawTensor>> {
    let index = zip::read_index(path, map)?;
    let (prefix, pkl) = find_pickle(path, &index)?;
    if let Some(order) = index.get(&format!("{prefix}byteorder")) {
        let order = &map[order.data.clone()];
        if order != b"little" {
            return Err(Error::format(
                path,
                format!(
                    "byteorder is '{}'; only little-endian checkpoints are supported",
                    String::from_utf8_lossy(order)
                ),
            ));
        }
    }
    let root = pickle::unpickle(path, &map[pkl.data.clone()])?;
    let mut raws = Vec::new();
    for (k, v) in state_dict(path, &root.value)? {
        let Value::Tensor(t) = &v.value else {
            continue; // step counters and other non-tensor entries
        };
        let Value::Str(name) = &k.value else {
            return Err(Error::format(path, "state dict key is not a string"));
        };
        let dtype = t.storage.kind.dtype.ok_or_else(|| {
            Error::model(
                path,
                format!(
                    "tensor '{name}' is torch.{}; only float32/float16/bfloat16 are supported",
                    t.storage.kind.name
                ),
            )
        })?;
        let range = tensor_range(path, name, t, &index, prefix)?;
        let shape = if t.shape.is_empty() {
            vec![1]
        } else {
            t.shape.clone()
        };
        raws.push(RawTensor {
            name: name.clone(),
            dtype,
            shape,
            data: mapped(map, range),
        });
    }
    Ok(raws)
}

fn storage_name(d: DType) -> &'static str {
    match d {
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        _ => "FloatStorage",
    }
}

/// Writes `model` as a torch.save-compatible `.pth` (official names and shapes, f32/f16/bf16
/// only): a zip of stored entries `archive/data.pkl`, `archive/byteorder`, `archive/data/<i>`
/// (64-byte aligned), `archive/version`.
pub fn write(model: &Model, path: &Path) -> Result<()> {
    write_with(model, path, false)
}

/// [`write`], optionally with zip64 records even when the archive is small (for tests).
pub fn write_with(model: &Model, path: &Path, force_zip64: bool) -> Result<()> {
    let tensors = official_tensors(model, path, ".pth")?;
    let entries: Vec<TensorEntry> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, t))| TensorEntry {
            name,
            storage: storage_name(t.dtype),
            key: i.to_string(),
            shape: &t.shape,
        })
        .collect();
    let pkl = pickle::write_state_dict(&entries);
    write_atomic(path, |w| {
        let io = write_err(path);
        let start = w.written;
        let mut z = ZipWriter::new(w, start, force_zip64);
        z.add("archive/data.pkl", &pkl).map_err(&io)?;
        z.add("archive/byteorder", b"little").map_err(&io)?;
        for (i, (_, t)) in tensors.iter().enumerate() {
            z.add(&format!("archive/data/{i}"), &t.data.read()?)
                .map_err(&io)?;
        }
        z.add("archive/version", b"3\n").map_err(&io)?;
        z.finish().map_err(&io)
    })
}
