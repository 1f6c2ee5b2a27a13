//! `rwkv doctor`: which backends and devices this machine has, and why any is unavailable.

use clap::Args;
use rwkv::{BackendChoice, Result};

use super::emit;

#[derive(Args)]
pub struct DoctorArgs {
    #[arg(long)]
    json: bool,
}

pub fn doctor(a: DoctorArgs) -> Result<()> {
    let reports = rwkv::router::report_all();
    if a.json {
        return emit(&serde_json::to_string_pretty(&reports).unwrap_or_default());
    }
    for r in &reports {
        let status = if r.available {
            "available"
        } else {
            "unavailable"
        };
        println!(
            "{:<7} {status}{}",
            r.backend,
            r.reason
                .as_ref()
                .map(|w| format!(": {w}"))
                .unwrap_or_default()
        );
        for d in &r.devices {
            println!("  - {}", d.device);
            for (k, v) in &d.properties {
                println!("      {k}: {v}");
            }
        }
    }
    match rwkv::router::open(BackendChoice::Auto) {
        Ok(o) => println!("auto would choose: {}", o.why),
        Err(e) => println!("auto cannot open any backend: {e}"),
    }
    Ok(())
}
