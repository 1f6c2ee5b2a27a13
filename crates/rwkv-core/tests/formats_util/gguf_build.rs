//! A GGUF writer for tests, independent of the library's, where every field can be given a
//! value no honest writer would produce (hostile counts, lengths, types, offsets, alignment).
//! [`random_container`] draws a valid file; tests then break one field of it.

use super::Rng;

/// One metadata pair, raw: the key's bytes (maybe not UTF-8), the type id as written, and the
/// value's bytes exactly as they follow the type.
#[derive(Clone, Debug)]
pub struct KvSpec {
    pub key: Vec<u8>,
    /// Written instead of `key.len()` when set.
    pub key_len: Option<u64>,
    pub ty: u32,
    pub value: Vec<u8>,
}

/// One tensor info; `data` is what its window of the data section holds.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: Vec<u8>,
    /// Written instead of `name.len()` when set.
    pub name_len: Option<u64>,
    /// Written instead of `dims.len()` when set.
    pub n_dims: Option<u32>,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A whole file. `alignment` is where the builder pads the data section to (what the file's
/// `general.alignment`, or 32, says when the spec is honest).
#[derive(Clone, Debug)]
pub struct GgufSpec {
    pub magic: [u8; 4],
    pub version: u32,
    /// Written instead of the true counts when set.
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
    pub kvs: Vec<KvSpec>,
    pub tensors: Vec<TensorSpec>,
    pub alignment: u64,
}

/// Value type ids (GGUF spec).
pub mod ty {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// (ggml type id, values per block, bytes per block) of the types the reader knows.
pub const GGML_TYPES: [(u32, u64, u64); 21] = [
    (0, 1, 4),
    (1, 1, 2),
    (2, 32, 18),
    (3, 32, 20),
    (6, 32, 22),
    (7, 32, 24),
    (8, 32, 34),
    (9, 32, 36),
    (10, 256, 84),
    (11, 256, 110),
    (12, 256, 144),
    (13, 256, 176),
    (14, 256, 210),
    (15, 256, 292),
    (24, 1, 1),
    (25, 1, 2),
    (26, 1, 4),
    (27, 1, 8),
    (28, 1, 8),
    (30, 1, 2),
    (39, 32, 17),
];

pub fn string_bytes(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

pub fn kv(key: &str, ty: u32, value: Vec<u8>) -> KvSpec {
    KvSpec {
        key: key.as_bytes().to_vec(),
        key_len: None,
        ty,
        value,
    }
}

/// The value bytes of an array of `elem_ty` holding `elems` (each already encoded).
pub fn array_bytes(elem_ty: u32, count: u64, elems: &[u8]) -> Vec<u8> {
    let mut b = elem_ty.to_le_bytes().to_vec();
    b.extend_from_slice(&count.to_le_bytes());
    b.extend_from_slice(elems);
    b
}

impl GgufSpec {
    /// The file's bytes: header, metadata, tensor infos, padding to `alignment`, then each
    /// tensor's `data` at its `offset` (gaps zero-filled).
    pub fn build(&self) -> Vec<u8> {
        let mut b = self.magic.to_vec();
        b.extend_from_slice(&self.version.to_le_bytes());
        let n_tensors = self.n_tensors.unwrap_or(self.tensors.len() as u64);
        b.extend_from_slice(&n_tensors.to_le_bytes());
        let n_kv = self.n_kv.unwrap_or(self.kvs.len() as u64);
        b.extend_from_slice(&n_kv.to_le_bytes());
        for kv in &self.kvs {
            let len = kv.key_len.unwrap_or(kv.key.len() as u64);
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&kv.key);
            b.extend_from_slice(&kv.ty.to_le_bytes());
            b.extend_from_slice(&kv.value);
        }
        for t in &self.tensors {
            let len = t.name_len.unwrap_or(t.name.len() as u64);
            b.extend_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&t.name);
            let n_dims = t.n_dims.unwrap_or(t.dims.len() as u32);
            b.extend_from_slice(&n_dims.to_le_bytes());
            for d in &t.dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&t.ggml_type.to_le_bytes());
            b.extend_from_slice(&t.offset.to_le_bytes());
        }
        let align = self.alignment.max(1) as usize;
        b.resize(b.len().div_ceil(align) * align, 0);
        let data_start = b.len();
        for t in &self.tensors {
            // Offsets the builder cannot honour (hostile ones) are written but get no data.
            let Some(start) = usize::try_from(t.offset)
                .ok()
                .and_then(|o| o.checked_add(data_start))
                .filter(|&s| s <= data_start + (64 << 20))
            else {
                continue;
            };
            let end = start + t.data.len();
            if b.len() < end {
                b.resize(end, 0);
            }
            b[start..end].copy_from_slice(&t.data);
        }
        b
    }
}

