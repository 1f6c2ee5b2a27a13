//! WGSL source assembly of every kernel.
//!
//! WGSL has no includes or templates, so a kernel's module is assembled from the `.wgsl` files:
//! `common.wgsl` (params, activations), a reduction file (`reduce_subgroup.wgsl` when the device
//! has subgroups, else `reduce_plain.wgsl`), a `decode_*.wgsl` for matrix kernels, and the
//! kernel itself. Placeholders: `SG_BUILTINS` (subgroup builtins of the entry point, or nothing)
//! and `SG_ARGS` (their values for `block_sum`, or constants), `HEAD_SIZE` / `HALF_POW2` in WKV,
//! `MV_WIDTH` / `MV_RPS` / `LANE_*` in the subgroup Q4_K matrix-vector kernel.

use crate::weights::PackedKind;

use super::{GemmTile, Kernel};

const COMMON: &str = include_str!("../../shaders/common.wgsl");
const REDUCE_PLAIN: &str = include_str!("../../shaders/reduce_plain.wgsl");
const REDUCE_SUBGROUP: &str = include_str!("../../shaders/reduce_subgroup.wgsl");
const MATMUL: &str = include_str!("../../shaders/matmul.wgsl");
const MATMUL_TILED: &str = include_str!("../../shaders/matmul_tiled.wgsl");
const MATMUL_COOP: &str = include_str!("../../shaders/matmul_coop.wgsl");
const COOP_EMULATED: &str = include_str!("../../shaders/coop_emulated.wgsl");
const DECODE_Q4K_VEC4: &str = include_str!("../../shaders/decode_q4k_vec4.wgsl");
const JOBS: &str = include_str!("../../shaders/jobs.wgsl");
const MATVEC_Q4K: &str = include_str!("../../shaders/matvec_q4k.wgsl");
const MATVEC_Q4K_SG: &str = include_str!("../../shaders/matvec_q4k_sg.wgsl");
const Q4K_PIECES: &str = include_str!("../../shaders/q4k_pieces.wgsl");
const MATVEC_FLOAT: &str = include_str!("../../shaders/matvec_float.wgsl");
const MATMUL_NARROW: &str = include_str!("../../shaders/matmul_narrow.wgsl");
const EMBED: &str = include_str!("../../shaders/embed.wgsl");
const LAYER_NORM: &str = include_str!("../../shaders/layer_norm.wgsl");
const LN_SHIFT: &str = include_str!("../../shaders/ln_shift.wgsl");
const TOKEN_SHIFT: &str = include_str!("../../shaders/token_shift.wgsl");
const LAST_ROWS: &str = include_str!("../../shaders/last_rows.wgsl");
const ARGMAX: &str = include_str!("../../shaders/argmax.wgsl");
const WKV7: &str = include_str!("../../shaders/wkv7.wgsl");
const WKV7_SPLIT: &str = include_str!("../../shaders/wkv7_split.wgsl");
const WKV7_PREP: &str = include_str!("../../shaders/wkv7_prep.wgsl");
const WKV7_SCAN: &str = include_str!("../../shaders/wkv7_scan.wgsl");
const WKV7_POST: &str = include_str!("../../shaders/wkv7_post.wgsl");
const GEMM_F16: &str = include_str!("../../shaders/gemm_f16.wgsl");
const GEMM_OUT_DIRECT: &str = include_str!("../../shaders/gemm_out_direct.wgsl");
const GEMM_OUT_SPLIT: &str = include_str!("../../shaders/gemm_out_split.wgsl");
const SPLIT_REDUCE: &str = include_str!("../../shaders/split_reduce.wgsl");
const TO_F16: &str = include_str!("../../shaders/to_f16.wgsl");
const DEQUANT_F16: &str = include_str!("../../shaders/dequant_f16.wgsl");

