//! GGUF v2/v3 (layout: ../shared/docs/gguf-formats.md §1): memory-mapped, every count, length and
//! offset validated against the file before anything is allocated. [`GgufFile`] gives the
//! metadata (for `rwkv info`); [`read_model`] maps llama.cpp's `rwkv7` tensors onto the canonical
//! model; [`write`] produces a file llama.cpp can load.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::formats::canonical::{split_fused_mixes, RawTensor};
use crate::formats::{
    convert_tensor, make_tensor, map_file, mapped, plain_elem_bytes, plain_to_f32, write_atomic,
    write_err,
};
use crate::formats::{from_source, ByteReader, CountingWriter, HeaderRead, SourceReader};
use crate::model::v7;
use crate::model::{
    ByteSource, FileBytes, LoraRanks, Model, ModelDesc, RwkvVersion, Tensor, TensorBytes,
};
use crate::tokenizer::Vocab;

/// Tensor data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Arrays of arrays deeper than this are refused: real files nest at most once, and the limit
/// bounds the parser's recursion.
const MAX_ARRAY_NESTING: usize = 8;
/// The spec limits keys to 65535 bytes.
const MAX_KEY_BYTES: u64 = 65535;
/// ggml's own limit is 64 bytes; allow some slack for other writers but keep names small.
const MAX_TENSOR_NAME_BYTES: u64 = 1024;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Alignment above 1 GiB is certainly corrupt (and would make padding arithmetic absurd).
const MAX_ALIGNMENT: u64 = 1 << 30;
/// Largest header (metadata and tensor infos, everything before the data) read from a
/// [`ByteSource`]. The biggest real ones, a 256k-token vocabulary with its merges, take a few
/// tens of MB; parsed, a header takes several times its bytes of (wasm) memory, whose whole
/// budget streaming exists to spare, so anything larger is refused as corrupt or hostile.
pub const MAX_STREAMED_HEADER_BYTES: u64 = 256 << 20;
/// Entries reserved up front for metadata and tensor infos; counts from the file only bound
/// what the file can hold, and a small reserve keeps a bad count from allocating it all.
const RESERVE_ENTRIES: usize = 4096;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(GgufArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array, stored typed (a 32000-entry i32 array is one `Vec<i32>`).
#[derive(Clone, Debug, PartialEq)]
pub enum GgufArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    Array(Vec<GgufArray>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl GgufValue {
    /// Any non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&GgufArray> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// GGUF value type id.
    fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::Str(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }
}

impl GgufArray {
    pub fn len(&self) -> usize {
        match self {
            GgufArray::U8(v) => v.len(),
            GgufArray::I8(v) => v.len(),
            GgufArray::U16(v) => v.len(),
            GgufArray::I16(v) => v.len(),
            GgufArray::U32(v) => v.len(),
            GgufArray::I32(v) => v.len(),
            GgufArray::F32(v) => v.len(),
            GgufArray::Bool(v) => v.len(),
            GgufArray::Str(v) => v.len(),
            GgufArray::Array(v) => v.len(),
            GgufArray::U64(v) => v.len(),
            GgufArray::I64(v) => v.len(),
            GgufArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element type name as GGUF calls it.
    pub fn elem_type_name(&self) -> &'static str {
        VALUE_TYPE_NAMES[self.elem_type_id() as usize]
    }

    fn elem_type_id(&self) -> u32 {
        match self {
            GgufArray::U8(_) => 0,
            GgufArray::I8(_) => 1,
            GgufArray::U16(_) => 2,
            GgufArray::I16(_) => 3,
            GgufArray::U32(_) => 4,
            GgufArray::I32(_) => 5,
            GgufArray::F32(_) => 6,
            GgufArray::Bool(_) => 7,
            GgufArray::Str(_) => 8,
            GgufArray::Array(_) => 9,
            GgufArray::U64(_) => 10,
            GgufArray::I64(_) => 11,
            GgufArray::F64(_) => 12,
        }
    }

    /// The first `n` elements, printed.
    fn head(&self, n: usize) -> Vec<String> {
        fn h<T: fmt::Debug>(v: &[T], n: usize) -> Vec<String> {
            v.iter().take(n).map(|x| format!("{x:?}")).collect()
        }
        match self {
            GgufArray::U8(v) => h(v, n),
            GgufArray::I8(v) => h(v, n),
            GgufArray::U16(v) => h(v, n),
            GgufArray::I16(v) => h(v, n),
            GgufArray::U32(v) => h(v, n),
            GgufArray::I32(v) => h(v, n),
            GgufArray::F32(v) => h(v, n),
            GgufArray::Bool(v) => h(v, n),
            GgufArray::Str(v) => v.iter().take(n).map(|s| quote_short(s)).collect(),
            GgufArray::Array(v) => v
                .iter()
                .take(n)
                .map(|a| format!("[{}; {}]", a.elem_type_name(), a.len()))
                .collect(),
            GgufArray::U64(v) => h(v, n),
            GgufArray::I64(v) => h(v, n),
            GgufArray::F64(v) => h(v, n),
        }
    }
}

const VALUE_TYPE_NAMES: [&str; 13] = [
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

fn quote_short(s: &str) -> String {
    const MAX: usize = 60;
    if s.chars().count() > MAX {
        let cut: String = s.chars().take(MAX).collect();
        format!("{:?}…", cut)
    } else {
        format!("{s:?}")
    }
}

/// One-line rendering for `rwkv info` (long strings and arrays are abbreviated).
impl fmt::Display for GgufValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GgufValue::U8(v) => write!(f, "{v}"),
            GgufValue::I8(v) => write!(f, "{v}"),
            GgufValue::U16(v) => write!(f, "{v}"),
            GgufValue::I16(v) => write!(f, "{v}"),
            GgufValue::U32(v) => write!(f, "{v}"),
            GgufValue::I32(v) => write!(f, "{v}"),
            GgufValue::F32(v) => write!(f, "{v}"),
            GgufValue::Bool(v) => write!(f, "{v}"),
            GgufValue::Str(s) => f.write_str(&quote_short(s)),
            GgufValue::Array(a) => {
                let head = a.head(4);
                let more = if a.len() > head.len() { ", …" } else { "" };
                write!(
                    f,
                    "[{}; {}] [{}{more}]",
                    a.elem_type_name(),
                    a.len(),
                    head.join(", ")
                )
            }
            GgufValue::U64(v) => write!(f, "{v}"),
            GgufValue::I64(v) => write!(f, "{v}"),
            GgufValue::F64(v) => write!(f, "{v}"),
        }
    }
}

/// Block geometry of a ggml type id: (name, values per block, bytes per block). Includes types
/// we cannot run, so that their files still parse for `rwkv info`.
fn ggml_type(id: u32) -> Option<(&'static str, u64, u64)> {
    Some(match id {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        30 => ("BF16", 1, 2),
        39 => ("MXFP4", 32, 17),
        _ => return None,
    })
}

/// One tensor's entry in the tensor-info section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgufTensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (innermost); torch shape is the reverse.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// ggml's name of the type ("Q4_K", ...).
    pub type_name: &'static str,
    /// The type as a [`DType`], when we can run it.
    pub dtype: Option<DType>,
    /// Offset from the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

impl GgufTensorInfo {
    /// Row-major shape, outermost first (torch order).
    pub fn shape(&self) -> Vec<usize> {
        // Each dim was checked to fit usize while parsing (the byte count does).
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Where a [`GgufFile`]'s tensor data lies.
enum Backing {
    Map(Arc<FileBytes>),
    Source(Arc<dyn ByteSource>),
}

/// A parsed GGUF file: header, metadata, tensor infos, and the memory map (or byte source) they
/// point into.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_start: u64,
    pub kv: Vec<(String, GgufValue)>,
    pub tensors: Vec<GgufTensorInfo>,
    backing: Backing,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("kv", &self.kv.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps and parses `path`, validating all of it (but reading no tensor data).
    pub fn open(path: &Path) -> Result<GgufFile> {
        let map = map_file(path)?;
        parse(path, map)
    }

    /// Parses the header of a GGUF read through `src` (at most [`MAX_STREAMED_HEADER_BYTES`],
    /// in bounded reads); tensor data stays in the source.
    pub fn open_source(path: &Path, src: Arc<dyn ByteSource>) -> Result<GgufFile> {
        let mut r = SourceReader::new(path, src.as_ref(), MAX_STREAMED_HEADER_BYTES);
        let file_len = r.file_len();
        let header = parse_header(&mut r, file_len)?;
        Ok(header.into_file(path, Backing::Source(src)))
    }

    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of `t`: a window of the map or of the source (ranges were checked at parse
    /// time, against a mapped file's length, which fits usize).
    pub fn tensor_data(&self, t: &GgufTensorInfo) -> TensorBytes {
        let start = self.data_start + t.offset;
        match &self.backing {
            Backing::Map(map) => mapped(map, start as usize..(start + t.n_bytes) as usize),
            Backing::Source(src) => from_source(src, start..start + t.n_bytes),
        }
    }

    /// The file's total size in bytes.
    pub fn file_len(&self) -> u64 {
        match &self.backing {
            Backing::Map(map) => map.len() as u64,
            Backing::Source(src) => src.len(),
        }
    }

    /// Reads the llama.cpp `rwkv7` tensors into the canonical model.
    pub fn to_model(&self) -> Result<Model> {
        to_model(self)
    }
}

fn read_string<R: HeaderRead>(r: &mut R, max: u64, what: &str) -> Result<String> {
    let n = r.u64(what)?;
    if n > max {
        return Err(r.err(format!("{what} is {n} bytes long, the limit is {max}")));
    }
    let b = r.take(n, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| r.err(format!("{what} is not valid UTF-8")))
}

/// Least bytes one element of value type `ty` takes in a file.
fn min_value_bytes(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

fn read_value<R: HeaderRead>(r: &mut R, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
    let what = format!("value of '{key}'");
    Ok(match ty {
        0 => GgufValue::U8(r.u8(&what)?),
        1 => GgufValue::I8(r.u8(&what)? as i8),
        2 => GgufValue::U16(r.u16(&what)?),
        3 => GgufValue::I16(r.u16(&what)? as i16),
        4 => GgufValue::U32(r.u32(&what)?),
        5 => GgufValue::I32(r.i32(&what)?),
        6 => GgufValue::F32(f32::from_bits(r.u32(&what)?)),
        7 => GgufValue::Bool(read_bool(r, &what)?),
        8 => GgufValue::Str(read_value_string(r, &what)?),
        9 => GgufValue::Array(read_array(r, key, depth + 1)?),
        10 => GgufValue::U64(r.u64(&what)?),
        11 => GgufValue::I64(r.i64(&what)?),
        12 => GgufValue::F64(f64::from_bits(r.u64(&what)?)),
        _ => return Err(r.err(format!("'{key}' has unknown value type {ty}"))),
    })
}

fn read_bool<R: HeaderRead>(r: &mut R, what: &str) -> Result<bool> {
    match r.u8(what)? {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(r.err(format!("{what}: bool byte is {b}, not 0 or 1"))),
    }
}

/// String values may come from tokenizers that wrote raw bytes; keep them readable.
fn read_value_string<R: HeaderRead>(r: &mut R, what: &str) -> Result<String> {
    let n = r.u64(what)?;
    let b = r.take(n, what)?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

fn read_array<R: HeaderRead>(r: &mut R, key: &str, depth: usize) -> Result<GgufArray> {
    if depth > MAX_ARRAY_NESTING {
        return Err(r.err(format!(
            "'{key}' nests arrays deeper than {MAX_ARRAY_NESTING}"
        )));
    }
    let what = format!("array '{key}'");
    let ty = r.u32(&what)?;
    let count = r.u64(&what)?;
    let min = min_value_bytes(ty)
        .ok_or_else(|| r.err(format!("'{key}' has unknown array element type {ty}")))?;
    if count > r.left() / min {
        return Err(r.err(format!(
            "array '{key}' claims {count} elements, more than the {} bytes left can hold",
            r.left()
        )));
    }
    let n = count as usize;
    macro_rules! many {
        ($variant:ident, $read:expr) => {{
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                v.push($read);
            }
            GgufArray::$variant(v)
        }};
    }
    Ok(match ty {
        0 => many!(U8, r.u8(&what)?),
        1 => many!(I8, r.u8(&what)? as i8),
        2 => many!(U16, r.u16(&what)?),
        3 => many!(I16, r.u16(&what)? as i16),
        4 => many!(U32, r.u32(&what)?),
        5 => many!(I32, r.i32(&what)?),
        6 => many!(F32, f32::from_bits(r.u32(&what)?)),
        7 => many!(Bool, read_bool(r, &what)?),
        8 => many!(Str, read_value_string(r, &what)?),
        9 => many!(Array, read_array(r, key, depth + 1)?),
        10 => many!(U64, r.u64(&what)?),
        11 => many!(I64, r.i64(&what)?),
        _ => many!(F64, f64::from_bits(r.u64(&what)?)),
    })
}

pub(crate) fn parse(path: &Path, map: Arc<FileBytes>) -> Result<GgufFile> {
    let mut r = ByteReader::new(path, &map);
    let header = parse_header(&mut r, map.len() as u64)?;
    Ok(header.into_file(path, Backing::Map(map)))
}

/// What [`parse_header`] reads: a [`GgufFile`] without its backing.
struct Header {
    version: u32,
    alignment: u64,
    data_start: u64,
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<GgufTensorInfo>,
}

impl Header {
    fn into_file(self, path: &Path, backing: Backing) -> GgufFile {
        GgufFile {
            path: path.to_path_buf(),
            version: self.version,
            alignment: self.alignment,
            data_start: self.data_start,
            kv: self.kv,
            tensors: self.tensors,
            backing,
        }
    }
}

/// Reads and validates everything before the tensor data, and checks every tensor's data lies
/// inside the `file_len` bytes of the file without overlapping another.
fn parse_header<R: HeaderRead>(r: &mut R, file_len: u64) -> Result<Header> {
    let magic = r.array::<4>("magic")?;
    if &magic != b"GGUF" {
        return Err(r.err(format!("not a GGUF file (magic {magic:02x?})")));
    }
    let version = r.u32("version")?;
    match version {
        2 | 3 => {}
        1 => return Err(r.err("GGUF v1 is not supported (only v2 and v3); re-convert the model")),
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(r.err("big-endian GGUF files are not supported"));
        }
        v => return Err(r.err(format!("unsupported GGUF version {v} (only v2 and v3)"))),
    }
    let tensor_count = r.u64("tensor count")?;
    let kv_count = r.u64("metadata count")?;
    // A key-value pair takes at least 13 bytes (empty key, type, 1-byte value).
    if kv_count > r.left() / 13 {
        return Err(r.err(format!(
            "metadata count {kv_count} is larger than the file can hold"
        )));
    }
    let mut kv = Vec::with_capacity((kv_count as usize).min(RESERVE_ENTRIES));
    let mut keys = HashSet::new();
    for _ in 0..kv_count {
        let key = read_string(r, MAX_KEY_BYTES, "metadata key")?;
        let ty = r.u32("metadata value type")?;
        let value = read_value(r, ty, &key, 0)?;
        if !keys.insert(key.clone()) {
            return Err(r.err(format!("metadata key '{key}' appears twice")));
        }
        kv.push((key, value));
    }
    let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
            _ => {
                return Err(r.err(format!(
                    "general.alignment {v} is not a power of two up to 1 GiB"
                )))
            }
        },
    };
    // A tensor info takes at least 32 bytes (empty name, 1 dim, type, offset).
    if tensor_count > r.left() / 32 {
        return Err(r.err(format!(
            "tensor count {tensor_count} is larger than the file can hold"
        )));
    }
    let mut tensors = Vec::with_capacity((tensor_count as usize).min(RESERVE_ENTRIES));
    let mut names = HashSet::new();
    for _ in 0..tensor_count {
        let name = read_string(r, MAX_TENSOR_NAME_BYTES, "tensor name")?;
        let info = read_tensor_info(r, name, alignment)?;
        if !names.insert(info.name.clone()) {
            return Err(r.err(format!("tensor '{}' appears twice", info.name)));
        }
        tensors.push(info);
    }
    let info_end = r.offset();
    let data_start = info_end.div_ceil(alignment) * alignment;
    for t in &tensors {
        let end = data_start
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => {
                return Err(r.err(format!(
                    "tensor '{}' data (offset {}, {} bytes) runs past the end of the file ({file_len} bytes, data at {data_start})",
                    t.name, t.offset, t.n_bytes
                )))
            }
        }
    }
    let mut by_offset: Vec<&GgufTensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| (t.offset, t.n_bytes));
    for w in by_offset.windows(2) {
        if w[1].offset < w[0].offset + w[0].n_bytes {
            return Err(r.err(format!(
                "tensors '{}' and '{}' overlap",
                w[0].name, w[1].name
            )));
        }
    }
    Ok(Header {
        version,
        alignment,
        data_start,
        kv,
        tensors,
    })
}

