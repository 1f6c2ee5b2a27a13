//! naga validation (front end, validator, SPIR-V writer) of every kernel variant, and the
//! workgroup memory each declares against what the plan's choices check on the device.

use super::source::{coop_emulated_source, source};
use super::{GemmTile, Kernel};
use crate::weights::PackedKind;

const KINDS: [PackedKind; 6] = [
    PackedKind::F32,
    PackedKind::F16,
    PackedKind::BF16,
    PackedKind::Q8_0,
    PackedKind::Q4K,
    PackedKind::Q6K,
];

/// Parses and validates `src` as naga (the WGSL compiler inside wgpu) would on a device with
/// cooperative matrices, shader-f16 and subgroups, then writes it as SPIR-V (what wgpu hands
/// a Vulkan driver) to catch constructs the back end cannot express.
fn validate(label: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(src)));
    let caps = naga::valid::Capabilities::COOPERATIVE_MATRIX
        | naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32
        | naga::valid::Capabilities::SUBGROUP;
    let mut validator = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    validator.subgroup_stages(naga::valid::ShaderStages::COMPUTE);
    validator.subgroup_operations(naga::valid::SubgroupOperationSet::all());
    let info = match validator.validate(&module) {
        Ok(info) => info,
        Err(e) => panic!("{label}: {}", e.emit_to_string(src)),
    };
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let spirv = naga::back::spv::write_vec(&module, &info, &options, None)
        .unwrap_or_else(|e| panic!("{label}: SPIR-V: {e}"));
    assert!(
        spirv.len() > 100,
        "{label}: SPIR-V of {} words",
        spirv.len()
    );
    module
}

#[test]
fn coop_kernel_parses_and_validates_for_every_dtype() {
    for kind in KINDS {
        for (subgroups, f16) in [(true, true), (false, true), (false, false)] {
            let kernel = Kernel::MatMulCoop(kind);
            let src = source(kernel, subgroups, f16);
            assert!(src.starts_with("enable f16;\nenable wgpu_cooperative_matrix;\n"));
            assert!(!src.contains("COOP_SG"), "unreplaced placeholder");
            assert_eq!(
                src.contains("wq: array<vec4<u32>>"),
                kind == PackedKind::Q4K,
                "{kind:?}: Q4_K alone is read through vec4"
            );
            let module = validate(&format!("{kernel:?} sg {subgroups} f16 {f16}"), &src);
            // Workgroup memory within what plan/choice.rs checks against the device limit.
            let bytes: u32 = module
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
                .sum();
            assert_eq!(
                bytes,
                crate::plan::choice::COOP_WORKGROUP_BYTES,
                "{kernel:?}"
            );
            let ep = &module.entry_points[0];
            assert_eq!(ep.workgroup_size, [128, 1, 1]);
        }
    }
}

#[test]
fn emulated_coop_kernel_validates_without_cooperative_matrices() {
    let kernels = KINDS.iter().map(|&k| Kernel::MatMulCoop(k)).chain(
        [GemmTile::LARGE, GemmTile::SMALL]
            .into_iter()
            .flat_map(|tile| [false, true].map(|split| Kernel::GemmF16 { tile, split })),
    );
    for kind in kernels {
        let src = coop_emulated_source(kind);
        let code: String = src
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect();
        for gone in ["coop", "&x_tile", "&w_tile", "&c_tile", "COOP_SG"] {
            assert!(
                !code.contains(gone),
                "{kind:?}: '{gone}' left in the emulation"
            );
        }
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{kind:?}: {}", e.emit_to_string(&src)));
        let caps = naga::valid::Capabilities::SHADER_FLOAT16
            | naga::valid::Capabilities::SHADER_FLOAT16_IN_FLOAT32;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{kind:?}: {}", e.emit_to_string(&src)));
    }
}

/// Workgroup memory of a validated module.
fn workgroup_bytes(module: &naga::Module) -> u32 {
    module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
        .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
        .sum()
}

#[test]
fn f16_product_kernels_validate() {
    for tile in [GemmTile::LARGE, GemmTile::SMALL] {
        for split in [false, true] {
            for subgroups in [true, false] {
                let kernel = Kernel::GemmF16 { tile, split };
                let src = source(kernel, subgroups, true);
                for placeholder in ["COOP_", "GEMM_", "_CODE", "ACC_DECLS"] {
                    assert!(!src.contains(placeholder), "{kernel:?}: {placeholder} left");
                }
                let module = validate(&format!("{kernel:?} sg {subgroups}"), &src);
                assert_eq!(
                    workgroup_bytes(&module),
                    tile.workgroup_bytes(),
                    "{kernel:?}"
                );
                let ep = &module.entry_points[0];
                assert_eq!(ep.workgroup_size, [tile.invocations(), 1, 1]);
            }
        }
    }
    for kind in KINDS {
        for f16 in [true, false] {
            let kernel = Kernel::DequantF16(kind);
            validate(
                &format!("{kernel:?} f16 {f16}"),
                &source(kernel, false, f16),
            );
        }
    }
    validate("ToF16", &source(Kernel::ToF16, false, true));
    validate("SplitReduce", &source(Kernel::SplitReduce, false, false));
}