fn decode_source(kind: PackedKind, f16: bool) -> &'static str {
    match kind {
        PackedKind::F32 => include_str!("../../shaders/decode_f32.wgsl"),
        PackedKind::F16 if f16 => include_str!("../../shaders/decode_f16_native.wgsl"),
        PackedKind::F16 => include_str!("../../shaders/decode_f16.wgsl"),
        PackedKind::BF16 => include_str!("../../shaders/decode_bf16.wgsl"),
        PackedKind::Q8_0 => include_str!("../../shaders/decode_q8_0.wgsl"),
        PackedKind::Q4K => include_str!("../../shaders/decode_q4k.wgsl"),
        PackedKind::Q6K => include_str!("../../shaders/decode_q6k.wgsl"),
    }
}

/// The token-shift register of `ln_shift.wgsl` (params 7 reg_off, 8 state_stride), or none.
const SHIFT_STATE: &str = "@group(0) @binding(3) var<storage, read_write> state: array<vec4<f32>>;
fn reg_at(seq: u32, i: u32) -> u32 { return (seq * prm(8u) + prm(7u)) / 4u + i; }
fn reg_load(seq: u32, i: u32) -> vec4<f32> { return state[reg_at(seq, i)]; }
fn reg_store(seq: u32, i: u32, v: vec4<f32>) { state[reg_at(seq, i)] = v; }
";
const NO_SHIFT_STATE: &str = "fn reg_load(seq: u32, i: u32) -> vec4<f32> { return vec4<f32>(0.0); }
fn reg_store(seq: u32, i: u32, v: vec4<f32>) {}
";

/// `lane_sum` of wkv7_scan.wgsl: the sum over the J lanes of a state row. One lane: itself.
const SCAN_LANE_SUM_NONE: &str = "fn lane_sum(x: f32, lid: u32, p: u32) -> f32 { return x; }";
/// Lanes of a row are consecutive lanes of one subgroup (row and lane come from the subgroup
/// index, and the host asks for subgroups of at least J that divide the workgroup): J a power
/// of two, log2 J shuffles.
const SCAN_LANE_SUM_SUBGROUP: &str = "fn lane_sum(x: f32, lid: u32, p: u32) -> f32 {
    var s = x;
    for (var m = 1u; m < J; m = m << 1u) {
        s += subgroupShuffleXor(s, m);
    }
    return s;
}";
/// Without subgroups (a device that rejected the subgroup module): through workgroup memory,
/// two barriers per call.
const SCAN_LANE_SUM_SHARED: &str = "var<workgroup> lane_part: array<f32, WG>;
fn lane_sum(x: f32, lid: u32, p: u32) -> f32 {
    lane_part[lid] = x;
    workgroupBarrier();
    var s = 0.0;
    for (var l = 0u; l < J; l++) {
        s += lane_part[p * J + l];
    }
    workgroupBarrier();
    return s;
}";

/// Float weights for `matvec_float.wgsl`: (values per vec4<u32>, its `mv_decode`).
fn matvec_decode(kind: PackedKind) -> (u32, &'static str) {
    match kind {
        PackedKind::F16 => (8, include_str!("../../shaders/mv_decode_f16.wgsl")),
        PackedKind::BF16 => (8, include_str!("../../shaders/mv_decode_bf16.wgsl")),
        _ => (4, include_str!("../../shaders/mv_decode_f32.wgsl")),
    }
}

