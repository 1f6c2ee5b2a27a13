//! Streaming UTF-8 decoding of generated tokens (sampling itself is `rwkv_core::sampler`).

/// Turns token bytes into text pieces without splitting a UTF-8 character between two pieces
/// (one character often spans tokens). Invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes; returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // Valid by construction (from_utf8 said so up to `good`).
                    out.push_str(&String::from_utf8_lossy(&self.pending[..good]));
                    match e.error_len() {
                        // Invalid sequence: replace it and go on.
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                        // Incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left (an unfinished character) as replacement text.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn utf8_stream_never_splits_a_character() {
        let text = "héllo wörld ✓ 日本語 🙂 end";
        let bytes = text.as_bytes();
        let mut seed = 77u64;
        for _ in 0..50 {
            let mut stream = Utf8Stream::default();
            let mut out = String::new();
            let mut at = 0;
            while at < bytes.len() {
                let n = 1 + (splitmix(&mut seed) % 4) as usize;
                let end = (at + n).min(bytes.len());
                out.push_str(&stream.push(&bytes[at..end]));
                at = end;
            }
            out.push_str(&stream.finish());
            assert_eq!(out, text);
        }
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb\xe6\x97"), "a\u{FFFD}b");
        assert_eq!(stream.push(b"\xa5"), "日");
    }
}
