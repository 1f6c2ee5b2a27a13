//! State files: state-tuned initial states as RWKV-Runner, Ai00 and RWKV-PEFT users have them,
//! a `.pth` or safetensors (`.st`) file of `blocks.N.att.time_state` tensors, one per layer,
//! each `[H, N, N]` (f32/f16/bf16).
//!
//! Orientation: the file holds each head's wkv state transposed relative to the inference
//! kernels (RWKV-Runner and ChatRWKV load it with `.transpose(1, 2)`): file `[h][q][p]` is
//! `S[h][p][q]` of the project's state layout ([`crate::backend`]: `p` the value row, `q` the
//! key column). The token-shift registers are not part of the file and start at zero.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::canonical::RawTensor;
use crate::formats::pickle::{self, TensorEntry};
use crate::formats::zip::ZipWriter;
use crate::formats::{detect, map_file, mapped, pth, safetensors, write_atomic, write_err, Format};
use crate::model::{FileBytes, ModelDesc, Tensor};

const SUFFIX: &str = ".att.time_state";

/// Reads a state file and returns a full state vector for `desc` (`desc.state_len()` values:
/// per layer `[ffn_x = 0, att_x = 0, S]`). A file whose layers or head shapes do not match the
/// model is refused with a message naming both shapes.
pub fn load_state_file(path: &Path, desc: &ModelDesc) -> Result<Vec<f32>> {
    let map = map_file(path)?;
    let raws = match detect(path)? {
        Format::Safetensors => safetensors_tensors(path, &map)?,
        Format::Pth => pth::read_tensors(path, &map)?,
        other => {
            return Err(Error::format(
                path,
                format!("a state file must be .pth or safetensors, this is {other}"),
            ))
        }
    };
    state_from_tensors(path, raws, desc)
}

fn safetensors_tensors(path: &Path, map: &Arc<FileBytes>) -> Result<Vec<RawTensor>> {
    Ok(safetensors::parse_header(path, map)?
        .into_iter()
        .map(|e| RawTensor {
            name: e.name,
            dtype: e.dtype,
            shape: e.shape,
            data: mapped(map, e.range),
        })
        .collect())
}

fn state_from_tensors(path: &Path, raws: Vec<RawTensor>, desc: &ModelDesc) -> Result<Vec<f32>> {
    let (h, n) = (desc.n_head(), desc.head_size);
    let want_shape = format!(
        "{} layers of [{h}, {n}, {n}] (blocks.N{SUFFIX}, N < {})",
        desc.n_layer, desc.n_layer
    );
    // Layer index -> tensor; every key checked before anything is allocated for the state.
    let mut layers: Vec<Option<RawTensor>> = (0..desc.n_layer).map(|_| None).collect();
    let mut found = 0usize;
    let mut extra_layers = 0usize;
    let mut first_shape: Option<Vec<usize>> = None;
    for t in raws {
        let Some(layer) = t
            .name
            .strip_prefix("blocks.")
            .and_then(|r| r.strip_suffix(SUFFIX))
        else {
            continue; // other entries (metadata tensors) carry no state
        };
        let Ok(layer) = layer.parse::<usize>() else {
            return Err(Error::format(
                path,
                format!("tensor '{}': layer index is not a number", t.name),
            ));
        };
        found += 1;
        first_shape.get_or_insert_with(|| t.shape.clone());
        if layer >= desc.n_layer {
            extra_layers += 1;
            continue;
        }
        if layers[layer].is_some() {
            return Err(Error::format(
                path,
                format!("tensor '{}' appears twice", t.name),
            ));
        }
        layers[layer] = Some(t);
    }
    let mismatch = |got: String| {
        Error::model(
            path,
            format!("state file does not match the model: the file has {got}; the model needs {want_shape}"),
        )
    };
    if found == 0 {
        return Err(Error::model(
            path,
            format!("no blocks.N{SUFFIX} tensors: not a state file (the model needs {want_shape})"),
        ));
    }
    let got_shape = first_shape.unwrap_or_default();
    if extra_layers > 0 || layers.iter().any(Option::is_none) {
        return Err(mismatch(format!("{found} layers of {got_shape:?}")));
    }
    let mut state = vec![0f32; desc.state_len()];
    let layer_len = desc.layer_state_len();
    let c = desc.n_embd;
    for (i, slot) in layers.into_iter().enumerate() {
        let Some(t) = slot else { continue }; // checked above: every layer is present
        if t.shape != [h, n, n] {
            return Err(mismatch(format!(
                "blocks.{i}{SUFFIX} of shape {:?}",
                t.shape
            )));
        }
        if !matches!(t.dtype, DType::F32 | DType::F16 | DType::BF16) {
            return Err(Error::model(
                path,
                format!(
                    "blocks.{i}{SUFFIX} is {}; only f32/f16/bf16 are supported",
                    t.dtype
                ),
            ));
        }
        let name = t.name;
        let values = Tensor::new(t.dtype, t.shape, t.data)
            .and_then(|t| t.to_f32())
            .map_err(|e| Error::format(path, format!("tensor '{name}': {e}")))?;
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::format(
                path,
                format!("tensor '{name}' holds a non-finite value at index {bad}"),
            ));
        }
        let s = &mut state[i * layer_len + 2 * c..(i + 1) * layer_len];
        for head in 0..h {
            let base = head * n * n;
            for p in 0..n {
                for q in 0..n {
                    s[base + p * n + q] = values[base + q * n + p];
                }
            }
        }
    }
    Ok(state)
}