fn read_tensor_info<R: HeaderRead>(
    r: &mut R,
    name: String,
    alignment: u64,
) -> Result<GgufTensorInfo> {
    let n_dims = r.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(r.err(format!(
            "tensor '{name}' has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(r.u64("tensor dimension")?);
    }
    let ggml_type_id = r.u32("tensor type")?;
    let offset = r.u64("tensor offset")?;
    let (type_name, block_elems, block_bytes) = ggml_type(ggml_type_id).ok_or_else(|| {
        r.err(format!(
            "tensor '{name}' has unknown ggml type {ggml_type_id}"
        ))
    })?;
    if dims[0] % block_elems != 0 {
        return Err(r.err(format!(
            "tensor '{name}' rows of {} values are not whole {type_name} blocks of {block_elems}",
            dims[0]
        )));
    }
    let too_big = || r.err(format!("tensor '{name}' dimensions {dims:?} are too large"));
    let rows = dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(too_big)?;
    let n_bytes = (dims[0] / block_elems)
        .checked_mul(block_bytes)
        .and_then(|b| b.checked_mul(rows))
        .filter(|&b| usize::try_from(b).is_ok() && dims.iter().all(|&d| usize::try_from(d).is_ok()))
        .ok_or_else(too_big)?;
    if offset % alignment != 0 {
        return Err(r.err(format!(
            "tensor '{name}' offset {offset} is not a multiple of the alignment {alignment}"
        )));
    }
    let dtype = DType::from_ggml_id(ggml_type_id);
    Ok(GgufTensorInfo {
        name,
        dims,
        ggml_type: ggml_type_id,
        type_name,
        dtype,
        offset,
        n_bytes,
    })
}

// ---------------------------------------------------------------------------------------------
// llama.cpp rwkv7 names ↔ canonical names.

/// Per-block names: (llama.cpp suffix after "blk.N.", canonical suffix after "blocks.N.").
const BLOCK_NAMES: [(&str, &str); 28] = [
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

const GLOBAL_NAMES: [(&str, &str); 6] = [
    ("token_embd.weight", "emb.weight"),
    ("token_embd_norm.weight", "blocks.0.ln0.weight"),
    ("token_embd_norm.bias", "blocks.0.ln0.bias"),
    ("output_norm.weight", "ln_out.weight"),
    ("output_norm.bias", "ln_out.bias"),
    ("output.weight", "head.weight"),
];

const LERP_FUSED: &str = "time_mix_lerp_fused.weight";

/// Canonical tensors stored squeezed to `[C]` in GGUF.
fn is_vector(canon_suffix: &str) -> bool {
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

fn to_model(g: &GgufFile) -> Result<Model> {
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
            vec![shape.iter().product()]
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

/// Reads a llama.cpp `rwkv7` GGUF into the canonical model.
pub fn read_model(path: &Path) -> Result<Model> {
    GgufFile::open(path)?.to_model()
}

/// [`read_model`] over bytes already in memory; `path` names them in errors.
pub fn read_model_from(path: &Path, map: Arc<FileBytes>) -> Result<Model> {
    parse(path, map)?.to_model()
}

/// [`read_model`] through a byte source: the header is read, tensors stay in the source
/// ([`TensorBytes::Source`]); `path` names it in errors.
pub fn read_model_source(path: &Path, src: Arc<dyn ByteSource>) -> Result<Model> {
    GgufFile::open_source(path, src)?.to_model()
}

// ---------------------------------------------------------------------------------------------
// Writer.

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

/// A tensor to write: llama.cpp name, ggml dims, the type it is written as, where its bytes come
/// from.
struct OutTensor<'a> {
    name: String,
    dims: Vec<u64>,
    dtype: DType,
    bytes: u64,
    data: OutData<'a>,
}

/// An output tensor's bytes: built here (the fused mixes) or a model tensor, read (and converted
/// when its type changes) only when its turn to be written comes, so one tensor at a time is in
/// memory.
enum OutData<'a> {
    Built(Vec<u8>),
    Model {
        canonical: String,
        tensor: &'a Tensor,
    },
}

fn out_tensor<'a>(
    path: &Path,
    name: String,
    canonical: String,
    t: &'a Tensor,
    squeeze: bool,
    dtype: DType,
) -> Result<OutTensor<'a>> {
    let dims = if squeeze {
        vec![t.n_elements() as u64]
    } else {
        t.shape.iter().rev().map(|&d| d as u64).collect()
    };
    let bytes = dtype.tensor_bytes(&t.shape).ok_or_else(|| {
        Error::model(
            path,
            format!(
                "tensor '{canonical}' {:?} cannot be stored as {dtype}: its rows of {} values are not whole blocks of {}",
                t.shape,
                t.shape.last().copied().unwrap_or(0),
                dtype.block_elems()
            ),
        )
    })? as u64;
    Ok(OutTensor {
        name,
        dims,
        dtype,
        bytes,
        data: OutData::Model {
            canonical,
            tensor: t,
        },
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
        bytes: bytes.len() as u64,
        data: OutData::Built(bytes),
    })
}

fn u32_kv(key: &str, v: usize) -> (String, GgufValue) {
    (key.to_string(), GgufValue::U32(v as u32))
}

/// Writes `model` as a llama.cpp-compatible `rwkv7` GGUF v3 (alignment 32, llama.cpp tensor
/// names, dummy layer-0 `v0/v1/v2` as llama.cpp expects, tokenizer tokens when the model has a
/// vocabulary).
pub fn write(model: &Model, path: &Path) -> Result<()> {
    write_with_types(model, path, &|_, t| t.dtype, None)
}

/// [`write`], storing each tensor as `tensor_type(canonical name, tensor)` says: tensors whose
/// type changes are converted (dequantized, then quantized row by row) one at a time while the
/// file is written, so memory holds about one tensor, not the converted model. `progress` gets
/// (bytes of tensor data written, bytes in all). The fused token-shift mixes keep their type.
pub fn write_with_types(
    model: &Model,
    path: &Path,
    tensor_type: &dyn Fn(&str, &Tensor) -> DType,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<()> {
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
    let src = model.source.as_path();
    let global = |ours: &str, canon: &str| -> Result<OutTensor> {
        let t = model.tensor(canon)?;
        out_tensor(
            src,
            ours.to_string(),
            canon.to_string(),
            t,
            false,
            tensor_type(canon, t),
        )
    };
    let mut out: Vec<OutTensor> = Vec::new();
    for (ours, canon) in GLOBAL_NAMES.iter().take(3) {
        out.push(global(ours, canon)?);
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
            let canonical = format!("blocks.{i}.{source}");
            let t = model.tensor(&canonical)?;
            let dtype = tensor_type(&canonical, t);
            out.push(out_tensor(
                src,
                format!("blk.{i}.{ours}"),
                canonical,
                t,
                is_vector(canon_suffix),
                dtype,
            )?);
        }
    }
    for (ours, canon) in GLOBAL_NAMES.iter().skip(3) {
        out.push(global(ours, canon)?);
    }

    let matrix_type = out
        .iter()
        .find(|t| t.name == "blk.0.time_mix_key.weight")
        .map_or(DType::F32, |t| t.dtype);
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
        next = (next + t.bytes).div_ceil(align) * align;
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
        let total: u64 = out.iter().map(|t| t.bytes).sum();
        let mut done = 0u64;
        for t in &out {
            let converted;
            let data = match &t.data {
                OutData::Built(b) => Cow::Borrowed(&b[..]),
                OutData::Model { tensor, .. } if tensor.dtype == t.dtype => tensor.data.read()?,
                OutData::Model { canonical, tensor } => {
                    converted = convert_tensor(src, canonical, tensor, t.dtype)?;
                    converted.data.read()?
                }
            };
            if data.len() as u64 != t.bytes {
                return Err(Error::model(
                    src,
                    format!(
                        "tensor '{}' has {} bytes, {} expected",
                        t.name,
                        data.len(),
                        t.bytes
                    ),
                ));
            }
            w.write_all(&data).map_err(&io)?;
            w.pad_to(align).map_err(&io)?;
            done += t.bytes;
            if let Some(p) = progress {
                p(done, total);
            }
        }
        Ok(())
    })
}

/// Summary of a GGUF's tensors by type, e.g. {"F16": 9, "F32": 3}, for reports.
pub fn tensor_type_counts(g: &GgufFile) -> HashMap<&'static str, usize> {
    let mut m = HashMap::new();
    for t in &g.tensors {
        *m.entry(t.type_name).or_insert(0) += 1;
    }
    m
}
