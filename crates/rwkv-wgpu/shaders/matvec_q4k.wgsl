// Q4_K matrix-vector product for few activation rows (decode): out[r][o] (=|+=)
// act(W[o] . x[r] + bias[o]) for 4 rows of one chunk of W per workgroup of 64 invocations and
// one activation row r = wid.z.
// A Q4_K block (256 values, 144 bytes) is 9 vec4<u32>: [d|dmin, scales 0..3, 4..7, 8..11], then 8
// "pieces" of 16 quant bytes. Piece t holds sub-blocks 2g (low nibbles) and 2g + 1 (high), g = t/2,
// values 64g + 16(t%2) + 0..15 and + 32. Invocation p takes pieces p, p + 64, ... of the row
// (consecutive invocations read consecutive 16-byte pieces), loads the 32 activations of its
// piece once (8 vec4 loads) and uses them for the workgroup's 4 rows; per row it reads the
// header (shared by the block's 8 pieces) and its piece, and sums
//   d·sc·Σ q·x − dmin·mn·Σ x   per sub-block (so no per-value scale arithmetic).
// The activations are bound as vec4<f32> (offsets and rows are multiples of 4 values).
// params: as matmul.wgsl (10 groups_x counts workgroups of 4 rows, 11 units per row).
const WG: u32 = 64u;
const WG_HALF_POW2: u32 = 32u;
const ROWS: u32 = 4u;

@group(0) @binding(1) var<storage, read> wq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> arena: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> vecs: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32, SG_BUILTINS) {
    let job = job_of(wid);
    cur_job = job;
    let n_out = jp(job, 0u);
    let first = job_group(wid, job) * ROWS;
    if (first >= n_out) {
        return;
    }
    let cols = jp(job, 1u);
    let row_vec4 = jp(job, 2u) / 4u;
    let r = wid.z;
    let pieces = jp(job, 11u) / 2u;
    let x4 = (jp(job, 4u) + r * cols) / 4u;
    var acc = vec4<f32>(0.0);
    for (var p = lid; p < pieces; p += WG) {
        let blk = p / 8u;
        let t = p % 8u;
        let xb = x_base(x4, p);
        let xl0 = arena[xb];
        let xl1 = arena[xb + 1u];
        let xl2 = arena[xb + 2u];
        let xl3 = arena[xb + 3u];
        let xh0 = arena[xb + 8u];
        let xh1 = arena[xb + 9u];
        let xh2 = arena[xb + 10u];
        let xh3 = arena[xb + 11u];
        let ones = vec4<f32>(1.0);
        let sum_lo = dot(xl0 + xl1 + xl2 + xl3, ones);
        let sum_hi = dot(xh0 + xh1 + xh2 + xh3, ones);
        // A guard instead of a break keeps the trip count constant, so the compiler can unroll
        // the rows and issue their loads together.
        for (var i = 0u; i < ROWS; i++) {
            let o = min(first + i, n_out - 1u);
            let base = o * row_vec4 + blk * 9u;
            let part = piece_dot(
                wq[base], wq[base + 1u + t], t,
                xl0, xl1, xl2, xl3, xh0, xh1, xh2, xh3, sum_lo, sum_hi
            );
            acc[i] += select(0.0, part, first + i < n_out);
        }
    }
    let total = block_sum4(acc, lid, SG_ARGS);
    let o = first + lid;
    if (lid < ROWS && o < n_out) {
        var val = total[lid];
        let bias_off = jp(job, 7u);
        if (bias_off != NONE) {
            val += vecs[bias_off + o];
        }
        val = apply_act(jp(job, 8u), val);
        let idx = jp(job, 5u) + r * jp(job, 6u) + o;
        if (jp(job, 9u) != 0u) {
            arena[idx / 4u][idx % 4u] += val;
        } else {
            arena[idx / 4u][idx % 4u] = val;
        }
    }
}