/// Module source of `kernel` for a device with (or without) subgroups / shader-f16.
pub(super) fn source(kernel: Kernel, subgroups: bool, f16: bool) -> String {
    match kernel {
        Kernel::GemmF16 { tile, split } => return gemm_source(tile, split, subgroups),
        Kernel::SplitReduce => return format!("{COMMON}{SPLIT_REDUCE}"),
        Kernel::ToF16 => return format!("enable f16;\n{COMMON}{TO_F16}"),
        Kernel::DequantF16(k) => {
            let native_f16 = f16 && k == PackedKind::F16;
            // Q4_K through vec4 loads (2 per unit instead of 7), as in matmul_coop.wgsl.
            let decode = if k == PackedKind::Q4K {
                DECODE_Q4K_VEC4
            } else {
                decode_source(k, native_f16)
            };
            let mut s = format!("enable f16;\n{COMMON}{decode}{DEQUANT_F16}");
            let array = match k {
                PackedKind::Q4K => Some("array<vec4<u32>>"),
                _ if native_f16 => Some("array<vec2<f16>>"),
                _ => None,
            };
            if let Some(array) = array {
                s = s.replace(
                    "var<storage, read> wq: array<u32>;",
                    &format!("var<storage, read> wq: {array};"),
                );
            }
            return s;
        }
        _ => {}
    }
    let (body, decode, reduce) = match kernel {
        Kernel::MatMul(k, _, _) => (MATMUL, Some(k), true),
        Kernel::MatMulTiled(k, _) => (MATMUL_TILED, Some(k), false),
        Kernel::MatMulCoop(k) => (MATMUL_COOP, Some(k), false),
        Kernel::MatVecQ4K(_) => (MATVEC_Q4K, None, true),
        Kernel::MatVecQ4KSg { .. } => (MATVEC_Q4K_SG, None, false),
        Kernel::MatVec(_, _) => (MATVEC_FLOAT, None, false),
        Kernel::MatMulNarrow(k, _) => (MATMUL_NARROW, Some(k), false),
        Kernel::Embed(k) => (EMBED, Some(k), false),
        Kernel::LayerNorm => (LAYER_NORM, None, true),
        Kernel::TokenShift => (TOKEN_SHIFT, None, false),
        Kernel::LnShift { .. } => (LN_SHIFT, None, true),
        Kernel::LastRows => (LAST_ROWS, None, false),
        Kernel::Argmax => (ARGMAX, None, false),
        Kernel::Wkv7 { .. } => (WKV7, None, true),
        Kernel::Wkv7Split { .. } => (WKV7_SPLIT, None, true),
        Kernel::Wkv7Prep { .. } => (WKV7_PREP, None, true),
        Kernel::Wkv7Scan { .. } => (WKV7_SCAN, None, false),
        Kernel::Wkv7Post { .. } => (WKV7_POST, None, true),
        Kernel::GemmF16 { .. } | Kernel::SplitReduce | Kernel::ToF16 | Kernel::DequantF16(_) => {
            unreachable!("returned above")
        }
    };
    let coop = matches!(kernel, Kernel::MatMulCoop(_));
    let native_f16 = f16 && decode == Some(PackedKind::F16);
    let mut s = String::new();
    if native_f16 || coop {
        s.push_str("enable f16;\n");
    }
    if coop {
        s.push_str("enable wgpu_cooperative_matrix;\n");
    }
    s.push_str(COMMON);
    let jobs = match kernel {
        Kernel::MatMul(_, _, j)
        | Kernel::MatMulNarrow(_, j)
        | Kernel::MatVecQ4K(j)
        | Kernel::MatVecQ4KSg { jobs: j, .. }
        | Kernel::MatVec(_, j) => Some(j),
        _ => None,
    };
    if let Some(j) = jobs {
        s.push_str(&JOBS.replace("MM_JOBS", &j.to_string()));
    }
    if reduce {
        s.push_str(if subgroups {
            REDUCE_SUBGROUP
        } else {
            REDUCE_PLAIN
        });
    }
    if let Some(k) = decode {
        // The coop kernel reads Q4_K through vec4 loads (its weights bound as vec4, below).
        s.push_str(if coop && k == PackedKind::Q4K {
            DECODE_Q4K_VEC4
        } else {
            decode_source(k, native_f16)
        });
    }
    if matches!(kernel, Kernel::MatVecQ4K(_) | Kernel::MatVecQ4KSg { .. }) {
        s.push_str(Q4K_PIECES);
    }
    if let Kernel::MatVec(k, _) = kernel {
        let (vals, decode) = matvec_decode(k);
        s.push_str(decode);
        s.push_str(&body.replace("MV_VALS", &vals.to_string()));
    } else {
        s.push_str(body);
    }
    // The number of subgroups is computed from the subgroup size: lavapipe (Mesa 22.3) reports
    // `num_subgroups` rounded down when the workgroup is not a whole number of subgroups
    // (12 invocations in subgroups of 8: 1), so the last partial sum was dropped (WKV at N = 12).
    let (builtins, args) = if subgroups && reduce {
        (
            "@builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32, \
             @builtin(subgroup_size) sg_size: u32",
            "sg_lane, sg_id, (WG + sg_size - 1u) / sg_size",
        )
    } else {
        ("", "0u, 0u, 1u")
    };
    if native_f16 {
        s = s.replace(
            "var<storage, read> wq: array<u32>;",
            "var<storage, read> wq: array<vec2<f16>>;",
        );
    }
    if coop && decode == Some(PackedKind::Q4K) {
        s = s.replace(
            "var<storage, read> wq: array<u32>;",
            "var<storage, read> wq: array<vec4<u32>>;",
        );
    }
    s = s.replace("SG_BUILTINS", builtins).replace("SG_ARGS", args);
    if let Some(j @ 2..) = jobs {
        s = with_job_bindings(&s, j);
    }
    if let Kernel::MatMul(_, tpr, _) = kernel {
        s = s.replace("MM_TPR", &tpr.to_string());
    }
    if let Kernel::MatMulTiled(_, tm) = kernel {
        s = s.replace("MM_TM", &tm.to_string());
    }
    if let Kernel::MatVecQ4KSg { sg, rps, jobs } = kernel {
        s = matvec_sg_source(&s, subgroups, sg, rps, jobs);
    }
    if coop {
        // The subgroup's index picks its fragments; it must be the same for the whole subgroup
        // (cooperative operations are per subgroup). Without the builtin, 32 consecutive
        // invocations are assumed to form a subgroup.
        let (builtin, id) = if subgroups {
            (", @builtin(subgroup_id) sg_id: u32", "sg_id")
        } else {
            ("", "lid / 32u")
        };
        s = s
            .replace("COOP_SG_BUILTIN", builtin)
            .replace("COOP_SG_ID", id);
    }
    if let Kernel::LnShift { vec4s, shift } = kernel {
        s = s.replace("LN_VEC4", &vec4s.to_string()).replace(
            "SHIFT_STATE_DECL",
            if shift { SHIFT_STATE } else { NO_SHIFT_STATE },
        );
    }
    if let Kernel::Wkv7Split { head_size, lanes } = kernel {
        let wg = head_size * lanes;
        s = s
            .replace("HEAD_SIZE", &head_size.to_string())
            .replace("WKV_LANES", &lanes.to_string())
            .replace("WKV_WG", &wg.to_string())
            .replace("HALF_POW2", &(wg.next_power_of_two() / 2).to_string());
    }
    if let Kernel::Wkv7Scan {
        head_size,
        chunk,
        lanes,
    } = kernel
    {
        let (builtins, index, lane_sum) = match (lanes, subgroups) {
            (1, _) => ("", "lid", SCAN_LANE_SUM_NONE),
            (_, true) => (
                ", @builtin(subgroup_invocation_id) sg_lane: u32, \
                 @builtin(subgroup_id) sg_id: u32, @builtin(subgroup_size) sg_size: u32",
                "sg_id * sg_size + sg_lane",
                SCAN_LANE_SUM_SUBGROUP,
            ),
            (_, false) => ("", "lid", SCAN_LANE_SUM_SHARED),
        };
        s = s
            .replace("SCAN_LANE_SUM", lane_sum)
            .replace("SCAN_BUILTINS", builtins)
            .replace("SCAN_INDEX", index)
            .replace("HEAD_SIZE", &head_size.to_string())
            .replace("SCAN_CHUNK", &chunk.to_string())
            .replace("SCAN_LANES", &lanes.to_string());
    }
    if let Kernel::Wkv7 { head_size }
    | Kernel::Wkv7Prep { head_size }
    | Kernel::Wkv7Post { head_size } = kernel
    {
        let half_pow2 = head_size.next_power_of_two() / 2;
        s = s
            .replace("HEAD_SIZE", &head_size.to_string())
            .replace("HALF_POW2", &half_pow2.to_string());
    }
    s
}

