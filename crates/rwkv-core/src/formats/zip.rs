//! A minimal zip reader and writer for PyTorch checkpoints: only STORED (uncompressed) entries,
//! so tensor data can be used in place from a memory map. Reads zip64. Every offset and size is
//! validated against the file; entries may not overlap each other or the central directory.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::formats::{ByteReader, HeaderRead};

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCD64_LOCATOR_SIG: u32 = 0x0706_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;
const EOCD_LEN: usize = 22;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
/// The extra-field id PyTorch uses for its alignment padding ("FB").
const PAD_EXTRA_ID: u16 = 0x4246;
/// Entry data alignment, as torch.save writes it.
pub const DATA_ALIGNMENT: u64 = 64;

/// One stored entry: its name and where its bytes lie in the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: String,
    pub data: Range<usize>,
    pub crc32: u32,
}

/// The entries of an archive, by name.
#[derive(Clone, Debug, Default)]
pub struct ZipIndex {
    pub entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

impl ZipIndex {
    pub fn get(&self, name: &str) -> Option<&ZipEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }
}

fn find_eocd(path: &Path, bytes: &[u8]) -> Result<usize> {
    if bytes.len() < EOCD_LEN {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes is too short for a zip archive",
                bytes.len()
            ),
        ));
    }
    // The record sits at the end, followed by a comment of at most 65535 bytes.
    let lowest = bytes.len().saturating_sub(EOCD_LEN + 65535);
    let mut pos = bytes.len() - EOCD_LEN;
    loop {
        if bytes[pos..pos + 4] == EOCD_SIG.to_le_bytes() {
            let comment = u16::from_le_bytes([bytes[pos + 20], bytes[pos + 21]]) as usize;
            if pos + EOCD_LEN + comment == bytes.len() {
                return Ok(pos);
            }
        }
        if pos == lowest {
            return Err(Error::format(
                path,
                "truncated or not a zip archive: no end-of-central-directory record",
            ));
        }
        pos -= 1;
    }
}

/// Parses the central directory of `bytes` (the whole archive).
pub fn read_index(path: &Path, bytes: &[u8]) -> Result<ZipIndex> {
    let eocd_pos = find_eocd(path, bytes)?;
    let mut r = ByteReader::new(path, &bytes[eocd_pos..]);
    r.u32("end of central directory")?;
    let disk = r.u16("disk number")?;
    let cd_disk = r.u16("central directory disk")?;
    let _entries_here = r.u16("entry count")?;
    let mut n_entries = u64::from(r.u16("entry count")?);
    let mut cd_size = u64::from(r.u32("central directory size")?);
    let mut cd_offset = u64::from(r.u32("central directory offset")?);
    if disk != 0 || cd_disk != 0 {
        return Err(Error::format(
            path,
            "multi-disk zip archives are not supported",
        ));
    }
    let mut cd_limit = eocd_pos; // the central directory ends before this
    if n_entries == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
        // zip64: a locator of 20 bytes just before the record points at the zip64 record.
        let loc_pos = eocd_pos.checked_sub(20).ok_or_else(|| {
            Error::format(
                path,
                "zip64 locator missing before end of central directory",
            )
        })?;
        let mut l = ByteReader::new(path, &bytes[loc_pos..eocd_pos]);
        if l.u32("zip64 locator")? != EOCD64_LOCATOR_SIG {
            return Err(Error::format(
                path,
                "zip64 locator missing before end of central directory",
            ));
        }
        l.u32("zip64 disk")?;
        let rec = l.u64("zip64 record offset")?;
        let rec = usize::try_from(rec)
            .ok()
            .filter(|&p| p < loc_pos)
            .ok_or_else(|| {
                Error::format(
                    path,
                    format!("zip64 end-of-central-directory offset {rec} is outside the file"),
                )
            })?;
        let mut z = ByteReader::new(path, &bytes[rec..loc_pos]);
        if z.u32("zip64 record")? != EOCD64_SIG {
            return Err(Error::format(
                path,
                "bad zip64 end-of-central-directory signature",
            ));
        }
        z.u64("zip64 record size")?;
        z.u16("version made by")?;
        z.u16("version needed")?;
        z.u32("disk number")?;
        z.u32("central directory disk")?;
        z.u64("entry count")?;
        n_entries = z.u64("entry count")?;
        cd_size = z.u64("central directory size")?;
        cd_offset = z.u64("central directory offset")?;
        cd_limit = rec;
    }
    let cd_end = cd_offset.checked_add(cd_size).filter(|&e| e <= cd_limit as u64).ok_or_else(|| {
        Error::format(
            path,
            format!("central directory (offset {cd_offset}, {cd_size} bytes) lies outside the archive"),
        )
    })?;
    if n_entries > cd_size / CENTRAL_LEN as u64 {
        return Err(Error::format(
            path,
            format!("zip claims {n_entries} entries, more than its central directory holds"),
        ));
    }
    let cd = &bytes[cd_offset as usize..cd_end as usize];
    let mut r = ByteReader::new(path, cd);
    let mut index = ZipIndex::default();
    let mut spans: Vec<(Range<usize>, usize)> = Vec::with_capacity(n_entries as usize);
    for _ in 0..n_entries {
        let entry = read_central_entry(path, &mut r, bytes, cd_offset as usize)?;
        if index.by_name.contains_key(&entry.0.name) {
            return Err(Error::format(
                path,
                format!("zip entry '{}' appears twice", entry.0.name),
            ));
        }
        index
            .by_name
            .insert(entry.0.name.clone(), index.entries.len());
        spans.push((entry.1, index.entries.len()));
        index.entries.push(entry.0);
    }
    spans.sort_by_key(|s| (s.0.start, s.0.end));
    for w in spans.windows(2) {
        if w[1].0.start < w[0].0.end {
            return Err(Error::format(
                path,
                format!(
                    "zip entries '{}' and '{}' overlap",
                    index.entries[w[0].1].name, index.entries[w[1].1].name
                ),
            ));
        }
    }
    Ok(index)
}

