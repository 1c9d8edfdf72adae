//! `copyscope probes`: one line per probe.

use anyhow::Result;

use crate::loader::{self, LoadOptions};

pub fn run(json: bool) -> Result<i32> {
    let loaded = loader::load(&LoadOptions::default())?;
    if json {
        let doc = serde_json::json!({ "kernel": loaded.kernel, "probes": loaded.probes });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("kernel {}", loaded.kernel);
        println!(
            "{:<10} {:<20} {:<16} {:<10} DETAIL",
            "FAMILY", "HOOK", "METHOD", "STATUS"
        );
        for p in &loaded.probes {
            let status = match (p.attached, p.required) {
                (true, _) => "attached",
                (false, true) => "FAILED",
                (false, false) => "skipped",
            };
            println!(
                "{:<10} {:<20} {:<16} {:<10} {}",
                p.family,
                p.hook,
                p.method.unwrap_or("-"),
                status,
                p.detail
            );
        }
    }
    let failed = loaded.probes.iter().any(|p| p.required && !p.attached);
    Ok(if failed { 1 } else { 0 })
}
