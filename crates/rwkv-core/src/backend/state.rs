//! Where each part of a sequence's state lies: the layout every backend reads from the plan
//! instead of inferring it from a state length.

use std::ops::Range;

/// One part of a layer's state, in the order the layout lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatePart {
    /// `ffn_x`: the channel-mix input of the previous token (`C` values).
    FfnShift,
    /// `att_x`: the time-mix input of the previous token (`C` values).
    AttShift,
    /// `S`: one `N × N` matrix per head, `S[p][q]` (`p` the value row, `q` the key column),
    /// `H · N · N` values.
    WkvMatrix,
}

/// The state of one sequence: `n_layer` layers, each the concatenation of `parts` (rwkv.cpp's
/// layout: for RWKV-7 `[ffn_x (C), att_x (C), S (H·N·N)]`), layers one after another, f32.
/// `StateLayout::default()` is the empty layout of a plan without state ops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StateLayout {
    pub n_layer: usize,
    /// `C`, the residual width.
    pub width: usize,
    /// `N`, channels per head.
    pub head_size: usize,
    /// The parts of one layer, in order.
    pub parts: Vec<StatePart>,
}

impl StateLayout {
    /// The RWKV-5/6/7 layout: two shift registers then the per-head matrices.
    pub fn matrix_state(n_layer: usize, width: usize, head_size: usize) -> StateLayout {
        StateLayout {
            n_layer,
            width,
            head_size,
            parts: vec![
                StatePart::FfnShift,
                StatePart::AttShift,
                StatePart::WkvMatrix,
            ],
        }
    }

    /// `H = C / N` (0 when the head size is 0).
    pub fn n_head(&self) -> usize {
        self.width.checked_div(self.head_size).unwrap_or(0)
    }

    /// Values of one part in one layer.
    pub fn part_len(&self, part: StatePart) -> usize {
        match part {
            StatePart::FfnShift | StatePart::AttShift => self.width,
            StatePart::WkvMatrix => self.width * self.head_size,
        }
    }

    /// Values of one layer's state.
    pub fn layer_len(&self) -> usize {
        self.parts.iter().map(|&p| self.part_len(p)).sum()
    }

    /// Values of one sequence's state.
    pub fn len(&self) -> usize {
        self.n_layer * self.layer_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offset of `part` inside a layer, or `None` when the layout has no such part.
    pub fn part_offset(&self, part: StatePart) -> Option<usize> {
        let mut offset = 0;
        for &p in &self.parts {
            if p == part {
                return Some(offset);
            }
            offset += self.part_len(p);
        }
        None
    }

    /// Where `part` of `layer` lies in a slot's state, or `None` when either does not exist.
    pub fn range(&self, layer: usize, part: StatePart) -> Option<Range<usize>> {
        if layer >= self.n_layer {
            return None;
        }
        let start = layer * self.layer_len() + self.part_offset(part)?;
        Some(start..start + self.part_len(part))
    }

    /// Checks the geometry is self-consistent: a positive width split into whole heads, and
    /// sizes that fit in memory arithmetic.
    pub fn check(&self) -> Result<(), String> {
        if self.head_size == 0 || self.width == 0 || !self.width.is_multiple_of(self.head_size) {
            return Err(format!(
                "state width {} is not a whole number of heads of size {}",
                self.width, self.head_size
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if !self.parts.iter().all(|p| seen.insert(*p)) {
            return Err("state layout lists a part twice".into());
        }
        // len() multiplies these; refuse a layout whose size overflows rather than wrap.
        self.width
            .checked_mul(self.head_size + 2)
            .and_then(|l| l.checked_mul(self.n_layer))
            .and_then(|l| l.checked_mul(4))
            .map(|_| ())
            .ok_or_else(|| "state size overflows".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_state_matches_rwkv_cpp_layout() {
        let s = StateLayout::matrix_state(3, 8, 4);
        assert_eq!(s.n_head(), 2);
        assert_eq!(s.layer_len(), 8 + 8 + 32);
        assert_eq!(s.len(), 3 * 48);
        assert_eq!(s.range(1, StatePart::FfnShift), Some(48..56));
        assert_eq!(s.range(1, StatePart::AttShift), Some(56..64));
        assert_eq!(s.range(2, StatePart::WkvMatrix), Some(112..144));
        assert_eq!(s.range(3, StatePart::FfnShift), None);
        assert!(s.check().is_ok());
        assert!(StateLayout::matrix_state(1, 8, 3).check().is_err());
    }
}