/// One central-directory record; returns the entry and the span of its local header + data.
fn read_central_entry(
    path: &Path,
    r: &mut ByteReader,
    bytes: &[u8],
    cd_start: usize,
) -> Result<(ZipEntry, Range<usize>)> {
    if r.u32("central directory entry")? != CENTRAL_SIG {
        return Err(r.err(format!(
            "bad central directory signature at offset {}",
            cd_start + r.pos() - 4
        )));
    }
    r.u16("version made by")?;
    r.u16("version needed")?;
    let flags = r.u16("flags")?;
    let method = r.u16("compression method")?;
    r.u16("time")?;
    r.u16("date")?;
    let crc32 = r.u32("crc32")?;
    let mut comp = u64::from(r.u32("compressed size")?);
    let mut size = u64::from(r.u32("size")?);
    let name_len = r.u16("name length")?;
    let extra_len = r.u16("extra length")?;
    let comment_len = r.u16("comment length")?;
    r.u16("disk")?;
    r.u16("internal attributes")?;
    r.u32("external attributes")?;
    let mut local = u64::from(r.u32("local header offset")?);
    let name_b = r.bytes(name_len.into(), "entry name")?;
    let name = String::from_utf8(name_b.to_vec())
        .map_err(|_| r.err("zip entry name is not valid UTF-8"))?;
    let extra = r.bytes(extra_len.into(), "extra field")?;
    r.bytes(comment_len.into(), "entry comment")?;
    // zip64 extra: the fields that overflowed, in this order.
    let mut e = ByteReader::new(path, extra);
    while e.remaining() >= 4 {
        let id = e.u16("extra id")?;
        let len = e.u16("extra length")?;
        let body = e.bytes(len.into(), "extra field")?;
        if id == ZIP64_EXTRA_ID {
            let mut z = ByteReader::new(path, body);
            if size == 0xFFFF_FFFF {
                size = z.u64("zip64 size")?;
            }
            if comp == 0xFFFF_FFFF {
                comp = z.u64("zip64 compressed size")?;
            }
            if local == 0xFFFF_FFFF {
                local = z.u64("zip64 local header offset")?;
            }
        }
    }
    let bad = |what: String| Error::format(path, format!("zip entry '{name}': {what}"));
    if flags & 1 != 0 {
        return Err(bad("is encrypted".into()));
    }
    if method != 0 {
        return Err(bad(format!(
            "is compressed (method {method}); only stored entries can be loaded — save with torch.save (which stores)"
        )));
    }
    if comp != size {
        return Err(bad(format!(
            "stored entry has compressed size {comp} but size {size}"
        )));
    }
    // The local header repeats the name and has its own extra field (torch pads with it).
    let local = usize::try_from(local)
        .ok()
        .filter(|&l| l < cd_start)
        .ok_or_else(|| {
            bad(format!(
                "local header offset {local} is outside the archive"
            ))
        })?;
    let mut l = ByteReader::new(path, &bytes[local..cd_start]);
    if l.u32("local header")? != LOCAL_SIG {
        return Err(bad(format!("bad local header signature at offset {local}")));
    }
    // version, flags, method, time, date, crc, sizes: the central record is authoritative.
    l.bytes(22, "local header")?;
    let lname_len = l.u16("local name length")?;
    let lextra_len = l.u16("local extra length")?;
    let lname = l.bytes(lname_len.into(), "local entry name")?;
    if lname != name.as_bytes() {
        return Err(bad("local header names a different entry".into()));
    }
    l.bytes(lextra_len.into(), "local extra field")?;
    let data_start = local + l.pos();
    // `size` comes from the file (zip64: any u64), so the end is checked, not added blindly.
    let data_end = (data_start as u64)
        .checked_add(size)
        .filter(|&end| end <= cd_start as u64)
        .ok_or_else(|| bad(format!("data ({size} bytes at offset {data_start}) runs past the start of the central directory")))?;
    let data = data_start..data_end as usize;
    Ok((
        ZipEntry {
            name,
            data: data.clone(),
            crc32,
        },
        local..data.end,
    ))
}

