// Several independent matrix products in one dispatch (the jobs of one MatMul op, each its own
// weight binding): job j's parameters are words 16j .. 16j + 11 (job 0: the single-job layout),
// its workgroups start at word 12 + j in the linear index wid.x + wid.y · word 10 (word 12 is 0).
// Saves the launch and the barrier between dispatches of products that do not depend on each
// other. JOBS (1..4) is set when the module is built; with JOBS > 1 the weight reads go through
// `wload`, which picks the job's binding.
const JOBS: u32 = MM_JOBSu;
var<private> cur_job: u32;

fn jp(job: u32, i: u32) -> u32 { return prm(16u * job + i); }

fn job_of(wid: vec3<u32>) -> u32 {
    let g = wid.x + wid.y * prm(10u);
    var job = 0u;
    for (var j = 1u; j < JOBS; j++) {
        if (g >= prm(12u + j)) {
            job = j;
        }
    }
    return job;
}

// The workgroup's index within its job.
fn job_group(wid: vec3<u32>, job: u32) -> u32 {
    return wid.x + wid.y * prm(10u) - prm(12u + job);
}
