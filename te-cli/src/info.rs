//! `te info`: a peer segment's remotely visible regions, as a table or JSON.

use serde_json::json;
use te_runtime::{Engine, EngineConfig, Perm, Region};

use crate::error::{Ended, Result};

/// Arguments of `te info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// The peer's segment name: host:port (what `te serve` prints on its
    /// first line), or a name in --directory.
    pub segment: String,
    /// Where names are looked up.
    #[command(flatten)]
    pub directory: crate::flags::DirectoryArgs,
    /// Shared secret of the peer.
    #[arg(long)]
    pub secret: Option<String>,
    /// Print JSON: {"segment", "te_version", "rdma", "regions": [{"location", "base", "length", "perm"}]}
    /// ("rdma": this side's RDMA line, as printed last without --json).
    #[arg(long)]
    pub json: bool,
}

/// `rw`, `r`, `w` or `-`: what a peer may do with the region.
fn perm(r: &Region) -> &'static str {
    match (
        r.perm.contains(Perm::REMOTE_READ),
        r.perm.contains(Perm::REMOTE_WRITE),
    ) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "-",
    }
}

/// Runs `te info`.
pub fn run(args: InfoArgs) -> Result<Ended> {
    let engine = Engine::start(args.directory.apply(EngineConfig {
        secret: args.secret.map(String::into_bytes),
        ..Default::default()
    }))?;
    let seg = engine.open_segment(&args.segment)?;
    let regions = engine.segment_info(seg)?;
    if args.json {
        let list: Vec<_> = regions
            .iter()
            .map(|r| {
                json!({
                    "location": r.span.location.to_string(),
                    "base": r.span.addr,
                    "length": r.span.len,
                    "perm": perm(r),
                })
            })
            .collect();
        out!(
            "{}",
            json!({"segment": args.segment, "te_version": env!("CARGO_PKG_VERSION"), "rdma": engine.rdma_status(), "regions": list})
        );
        return Ok(Ended::Done);
    }
    out!("{:<10} {:>18} {:>14} perm", "location", "base", "length");
    for r in &regions {
        out!(
            "{:<10} {:>#18x} {:>14} {}",
            r.span.location.to_string(),
            r.span.addr,
            r.span.len,
            perm(r)
        );
    }
    out!("{} regions", regions.len());
    out!("{}", engine.rdma_status());
    Ok(Ended::Done)
}
