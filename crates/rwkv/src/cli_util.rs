//! Small helpers shared by the CLI subcommands: model specs, progress, number parsing, sizes
//! (always binary units: KiB, MiB, GiB).

use std::io::IsTerminal;
use std::path::Path;

use rwkv_core::formats::{self, LoadOptions};
use rwkv_core::synth::{self, SynthShape};
use rwkv_core::{DType, Error, Model, Result};

/// Where a model comes from: a file, or `synth:SHAPE[:DTYPE[:SEED]]` (random weights in memory).
pub fn load_model_spec(spec: &str, quant: Option<DType>) -> Result<Model> {
    if let Some(rest) = spec.strip_prefix("synth:") {
        let mut parts = rest.split(':');
        let shape = parts.next().unwrap_or("");
        let shape = SynthShape::parse(shape).ok_or_else(|| {
            Error::invalid(format!(
                "unknown synthetic shape '{shape}' (tiny, 0.1b, 0.4b, 1.5b, 2.9b, 7.2b)"
            ))
        })?;
        let dtype = match parts.next() {
            Some(d) => parse_dtype(d)?,
            None => quant.unwrap_or(DType::Q4K),
        };
        let seed = match parts.next() {
            Some(s) => s
                .parse()
                .map_err(|_| Error::invalid(format!("bad seed '{s}' in '{spec}'")))?,
            None => 1,
        };
        return synth::synth_model(shape, dtype, seed);
    }
    let progress = Progress::new(spec);
    let cb = |done: u64, total: u64| progress.update(done, total);
    let m = formats::load(
        Path::new(spec),
        &LoadOptions {
            quant,
            progress: Some(&cb),
        },
    );
    progress.finish();
    m
}

pub fn parse_dtype(s: &str) -> Result<DType> {
    DType::parse(s).ok_or_else(|| {
        Error::invalid(format!(
            "unknown dtype '{s}' (f32, f16, bf16, q8_0, q4k, q5k, q6k)"
        ))
    })
}

/// `1,2,3` → ids.
pub fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| Error::invalid(format!("'{t}' is not a token id")))
        })
        .collect()
}

/// `1,8,64` → numbers.
pub fn parse_list(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| Error::invalid(format!("'{t}' is not a number")))
        })
        .collect()
}

/// A size in binary units, as every command prints sizes: "812.4 MiB", "1.53 GiB", "96.0 KiB".
pub fn format_bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let x = n as f64;
    if x >= KIB * KIB * KIB {
        format!("{:.2} GiB", x / (KIB * KIB * KIB))
    } else if x >= KIB * KIB {
        format!("{:.1} MiB", x / (KIB * KIB))
    } else if x >= KIB {
        format!("{:.1} KiB", x / KIB)
    } else {
        format!("{n} B")
    }
}

/// A one-line progress display on stderr, only when stderr is a terminal.
pub struct Progress {
    label: String,
    on: bool,
    last: std::cell::Cell<u64>,
}

impl Progress {
    /// "loading NAME: 40% (…)", NAME being `label`'s last path component.
    pub fn new(label: &str) -> Progress {
        let name = Path::new(label)
            .file_name()
            .map_or(label.into(), |n| n.to_string_lossy());
        Progress::titled(&format!("loading {name}"))
    }

    /// "TITLE: 40% (…)". A long title is cut from the front: the line must fit a terminal's
    /// width, or every update would wrap onto a new line instead of overwriting the last.
    pub fn titled(title: &str) -> Progress {
        const MAX_TITLE_CHARS: usize = 48;
        let chars = title.chars().count();
        let label = if chars > MAX_TITLE_CHARS {
            let tail: String = title.chars().skip(chars - (MAX_TITLE_CHARS - 1)).collect();
            format!("…{tail}")
        } else {
            title.to_string()
        };
        Progress {
            label,
            on: std::io::stderr().is_terminal(),
            last: std::cell::Cell::new(u64::MAX),
        }
    }

    pub fn update(&self, done: u64, total: u64) {
        if !self.on || total == 0 {
            return;
        }
        let pct = done.saturating_mul(100) / total;
        if pct == self.last.get() {
            return;
        }
        self.last.set(pct);
        eprint!(
            // \x1b[K clears what a longer previous update left on the line (stderr is a
            // terminal here).
            "\r{}: {:3}% ({} / {})\x1b[K",
            self.label,
            pct,
            format_bytes(done),
            format_bytes(total)
        );
    }

    pub fn finish(&self) {
        if self.on && self.last.get() != u64::MAX {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_binary_units() {
        use super::format_bytes;
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(100 << 20), "100.0 MiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
    }
}