#[test]
fn prefill_wkv_kernels_validate() {
    for head_size in [4u32, 8, 12, 16, 64] {
        for (chunk, lanes, subgroups) in [
            (4u32, 1u32, true),
            (8, 1, false),
            (8, 2, true),
            (8, 4, true),
            (8, 4, false),
        ] {
            if !head_size.is_multiple_of(4 * lanes) {
                continue;
            }
            let kernel = Kernel::Wkv7Scan {
                head_size,
                chunk,
                lanes,
            };
            let src = source(kernel, subgroups, true);
            assert_eq!(
                src.contains("subgroupShuffleXor"),
                subgroups && lanes > 1,
                "{kernel:?}"
            );
            let module = validate(&format!("{kernel:?} sg {subgroups}"), &src);
            // Workgroup memory: what plan/choice.rs checks against the device (the chunk, plus
            // the lane sums of the variant without subgroups, its fallback).
            let bytes: u32 = module
                .global_variables
                .iter()
                .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
                .map(|(_, v)| module.types[v.ty].inner.size(module.to_ctx()))
                .sum();
            let unused = if lanes > 1 && subgroups {
                4 * head_size * lanes
            } else {
                0
            };
            assert_eq!(
                bytes + unused,
                crate::plan::choice::wkv_scan_workgroup_bytes(head_size, chunk, lanes),
                "{kernel:?}"
            );
            assert_eq!(
                module.entry_points[0].workgroup_size,
                [head_size * lanes, 1, 1]
            );
        }
        for kernel in [
            Kernel::Wkv7Prep { head_size },
            Kernel::Wkv7Post { head_size },
        ] {
            for subgroups in [true, false] {
                let src = source(kernel, subgroups, false);
                let module = validate(&format!("{kernel:?} sg {subgroups}"), &src);
                assert_eq!(module.entry_points[0].workgroup_size, [head_size, 1, 1]);
            }
        }
    }
}

#[test]
fn subgroup_matvec_validates_for_every_size_and_rows_per_subgroup() {
    for sg in [4, 8, 16, 32, 64, 128, 256] {
        for rps in [1, 2, 4] {
            for jobs in [1, 3] {
                for subgroups in [true, false] {
                    let kernel = Kernel::MatVecQ4KSg { sg, rps, jobs };
                    let src = source(kernel, subgroups, true);
                    for gone in ["MV_", "LANE_", "SG_BUILTINS", "SG_ARGS", "wsrc", "_JOB"] {
                        assert!(!src.contains(gone), "{kernel:?}: '{gone}' left");
                    }
                    // Each job's loads read its own binding directly (no per-load switch).
                    // (jobs.wgsl's `wload` is defined, never called.)
                    let wload = src.matches("wload(").count();
                    assert_eq!(wload, usize::from(jobs > 1), "{kernel:?}");
                    for j in 0..jobs {
                        let binding = if j == 0 {
                            "wq[".into()
                        } else {
                            format!("wq{j}[")
                        };
                        assert!(src.contains(&format!("fn row_sums_{j}(")), "{kernel:?}");
                        // 4 loads per row and step (+ one in the unused `wload`).
                        let loads = 4 * rps as usize + usize::from(jobs > 1);
                        assert_eq!(src.matches(&binding).count(), loads, "{kernel:?}");
                    }
                    let label = format!("{kernel:?} subgroups {subgroups}");
                    let module = validate(&label, &src);
                    // With subgroups: no workgroup memory (and hence no barrier).
                    let shared = module
                        .global_variables
                        .iter()
                        .any(|(_, v)| v.space == naga::AddressSpace::WorkGroup);
                    assert_eq!(shared, !subgroups, "{label}");
                    assert_eq!(src.contains("workgroupBarrier"), !subgroups, "{label}");
                    assert_eq!(module.entry_points[0].workgroup_size, [256, 1, 1]);
                }
            }
        }
    }
}

#[test]
fn tiled_kernel_still_validates() {
    // The coop kernel's fallback on a device that rejects it.
    for kind in KINDS {
        for (subgroups, f16) in [(true, true), (false, false)] {
            let kernel = Kernel::MatMulTiled(kind, 4);
            validate(&format!("{kernel:?}"), &source(kernel, subgroups, f16));
        }
    }
}
