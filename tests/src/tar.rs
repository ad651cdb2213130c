//! Reading tar archives the tests produce.

use std::io::Read;

/// The entry paths of a tar archive, sorted, without trailing `/`.
#[track_caller]
pub fn tar_paths(archive: impl Read) -> Vec<String> {
    let mut archive = tar::Archive::new(archive);
    let mut paths: Vec<String> = archive
        .entries()
        .expect("a tar stream")
        .map(|e| {
            e.expect("tar entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    paths.sort();
    paths
}