/// CRC-32 (IEEE, as zip uses it).
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in bytes {
        c = table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

struct Written {
    name: String,
    crc: u32,
    size: u64,
    local: u64,
}

/// A streaming writer of STORED entries whose data is 64-byte aligned (as torch.save does).
/// Switches to zip64 records where sizes or offsets need it (or always, with `force_zip64`).
pub struct ZipWriter<'w, W: Write> {
    out: &'w mut W,
    pos: u64,
    done: Vec<Written>,
    force_zip64: bool,
}

impl<'w, W: Write> ZipWriter<'w, W> {
    /// `start` is the writer's current position (0 for a fresh file).
    pub fn new(out: &'w mut W, start: u64, force_zip64: bool) -> Self {
        ZipWriter {
            out,
            pos: start,
            done: Vec::new(),
            force_zip64,
        }
    }

    fn put(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.out.write_all(b)?;
        self.pos += b.len() as u64;
        Ok(())
    }

    /// Adds one stored entry.
    pub fn add(&mut self, name: &str, data: &[u8]) -> std::io::Result<()> {
        let size = data.len() as u64;
        let local = self.pos;
        let zip64 = self.force_zip64 || size >= 0xFFFF_FFFF;
        let crc = crc32(data);
        let base = LOCAL_LEN as u64 + name.len() as u64 + if zip64 { 20 } else { 0 };
        // Padding extra field: 4-byte header plus enough zeros to align the data.
        let pad = (DATA_ALIGNMENT - (local + base + 4) % DATA_ALIGNMENT) % DATA_ALIGNMENT;
        let extra_len = (if zip64 { 20 } else { 0 }) + 4 + pad;
        let mut h = Vec::with_capacity(LOCAL_LEN + name.len() + extra_len as usize);
        h.extend_from_slice(&LOCAL_SIG.to_le_bytes());
        h.extend_from_slice(&(if zip64 { 45u16 } else { 20 }).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // flags
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&0x21u16.to_le_bytes()); // date 1980-01-01
        h.extend_from_slice(&crc.to_le_bytes());
        let small = if zip64 { 0xFFFF_FFFF } else { size as u32 };
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&small.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&(extra_len as u16).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        if zip64 {
            h.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
            h.extend_from_slice(&16u16.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
            h.extend_from_slice(&size.to_le_bytes());
        }
        h.extend_from_slice(&PAD_EXTRA_ID.to_le_bytes());
        h.extend_from_slice(&(pad as u16).to_le_bytes());
        h.resize(h.len() + pad as usize, 0);
        self.put(&h)?;
        self.put(data)?;
        self.done.push(Written {
            name: name.to_string(),
            crc,
            size,
            local,
        });
        Ok(())
    }

    /// Writes the central directory and end records.
    pub fn finish(mut self) -> std::io::Result<()> {
        let cd_start = self.pos;
        let done = std::mem::take(&mut self.done);
        for e in &done {
            let big_size = self.force_zip64 || e.size >= 0xFFFF_FFFF;
            let big_off = self.force_zip64 || e.local >= 0xFFFF_FFFF;
            let mut extra = Vec::new();
            if big_size || big_off {
                let mut body = Vec::new();
                if big_size {
                    body.extend_from_slice(&e.size.to_le_bytes());
                    body.extend_from_slice(&e.size.to_le_bytes());
                }
                if big_off {
                    body.extend_from_slice(&e.local.to_le_bytes());
                }
                extra.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                extra.extend_from_slice(&(body.len() as u16).to_le_bytes());
                extra.extend_from_slice(&body);
            }
            let size32 = if big_size { 0xFFFF_FFFF } else { e.size as u32 };
            let off32 = if big_off { 0xFFFF_FFFF } else { e.local as u32 };
            let mut h = Vec::with_capacity(CENTRAL_LEN + e.name.len() + extra.len());
            h.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            h.extend_from_slice(&45u16.to_le_bytes()); // made by
            h.extend_from_slice(&(if extra.is_empty() { 20u16 } else { 45 }).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes());
            h.extend_from_slice(&0x21u16.to_le_bytes());
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&size32.to_le_bytes());
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // comment
            h.extend_from_slice(&0u16.to_le_bytes()); // disk
            h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            h.extend_from_slice(&off32.to_le_bytes());
            h.extend_from_slice(e.name.as_bytes());
            h.extend_from_slice(&extra);
            self.put(&h)?;
        }
        let cd_size = self.pos - cd_start;
        let n = done.len() as u64;
        let zip64 =
            self.force_zip64 || n >= 0xFFFF || cd_size >= 0xFFFF_FFFF || cd_start >= 0xFFFF_FFFF;
        if zip64 {
            let rec = self.pos;
            let mut z = Vec::with_capacity(56 + 20);
            z.extend_from_slice(&EOCD64_SIG.to_le_bytes());
            z.extend_from_slice(&44u64.to_le_bytes());
            z.extend_from_slice(&45u16.to_le_bytes());
            z.extend_from_slice(&45u16.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&n.to_le_bytes());
            z.extend_from_slice(&n.to_le_bytes());
            z.extend_from_slice(&cd_size.to_le_bytes());
            z.extend_from_slice(&cd_start.to_le_bytes());
            z.extend_from_slice(&EOCD64_LOCATOR_SIG.to_le_bytes());
            z.extend_from_slice(&0u32.to_le_bytes());
            z.extend_from_slice(&rec.to_le_bytes());
            z.extend_from_slice(&1u32.to_le_bytes());
            self.put(&z)?;
        }
        let mut h = Vec::with_capacity(EOCD_LEN);
        h.extend_from_slice(&EOCD_SIG.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        let n16 = if zip64 { 0xFFFF } else { n as u16 };
        h.extend_from_slice(&n16.to_le_bytes());
        h.extend_from_slice(&n16.to_le_bytes());
        h.extend_from_slice(&(if zip64 { 0xFFFF_FFFF } else { cd_size as u32 }).to_le_bytes());
        h.extend_from_slice(&(if zip64 { 0xFFFF_FFFF } else { cd_start as u32 }).to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes());
        self.put(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, Vec<u8>)], zip64: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ZipWriter::new(&mut out, 0, zip64);
        for (n, d) in entries {
            w.add(n, d).unwrap();
        }
        w.finish().unwrap();
        out
    }

