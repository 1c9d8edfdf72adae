//! `copyscope unpin`: remove the pinned programs, maps and totals of `copyscope run`.

use std::path::Path;

use anyhow::Result;

pub fn run(path: &Path) -> Result<i32> {
    let n = crate::pin::unpin(path)?;
    eprintln!(
        "copyscope: removed {n} pinned objects from {}; the programs detach and the maps are \
         freed once no agent holds them",
        path.display()
    );
    Ok(0)
}