/// Sum over a subgroup's lanes of `matvec_q4k_sg.wgsl`: one `subgroupAdd`.
const LANE_SUM_SUBGROUP: &str = "fn lane_sum(v: vec4<f32>, lid: u32, lane: u32) -> vec4<f32> {
    return subgroupAdd(v);
}";
/// ... without subgroups: lanes are the SG consecutive invocations `lid - lane ..`, summed by a
/// tree in workgroup memory (the fallback for a device that rejects the subgroup module, and
/// what tests run on devices without subgroups).
const LANE_SUM_PLAIN: &str = "var<workgroup> lane_scratch: array<vec4<f32>, 256>;
fn lane_sum(v: vec4<f32>, lid: u32, lane: u32) -> vec4<f32> {
    lane_scratch[lid] = v;
    workgroupBarrier();
    for (var s = SG / 2u; s > 0u; s = s >> 1u) {
        if (lane < s) {
            lane_scratch[lid] += lane_scratch[lid + s];
        }
        workgroupBarrier();
    }
    let total = lane_scratch[lid - lane];
    workgroupBarrier();
    return total;
}";

/// Fills in `matvec_q4k_sg.wgsl`'s subgroup size, rows per subgroup and lane builtins, and
/// writes out its per-row code for `rps` rows and its `row_sums` function once per job.
fn matvec_sg_source(src: &str, subgroups: bool, sg: u32, rps: u32, jobs: u32) -> String {
    let (builtins, locals, lane_sum) = if subgroups {
        (
            ", @builtin(subgroup_invocation_id) sg_lane: u32, @builtin(subgroup_id) sg_id: u32, \
             @builtin(num_subgroups) n_sg: u32, @builtin(subgroup_size) sg_size: u32",
            "",
            LANE_SUM_SUBGROUP,
        )
    } else {
        (
            "",
            "let sg_lane = lid % SG;\n    let sg_id = lid / SG;\n    let n_sg = NSG;\n    \
             let sg_size = SG;",
            LANE_SUM_PLAIN,
        )
    };
    // Rows 0..rps written out (accumulators acc.x, .y, .z, .w): values stay in registers
    // without relying on the compiler to unroll loops over arrays.
    let rows: Vec<(usize, &str)> = ["x", "y", "z", "w"]
        .into_iter()
        .take(rps as usize)
        .enumerate()
        .collect();
    let mut row_bases = Vec::new();
    let mut loads = Vec::new();
    let mut math = Vec::new();
    for &(i, c) in &rows {
        row_bases.push(format!(
            "let rb{i} = min(first + {i}u, n_out - 1u) * row_vec4;"
        ));
        let dot = |piece: &str| {
            format!(
                "piece_dot(h{piece}{i}, q{piece}{i}, t{piece}, x{piece}0, x{piece}1, x{piece}2, \
                 x{piece}3, x{piece}4, x{piece}5, x{piece}6, x{piece}7, sl{piece}, sh{piece})"
            )
        };
        math.push(format!(
            "acc.{c} += {} + select(0.0, {}, b_live);",
            dot("a"),
            dot("b")
        ));
    }
    // All rows' loads of piece a, then of piece b.
    for piece in ["a", "b"] {
        for &(i, _) in &rows {
            loads.push(format!("let h{piece}{i} = wsrc[rb{i} + b{piece}];"));
            loads.push(format!(
                "let q{piece}{i} = wsrc[rb{i} + b{piece} + 1u + t{piece}];"
            ));
        }
    }
    let row_args: Vec<String> = rows.iter().map(|(i, _)| format!("rb{i}")).collect();
    let row_params: Vec<String> = row_args.iter().map(|a| format!("{a}: u32")).collect();
    let args = format!(
        "{}, pieces, last_piece, x4, sg_lane, sg_size",
        row_args.join(", ")
    );
    let call = if jobs > 1 {
        let mut c = String::from("var acc: vec4<f32>;\n        switch job {\n");
        for j in 1..jobs {
            c.push_str(&format!(
                "            case {j}u: {{ acc = row_sums_{j}({args}); }}\n"
            ));
        }
        c.push_str(&format!(
            "            default: {{ acc = row_sums_0({args}); }}\n        }}"
        ));
        c
    } else {
        format!("let acc = row_sums_0({args});")
    };
    // The row_sums template, once per job with that job's weight binding.
    let (begin, end) = ("// BEGIN row_sums", "// END row_sums");
    let (head, rest) = src.split_at(src.find(begin).unwrap_or(src.len()));
    let (template, tail) = rest.split_at(rest.find(end).map_or(0, |e| e + end.len()));
    let mut out = head.to_string();
    for j in 0..jobs {
        let binding = if j == 0 {
            "wq[".to_string()
        } else {
            format!("wq{j}[")
        };
        out.push_str(
            &template
                .replace("MV_ROW_PARAMS", &row_params.join(", "))
                .replace("MV_LOADS", &loads.join("\n        "))
                .replace("MV_MATH", &math.join("\n        "))
                .replace("row_sums_JOB", &format!("row_sums_{j}"))
                .replace("wsrc[", &binding),
        );
        out.push('\n');
    }
    out.push_str(tail);
    out.replace("LANE_SUM_FN", lane_sum)
        .replace("LANE_BUILTINS", builtins)
        .replace("LANE_LOCALS", locals)
        .replace("MV_ROW_BASES", &row_bases.join("\n        "))
        .replace("MV_SUMS_CALL", &call)
        .replace("MV_WIDTH", &sg.to_string())
        .replace("MV_RPS", &rps.to_string())
}