/// A random scalar or string value: (type, bytes).
fn random_value(rng: &mut Rng, depth: usize) -> (u32, Vec<u8>) {
    let t = (rng.next_u64() % 13) as u32;
    let t = if t == ty::ARRAY && depth >= 2 {
        ty::STRING
    } else {
        t
    };
    let bytes = match t {
        ty::U8 | ty::I8 => rng.bytes(1),
        ty::BOOL => vec![(rng.next_u64() % 2) as u8],
        ty::U16 | ty::I16 => rng.bytes(2),
        ty::U32 | ty::I32 | ty::F32 => rng.bytes(4),
        ty::U64 | ty::I64 | ty::F64 => rng.bytes(8),
        ty::STRING => {
            let n = (rng.next_u64() % 24) as usize;
            let s: Vec<u8> = (0..n).map(|_| b'a' + (rng.next_u64() % 26) as u8).collect();
            string_bytes(&s)
        }
        _ => {
            // An array of up to 8 values of one random type (arrays nest at most twice here).
            let (elem_ty, _) = random_value(rng, depth + 1);
            let n = rng.next_u64() % 9;
            let mut elems = Vec::new();
            for _ in 0..n {
                let (got_ty, bytes) = loop {
                    let v = random_value(rng, depth + 1);
                    if v.0 == elem_ty {
                        break v;
                    }
                };
                debug_assert_eq!(got_ty, elem_ty);
                // Array elements of type array carry their own header, as values do.
                elems.extend_from_slice(&bytes);
            }
            array_bytes(elem_ty, n, &elems)
        }
    };
    (t, bytes)
}

/// A valid container: 0-12 random metadata pairs of every type (arrays nested up to twice),
/// sometimes a `general.alignment`, and 1-6 tensors of random known types and small shapes
/// with random data, each at an aligned offset.
pub fn random_container(rng: &mut Rng) -> GgufSpec {
    let mut kvs = Vec::new();
    for i in 0..rng.next_u64() % 13 {
        let (t, value) = random_value(rng, 0);
        kvs.push(kv(&format!("test.key{i}"), t, value));
    }
    let alignment = match rng.next_u64() % 4 {
        0 => 32,
        1 => 8,
        2 => 64,
        _ => 256,
    };
    if alignment != 32 || rng.next_u64().is_multiple_of(2) {
        let at = (rng.next_u64() as usize) % (kvs.len() + 1);
        kvs.insert(
            at,
            kv(
                "general.alignment",
                ty::U32,
                (alignment as u32).to_le_bytes().to_vec(),
            ),
        );
    }
    let mut tensors = Vec::new();
    let mut next = 0u64;
    for i in 0..1 + rng.next_u64() % 6 {
        let (ggml_type, block_elems, block_bytes) =
            GGML_TYPES[(rng.next_u64() as usize) % GGML_TYPES.len()];
        let n_dims = 1 + (rng.next_u64() % 4) as usize;
        let mut dims = vec![block_elems * (1 + rng.next_u64() % 2)];
        for _ in 1..n_dims {
            dims.push(1 + rng.next_u64() % 3);
        }
        let n_bytes = dims[0] / block_elems * block_bytes * dims[1..].iter().product::<u64>();
        tensors.push(TensorSpec {
            name: format!("t{i}.weight").into_bytes(),
            name_len: None,
            n_dims: None,
            dims,
            ggml_type,
            offset: next,
            data: rng.bytes(n_bytes as usize),
        });
        next = (next + n_bytes).div_ceil(alignment) * alignment;
    }
    GgufSpec {
        magic: *b"GGUF",
        version: if rng.next_u64().is_multiple_of(4) {
            2
        } else {
            3
        },
        n_tensors: None,
        n_kv: None,
        kvs,
        tensors,
        alignment,
    }
}
