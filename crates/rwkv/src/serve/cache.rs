//! The state cache: an RWKV state has a fixed size whatever the prompt's length, so the state
//! after a token prefix can be kept and a later prompt that starts with that prefix feeds only
//! the rest (a multi-turn chat feeds only its new turn). Host memory, least recently used
//! entries evicted to stay within a byte budget.

use std::sync::Arc;

struct Entry {
    /// The initial state the prefix was fed from (a `--state` name), None for zeros.
    base: Option<Arc<str>>,
    tokens: Vec<u32>,
    state: Vec<f32>,
    /// Logits after the last token, when known: an exact match needs them to sample.
    logits: Option<Vec<f32>>,
    last_used: u64,
    bytes: usize,
}

/// What a lookup found: the first `len` prompt tokens are covered by `state`.
pub struct Hit<'a> {
    pub len: usize,
    pub state: &'a [f32],
    /// Logits after the whole prompt (only when `len` is the whole prompt).
    pub logits: Option<&'a [f32]>,
}

pub struct StateCache {
    budget: usize,
    used: usize,
    tick: u64,
    entries: Vec<Entry>,
}

impl StateCache {
    /// A cache holding at most `budget` bytes (0 turns it off).
    pub fn new(budget: usize) -> StateCache {
        StateCache {
            budget,
            used: 0,
            tick: 0,
            entries: Vec::new(),
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The longest cached prefix of `prompt` (from the same initial state) that leaves
    /// something to sample from: a proper prefix, or the whole prompt with its logits.
    pub fn lookup(&mut self, base: Option<&str>, prompt: &[u32]) -> Option<Hit<'_>> {
        let best = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e.base.as_deref() == base
                    && !e.tokens.is_empty()
                    && prompt.starts_with(&e.tokens)
                    && (e.tokens.len() < prompt.len() || e.logits.is_some())
            })
            .max_by_key(|(_, e)| e.tokens.len())
            .map(|(i, _)| i)?;
        self.tick += 1;
        let e = &mut self.entries[best];
        e.last_used = self.tick;
        let whole = e.tokens.len() == prompt.len();
        Some(Hit {
            len: e.tokens.len(),
            state: &e.state,
            logits: if whole { e.logits.as_deref() } else { None },
        })
    }

    /// Keeps the state after `tokens`; evicts the least recently used entries to make room.
    /// An entry larger than the whole budget is not kept.
    pub fn insert(
        &mut self,
        base: Option<Arc<str>>,
        tokens: Vec<u32>,
        state: Vec<f32>,
        logits: Option<Vec<f32>>,
    ) {
        let bytes = 4 * (tokens.len() + state.len() + logits.as_ref().map_or(0, Vec::len));
        if tokens.is_empty() || bytes > self.budget {
            return;
        }
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.base == base && e.tokens == tokens)
        {
            let old = self.entries.swap_remove(i);
            self.used -= old.bytes;
        }
        while self.used + bytes > self.budget {
            let Some(lru) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i)
            else {
                break;
            };
            let old = self.entries.swap_remove(lru);
            self.used -= old.bytes;
        }
        self.tick += 1;
        self.used += bytes;
        self.entries.push(Entry {
            base,
            tokens,
            state,
            logits,
            last_used: self.tick,
            bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_exact_needs_logits() {
        let mut c = StateCache::new(1 << 20);
        c.insert(None, vec![1, 2], vec![0.5; 8], None);
        c.insert(None, vec![1, 2, 3, 4], vec![0.25; 8], Some(vec![1.0; 4]));
        c.insert(Some("s".into()), vec![1, 2, 3], vec![0.75; 8], None);
        let h = c.lookup(None, &[1, 2, 3, 4, 5]).unwrap();
        assert_eq!((h.len, h.state[0], h.logits.is_none()), (4, 0.25, true));
        let h = c.lookup(None, &[1, 2, 3, 4]).unwrap();
        assert_eq!((h.len, h.logits.map(|l| l.len())), (4, Some(4)));
        // Whole prompt without logits is not usable: fall back to the shorter prefix.
        let h = c.lookup(None, &[1, 2, 3]).unwrap();
        assert_eq!(h.len, 2);
        assert!(c.lookup(None, &[1, 2]).is_none());
        assert_eq!(c.lookup(Some("s"), &[1, 2, 3, 9]).unwrap().state[0], 0.75);
        assert!(c.lookup(Some("t"), &[1, 2, 3, 9]).is_none());
    }

    #[test]
    fn least_recently_used_is_evicted_within_budget() {
        let entry = 4 * (1 + 100);
        let mut c = StateCache::new(3 * entry);
        for t in 0..3 {
            c.insert(None, vec![t], vec![t as f32; 100], None);
        }
        assert_eq!(c.len(), 3);
        assert!(c.lookup(None, &[0, 7]).is_some()); // 0 becomes the most recent
        c.insert(None, vec![3], vec![3.0; 100], None);
        assert_eq!(c.len(), 3);
        assert!(c.used_bytes() <= 3 * entry);
        assert!(
            c.lookup(None, &[1, 7]).is_none(),
            "1 was the least recently used"
        );
        assert!(c.lookup(None, &[0, 7]).is_some());
        // Larger than the budget: not kept; zero budget keeps nothing.
        c.insert(None, vec![9], vec![0.0; 1000], None);
        assert!(c.lookup(None, &[9, 1]).is_none());
        let mut off = StateCache::new(0);
        off.insert(None, vec![1], vec![1.0], None);
        assert!(off.is_empty());
    }
}