    fn sample() -> Vec<(&'static str, Vec<u8>)> {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut bytes = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    s as u8
                })
                .collect()
        };
        vec![
            ("a/data.pkl", bytes(77)),
            ("a/data/0", bytes(1000)),
            ("a/version", b"3\n".to_vec()),
        ]
    }

    #[test]
    fn crc32_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn round_trip_plain_and_zip64_with_aligned_data() {
        for zip64 in [false, true] {
            let entries = sample();
            let z = build(&entries, zip64);
            let idx = read_index(Path::new("t.zip"), &z).unwrap();
            assert_eq!(idx.entries.len(), 3);
            for (n, d) in &entries {
                let e = idx.get(n).unwrap();
                assert_eq!(&z[e.data.clone()], &d[..], "{n} zip64={zip64}");
                assert_eq!(e.data.start as u64 % DATA_ALIGNMENT, 0);
                assert_eq!(e.crc32, crc32(d));
            }
        }
    }

    #[test]
    fn compressed_entry_is_refused() {
        let mut z = build(&sample(), false);
        // Flip the method of the first central record to deflate (8).
        let cd = z
            .windows(4)
            .position(|w| w == CENTRAL_SIG.to_le_bytes())
            .unwrap();
        z[cd + 10] = 8;
        let e = read_index(Path::new("t.zip"), &z).unwrap_err().to_string();
        assert!(
            e.contains("t.zip") && e.contains("is compressed (method 8)"),
            "{e}"
        );
    }

    #[test]
    fn truncations_error_never_panic() {
        for zip64 in [false, true] {
            let z = build(&sample(), zip64);
            for n in 0..z.len() {
                assert!(read_index(Path::new("t.zip"), &z[..n]).is_err(), "len {n}");
            }
        }
    }
}