/// gemm_f16.wgsl for `tile`, with the fragment code generated (naga 30 cannot index arrays of
/// cooperative matrices, so every fragment is a named variable).
fn gemm_source(tile: GemmTile, split: bool, subgroups: bool) -> String {
    let mut decls = String::new();
    let mut step = String::new();
    let mut store = String::new();
    for i in 0..tile.fm {
        step += &format!(
            "            let a{i} = coopLoadT<coop_mat16x16<f16, A>>(&x_tile[xc + (fm + {}u) * AS + kk], AS);\n",
            16 * i
        );
    }
    for j in 0..tile.fn_ {
        step += &format!(
            "            let b{j} = coopLoadT<coop_mat16x16<f16, B>>(&w_tile[wc + kk * BS + fn_ + {}u], BS);\n",
            16 * j
        );
    }
    for i in 0..tile.fm {
        for j in 0..tile.fn_ {
            decls += &format!("    var c{i}{j} = coop_mat16x16<f32, C>();\n");
            step += &format!("            c{i}{j} = coopMultiplyAdd(a{i}, b{j}, c{i}{j});\n");
            // Barriers around the staging tile: every subgroup stages one fragment at a time.
            store += &format!(
                "    coopStoreT(c{i}{j}, &c_tile[st], CS);\n    workgroupBarrier();\n    \
                 write_fragment(st, lane, r0 + fm + {}u, n0 + fn_ + {}u, z);\n    \
                 workgroupBarrier();\n",
                16 * i,
                16 * j
            );
        }
    }
    let (sg_builtin, sg_id, lane_builtin, lane) = if subgroups {
        (
            ", @builtin(subgroup_id) sg_id: u32",
            "sg_id",
            ", @builtin(subgroup_invocation_id) sg_lane: u32",
            "sg_lane",
        )
    } else {
        ("", "lid / 32u", "", "lid % 32u")
    };
    let body = GEMM_F16
        .replace("GEMM_SGM", &tile.sgm.to_string())
        .replace("GEMM_SGN", &tile.sgn.to_string())
        .replace("GEMM_FM", &tile.fm.to_string())
        .replace("GEMM_FN", &tile.fn_.to_string())
        .replace(
            "GEMM_OUTPUT",
            if split {
                GEMM_OUT_SPLIT
            } else {
                GEMM_OUT_DIRECT
            },
        )
        .replace("ACC_DECLS", &decls)
        .replace("STEP_CODE", &step)
        .replace("STORE_CODE", &store)
        .replace("COOP_SG_BUILTIN", sg_builtin)
        .replace("COOP_LANE_BUILTIN", lane_builtin)
        .replace("COOP_SG_ID", sg_id)
        .replace("COOP_LANE", lane);
    format!("enable f16;\nenable wgpu_cooperative_matrix;\n{COMMON}{body}")
}

