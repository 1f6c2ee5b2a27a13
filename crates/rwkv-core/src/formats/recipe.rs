//! What each tensor is stored as when a model is quantized once into a file (`rwkv quantize`):
//! one type for every large matrix, or a llama.cpp-style Q4_K_M mix.

use crate::dtype::DType;
use crate::model::{v7, Tensor};

/// A quantization recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantRecipe {
    /// Every large matrix as this type.
    Uniform(DType),
    /// Q4_K with more bits where llama.cpp's Q4_K_M puts them, mapped onto RWKV's roles: the
    /// head as Q6_K, and the two value matrices (RWKV's counterparts of `attn_v` and
    /// `ffn_down`) as Q6_K in the layers where errors cost most (the first and last eighth, and
    /// every third layer between).
    Q4KM,
}

impl QuantRecipe {
    /// The names [`QuantRecipe::parse`] takes, for messages.
    pub const NAMES: &'static str = "q4k, q5k, q6k, q8_0, f16, bf16, f32, q4_k_m";

    pub fn parse(s: &str) -> Option<QuantRecipe> {
        let lower = s.to_ascii_lowercase();
        if lower == "q4_k_m" || lower == "q4km" {
            return Some(QuantRecipe::Q4KM);
        }
        match DType::parse(&lower)? {
            d @ (DType::F32
            | DType::F16
            | DType::BF16
            | DType::Q8_0
            | DType::Q4K
            | DType::Q5K
            | DType::Q6K) => Some(QuantRecipe::Uniform(d)),
            // No quantizer for the legacy 32-value types.
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            QuantRecipe::Uniform(d) => d.name(),
            QuantRecipe::Q4KM => "q4_k_m",
        }
    }

    /// The type tensor `name` (canonical name) of a model with `n_layer` blocks is stored as.
    /// Small tensors (vectors, LoRA factors) become f32, as llama.cpp's files keep them: they
    /// are under 1% of the bytes and the model's accuracy is most sensitive there. A large
    /// matrix whose rows are not whole blocks of the recipe's type falls back to Q8_0 (32-value
    /// blocks), else F16.
    pub fn tensor_type(self, name: &str, tensor: &Tensor, n_layer: usize) -> DType {
        if !v7::is_large_matrix(name) {
            return DType::F32;
        }
        let wanted = match self {
            QuantRecipe::Uniform(d) => d,
            QuantRecipe::Q4KM => {
                let more_bits = name == "head.weight"
                    || (is_value_matrix(name)
                        && layer_of(name).is_some_and(|i| gets_more_bits(i, n_layer)));
                if more_bits {
                    DType::Q6K
                } else {
                    DType::Q4K
                }
            }
        };
        let cols = tensor.shape.last().copied().unwrap_or(0);
        [wanted, DType::Q8_0, DType::F16]
            .into_iter()
            .find(|d| d.row_bytes(cols).is_some())
            .unwrap_or(DType::F32)
    }
}

fn is_value_matrix(name: &str) -> bool {
    name.ends_with(".att.value.weight") || name.ends_with(".ffn.value.weight")
}

/// `N` of `blocks.N.…`.
fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blocks.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The first and last eighth of the layers, and every third layer between them.
fn gets_more_bits(layer: usize, n_layer: usize) -> bool {
    let eighth = n_layer / 8;
    layer < eighth || layer >= n_layer - eighth || (layer - eighth) % 3 == 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_legacy_types_are_refused() {
        assert_eq!(QuantRecipe::parse("Q4_K_M"), Some(QuantRecipe::Q4KM));
        assert_eq!(
            QuantRecipe::parse("q6k"),
            Some(QuantRecipe::Uniform(DType::Q6K))
        );
        assert_eq!(
            QuantRecipe::parse("Q5_K"),
            Some(QuantRecipe::Uniform(DType::Q5K))
        );
        assert_eq!(QuantRecipe::parse("q4_0"), None);
        assert_eq!(QuantRecipe::parse("q3k"), None);
    }

    #[test]
    fn q4_k_m_gives_the_head_and_some_value_matrices_six_bits() {
        let t = |cols: usize| Tensor::from_f32(vec![2, cols], &vec![0.5; 2 * cols]).unwrap();
        let big = t(512);
        let r = QuantRecipe::Q4KM;
        assert_eq!(r.tensor_type("head.weight", &big, 24), DType::Q6K);
        assert_eq!(r.tensor_type("emb.weight", &big, 24), DType::Q4K);
        assert_eq!(
            r.tensor_type("blocks.0.att.key.weight", &big, 24),
            DType::Q4K
        );
        // 24 layers: 0..3 and 21..24, and 5, 8, 11, 14, 17, 20.
        let six: Vec<usize> = (0..24)
            .filter(|&i| {
                r.tensor_type(&format!("blocks.{i}.ffn.value.weight"), &big, 24) == DType::Q6K
            })
            .collect();
        assert_eq!(six, [0, 1, 2, 5, 8, 11, 14, 17, 20, 21, 22, 23]);
        assert_eq!(
            r.tensor_type("blocks.5.att.value.weight", &big, 24),
            DType::Q6K
        );
        assert_eq!(
            r.tensor_type("blocks.6.att.value.weight", &big, 24),
            DType::Q4K
        );
        // Small tensors stay full precision; rows that are not whole blocks fall back.
        assert_eq!(r.tensor_type("blocks.3.att.w1", &big, 24), DType::F32);
        assert_eq!(
            r.tensor_type("blocks.3.ffn.key.weight", &t(96), 24),
            DType::Q8_0
        );
        assert_eq!(
            r.tensor_type("blocks.3.ffn.key.weight", &t(20), 24),
            DType::F16
        );
        // Two layers: no eighth, only every third layer counts.
        assert!(!gets_more_bits(0, 2) && !gets_more_bits(1, 2));
    }
}