/// The `[H, N, N]` file tensors of `state` (a full state for `desc`), transposed back to the
/// files' orientation; shift registers are dropped.
fn file_tensors(state: &[f32], desc: &ModelDesc) -> Result<Vec<(String, Vec<u8>)>> {
    if state.len() != desc.state_len() {
        return Err(Error::invalid(format!(
            "state has {} values, the model's state has {}",
            state.len(),
            desc.state_len()
        )));
    }
    let (h, n, c) = (desc.n_head(), desc.head_size, desc.n_embd);
    let layer_len = desc.layer_state_len();
    Ok((0..desc.n_layer)
        .map(|i| {
            let s = &state[i * layer_len + 2 * c..(i + 1) * layer_len];
            let mut bytes = Vec::with_capacity(s.len() * 4);
            for head in 0..h {
                let base = head * n * n;
                for q in 0..n {
                    for p in 0..n {
                        bytes.extend_from_slice(&s[base + p * n + q].to_le_bytes());
                    }
                }
            }
            (format!("blocks.{i}{SUFFIX}"), bytes)
        })
        .collect())
}

/// Writes the wkv part of `state` as a state file (f32) that [`load_state_file`], RWKV-Runner
/// and Ai00 read; `format` is [`Format::Safetensors`] or [`Format::Pth`].
pub fn write_state_file(
    path: &Path,
    state: &[f32],
    desc: &ModelDesc,
    format: Format,
) -> Result<()> {
    let tensors = file_tensors(state, desc)?;
    let shape = [desc.n_head(), desc.head_size, desc.head_size];
    match format {
        Format::Safetensors => {
            let mut header = Map::new();
            let mut offset = 0usize;
            for (name, bytes) in &tensors {
                header.insert(
                    name.clone(),
                    json!({ "dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes.len()] }),
                );
                offset += bytes.len();
            }
            let json = serde_json::to_vec(&Value::Object(header))
                .map_err(|e| Error::invalid(e.to_string()))?;
            write_atomic(path, |w| {
                use std::io::Write;
                let io = write_err(path);
                w.write_all(&(json.len() as u64).to_le_bytes())
                    .map_err(&io)?;
                w.write_all(&json).map_err(&io)?;
                for (_, bytes) in &tensors {
                    w.write_all(bytes).map_err(&io)?;
                }
                Ok(())
            })
        }
        Format::Pth => {
            let entries: Vec<TensorEntry> = tensors
                .iter()
                .enumerate()
                .map(|(i, (name, _))| TensorEntry {
                    name,
                    storage: "FloatStorage",
                    key: i.to_string(),
                    shape: &shape,
                })
                .collect();
            let pkl = pickle::write_state_dict(&entries);
            write_atomic(path, |w| {
                let io = write_err(path);
                let start = w.written;
                let mut z = ZipWriter::new(w, start, false);
                z.add("archive/data.pkl", &pkl).map_err(&io)?;
                z.add("archive/byteorder", b"little").map_err(&io)?;
                for (i, (_, bytes)) in tensors.iter().enumerate() {
                    z.add(&format!("archive/data/{i}"), bytes).map_err(&io)?;
                }
                z.add("archive/version", b"3\n").map_err(&io)?;
                z.finish().map_err(&io)
            })
        }
        other => Err(Error::invalid(format!(
            "state files are written as safetensors or .pth, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{desc, SynthShape};

    fn random_state(d: &ModelDesc, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..d.state_len())
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rwkv-state-{}-{name}", std::process::id()))
    }

    fn tiny() -> ModelDesc {
        desc(SynthShape::parse("tiny").expect("tiny shape"))
    }

    #[test]
    fn round_trip_keeps_s_and_zeroes_the_shift_registers() {
        let d = tiny();
        let state = random_state(&d, 1);
        let (c, l) = (d.n_embd, d.layer_state_len());
        for (format, ext) in [(Format::Safetensors, "st"), (Format::Pth, "pth")] {
            let path = tmp(&format!("rt.{ext}"));
            write_state_file(&path, &state, &d, format).unwrap();
            let back = load_state_file(&path, &d).unwrap();
            std::fs::remove_file(&path).ok();
            assert_eq!(back.len(), state.len());
            for i in 0..d.n_layer {
                assert!(back[i * l..i * l + 2 * c].iter().all(|&v| v == 0.0));
                assert_eq!(
                    back[i * l + 2 * c..(i + 1) * l],
                    state[i * l + 2 * c..(i + 1) * l]
                );
            }
        }
    }

    /// The file's tensor is the transpose of S per head (RWKV-Runner's `.transpose(1, 2)`):
    /// read the written bytes back through the plain safetensors parser and compare by index.
    #[test]
    fn file_orientation_is_s_transposed() {
        let d = tiny();
        let state = random_state(&d, 2);
        let path = tmp("orient.st");
        write_state_file(&path, &state, &d, Format::Safetensors).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).ok();
        let entries = safetensors::parse_header(&path, &bytes).unwrap();
        let e = entries
            .iter()
            .find(|e| e.name == "blocks.1.att.time_state")
            .unwrap();
        let n = d.head_size;
        let at = |h: usize, a: usize, b: usize| {
            let o = e.range.start + 4 * ((h * n + a) * n + b);
            f32::from_le_bytes(bytes[o..o + 4].try_into().unwrap())
        };
        let s = |h: usize, p: usize, q: usize| {
            state[d.layer_state_len() + 2 * d.n_embd + (h * n + p) * n + q]
        };
        let head = d.n_head() - 1;
        for (p, q) in [(0, 1), (3, 7), (n - 1, 2)] {
            assert_eq!(at(head, q, p), s(head, p, q));
            assert_ne!(at(head, p, q), s(head, p, q));
        }
    }

    #[test]
    fn a_file_for_another_model_is_refused_naming_both_shapes() {
        let d = tiny();
        let path = tmp("other.st");
        write_state_file(&path, &random_state(&d, 3), &d, Format::Safetensors).unwrap();
        let mut fewer_layers = d.clone();
        fewer_layers.n_layer -= 1;
        let e = load_state_file(&path, &fewer_layers)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("does not match") && e.contains(&format!("{} layers", d.n_layer)),
            "{e}"
        );
        let mut wider = d.clone();
        wider.n_embd += wider.head_size;
        let e = load_state_file(&path, &wider).unwrap_err().to_string();
        let (h, n) = (d.n_head(), d.head_size);
        assert!(e.contains(&format!("[{h}, {n}, {n}]")), "{e}");
        assert!(e.contains(&format!("[{}, {n}, {n}]", h + 1)), "{e}");
        std::fs::remove_file(&path).ok();
        // A file with no time_state tensors at all.
        let path = tmp("empty.st");
        std::fs::write(&path, [&2u64.to_le_bytes()[..], b"{}"].concat()).unwrap();
        let e = load_state_file(&path, &d).unwrap_err().to_string();
        assert!(e.contains("not a state file"), "{e}");
        std::fs::remove_file(&path).ok();
    }
}