/// `MatMulCoop(kind)` with its cooperative-matrix operations replaced by plain WGSL
/// (coop_emulated.wgsl): the same tiles, decoding, f16 rounding and output code, runnable on any
/// device with shader-f16, so tests cover everything around the tensor-core calls.
pub(super) fn coop_emulated_source(kernel: Kernel) -> String {
    let real = source(kernel, false, true);
    let rewrites = [
        ("enable wgpu_cooperative_matrix;\n", ""),
        ("coop_mat16x16<f32, C>()", "array<f32, 8>()"),
        ("coopLoadT<coop_mat16x16<f16, A>>(&x_tile[", "("),
        ("coopLoadT<coop_mat16x16<f16, B>>(&w_tile[", "("),
        ("], AS)", ")"),
        ("], BS)", ")"),
        ("coopMultiplyAdd(", "emu_mma("),
        ("coopStoreT(", "emu_store("),
        (", &c_tile[", ", "),
        ("], CS)", ")"),
        (
            "    let sg = lid / 32u;",
            "    emu_lane = lid % 32u;\n    let sg = lid / 32u;",
        ),
    ];
    let mut s = real;
    for (from, to) in rewrites {
        s = s.replace(from, to);
    }
    s + COOP_EMULATED
}

/// Rewrites a matrix kernel for `jobs` weight bindings: `wq` stays binding 1 (job 0), jobs 1.. get
/// bindings 4.., and every `wq[i]` becomes `wload(i)`, which reads the current job's binding.
fn with_job_bindings(src: &str, jobs: u32) -> String {
    let decl_start = "var<storage, read> wq: ";
    let elem = src
        .find(decl_start)
        .and_then(|at| {
            let rest = &src[at + decl_start.len()..];
            let ty = &rest[..rest.find(';')?];
            Some(ty.strip_prefix("array<")?.strip_suffix('>')?.to_string())
        })
        .unwrap_or_else(|| "u32".to_string());
    // `wq[...]` -> `wload(...)`, matching nested brackets.
    let mut out = String::with_capacity(src.len() + 1024);
    let mut rest = src;
    while let Some(at) = rest.find("wq[") {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        out.push_str(&rest[..at]);
        if !boundary {
            out.push_str("wq[");
            rest = &rest[at + 3..];
            continue;
        }
        let inner = &rest[at + 3..];
        let mut depth = 1;
        let mut end = inner.len();
        for (i, c) in inner.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.push_str("wload(");
        out.push_str(&inner[..end]);
        out.push(')');
        rest = inner.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    let mut extra = String::new();
    let mut cases = String::new();
    for j in 1..jobs {
        extra.push_str(&format!(
            "@group(0) @binding({}) var<storage, read> wq{j}: array<{elem}>;\n",
            3 + j
        ));
        cases.push_str(&format!("        case {j}u: {{ return wq{j}[i]; }}\n"));
    }
    extra.push_str(&format!(
        "fn wload(i: u32) -> {elem} {{\n    switch cur_job {{\n{cases}        \
         default: {{ return wq[i]; }}\n    }}\n}}\n"
    ));
    out + &extra
}
