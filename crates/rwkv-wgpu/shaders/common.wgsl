// Shared by every kernel: the per-dispatch parameter block (64 u32 in one uniform slice) and
// the activation arena (all f32 activation buffers of a plan, at offsets given in the params).
struct Params { v: array<vec4<u32>, 16> }
@group(0) @binding(0) var<uniform> params: Params;

fn prm(i: u32) -> u32 { return params.v[i >> 2u][i & 3u]; }
fn prmf(i: u32) -> f32 { return bitcast<f32>(prm(i)); }

const NONE: u32 = 0xffffffffu;

fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }

// Matches rwkv_core::backend::Act (0 None, 1 Tanh, 2 Sigmoid, 3 ReluSq, 4 Decay).
fn apply_act(act: u32, x: f32) -> f32 {
    switch act {
        case 1u: { return tanh(x); }
        case 2u: { return sigmoid(x); }
        case 3u: { let r = max(x, 0.0); return r * r; }
        case 4u: { return exp(-0.60653066 * sigmoid(x)); }
        default: { return x; }
    }
}
