//! `copyscope unpin`: remove the pinned programs, maps and totals of `copyscope run`, and
//! nothing else.

use std::path::Path;

use anyhow::Result;

use crate::pin::{self, Unpinned};

pub fn run(path: &Path) -> Result<i32> {
    match pin::unpin(path)? {
        Unpinned::Nothing => {
            eprintln!("copyscope: nothing to unpin at {}", path.display());
        }
        Unpinned::Removed { objects, left } => {
            eprintln!(
                "copyscope: removed {objects} pinned objects from {}; the programs detach and \
                 the maps are freed once no agent holds them",
                path.display()
            );
            if !left.is_empty() {
                eprintln!(
                    "copyscope: left in {} what is not copyscope's: {}",
                    path.display(),
                    left.join(", ")
                );
            }
        }
    }
    Ok(0)
}
