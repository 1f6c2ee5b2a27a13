// Q4_K matrix-vector product for few activation rows (decode), reduced with subgroup
// operations: out[r][o] (=|+=) act(W[o] . x[r] + bias[o]) for one activation row r = wid.z.
// 256 invocations = NSG subgroups of SG (SG, the device's fixed subgroup size, and RPS are set
// when the module is built); subgroup s owns the RPS output rows first + s·RPS + 0..RPS-1.
// Block layout as in matvec_q4k.wgsl: a 144-byte block is 9 vec4<u32>, [d|dmin, scales 0..3,
// 4..7, 8..11], then 8 "pieces" of 16 quant bytes; piece t holds sub-blocks 2g (low nibbles) and
// 2g + 1 (high nibbles) of values 64g + 16(t%2) + 0..15 and + 32, g = t/2. Lane l of a subgroup
// takes pieces l, l + SG, l + 2·SG, ... of its rows (the subgroup reads SG consecutive 16-byte
// pieces of a row per step), two pieces per step: all loads of a step (RPS headers + RPS pieces
// per piece, and the 8 activation vec4 of each piece, shared by the RPS rows) are issued before
// its arithmetic, so 2·2·RPS weight vec4 per lane are in flight. The trip counts of the inner
// loops are constants (a second piece past the row end is loaded clamped and weighted zero), so
// the compiler can unroll them. Per sub-block: d·sc·Σ q·x − dmin·mn·Σ x (same formula as
// matvec_q4k.wgsl). The lanes' partial sums of the RPS rows are one vec4 `subgroupAdd`: no
// workgroup memory, no barrier.
// Robustness: the stride and the subgroup index come from the builtins, and subgroup s computes
// the "virtual" subgroups s, s + num_subgroups, ... < NSG, so the result is right for any
// subgroup size (the grid assumes SG; another size only changes the speed). Without subgroups
// (the lane locals are defined from the invocation index, and `lane_sum` is a tree in workgroup
// memory) the same code runs on any device.
// params: as matvec_q4k.wgsl (10 groups_x counts workgroups of NSG·RPS rows, 11 units per row).
const SG: u32 = MV_WIDTHu;
const RPS: u32 = MV_RPSu;
const NSG: u32 = 256u / SG;
const ROWS: u32 = NSG * RPS;

@group(0) @binding(1) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> arena: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

LANE_SUM_FN

// BEGIN row_sums: copied per job of the dispatch, each copy reading that job's weight binding
// (so weight loads need no per-load switch on the job, unlike `wload` in jobs.wgsl).
// The lane's partial sums of the subgroup's rows (row starts rb0.., in vec4 of the binding).
fn row_sums_JOB(MV_ROW_PARAMS, pieces: u32, last_piece: u32, x4: u32, lane: u32, stride: u32) -> vec4<f32> {
    let ones = vec4<f32>(1.0);
    var acc = vec4<f32>(0.0);
    for (var p0 = lane; p0 < pieces; p0 += 2u * stride) {
        // Pieces a (p0) and b (p0 + stride; past the row end it reloads the last piece,
        // weighted zero) of this step.
        let p1 = p0 + stride;
        let pa = p0;
        let pb = min(p1, last_piece);
        let ba = (pa / 8u) * 9u;
        let bb = (pb / 8u) * 9u;
        let ta = pa % 8u;
        let tb = pb % 8u;
        // Every weight load of the step first (header and piece of each row, both pieces),
        // then the activations (shared by the rows), then the arithmetic. Written out per
        // row when the module is built, so the values stay in registers.
        MV_LOADS
        let xba = x_base(x4, pa);
        let xa0 = arena[xba];
        let xa1 = arena[xba + 1u];
        let xa2 = arena[xba + 2u];
        let xa3 = arena[xba + 3u];
        let xa4 = arena[xba + 8u];
        let xa5 = arena[xba + 9u];
        let xa6 = arena[xba + 10u];
        let xa7 = arena[xba + 11u];
        let xbb = x_base(x4, pb);
        let xb0 = arena[xbb];
        let xb1 = arena[xbb + 1u];
        let xb2 = arena[xbb + 2u];
        let xb3 = arena[xbb + 3u];
        let xb4 = arena[xbb + 8u];
        let xb5 = arena[xbb + 9u];
        let xb6 = arena[xbb + 10u];
        let xb7 = arena[xbb + 11u];
        let sla = dot(xa0 + xa1 + xa2 + xa3, ones);
        let sha = dot(xa4 + xa5 + xa6 + xa7, ones);
        let slb = dot(xb0 + xb1 + xb2 + xb3, ones);
        let shb = dot(xb4 + xb5 + xb6 + xb7, ones);
        let b_live = p1 < pieces;
        MV_MATH
    }
    return acc;
}
// END row_sums

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32LANE_BUILTINS) {
    LANE_LOCALS
    let job = job_of(wid);
    cur_job = job;
    let n_out = jp(job, 0u);
    let group_first = job_group(wid, job) * ROWS;
    if (group_first >= n_out) {
        return;
    }
    let row_vec4 = jp(job, 2u) / 4u;
    let r = wid.z;
    let pieces = jp(job, 11u) / 2u;
    let last_piece = max(pieces, 1u) - 1u;
    let x4 = (jp(job, 4u) + r * jp(job, 1u)) / 4u;
    // One pass when the device's subgroups are SG wide; more (or idle subgroups) otherwise.
    for (var v0 = 0u; v0 < NSG; v0 += n_sg) {
        let vs = v0 + sg_id;
        let first = group_first + min(vs, NSG - 1u) * RPS;
        // Row starts: rows past the end read the last row; their sums are never written.
        MV_ROW_BASES
        MV_SUMS_CALL
        let total = lane_sum(acc, lid, sg_lane);
        if (sg_lane == 0u && vs < NSG) {
            let bias_off = jp(job, 7u);
            let act = jp(job, 8u);
            let accumulate = jp(job, 9u) != 0u;
            let out_row = jp(job, 5u) + r * jp(job, 6u);
            for (var i = 0u; i < RPS; i++) {
                let o = first + i;
                if (o < n_out) {
                    var val = total[i];
                    if (bias_off != NONE) {
                        val += vecs[bias_off + o];
                    }
                    val = apply_act(act, val);
                    let idx = out_row + o;
                    if (accumulate) {
                        arena[idx / 4u][idx % 4u] += val;
                    } else {
                        arena[idx / 4u][idx % 4u] = val;
                    }
                }
            }
        }
    }
}
