//! Helpers shared by the queue's integration tests.

/// Spare files anywhere in the spool: in spare/, or named `*.spare` in a bucket.
pub fn spares(root: &std::path::Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(root).expect("reads") {
        let entry = entry.expect("entry");
        if !entry.file_type().expect("type").is_dir() {
            continue;
        }
        let all = entry.file_name() == "spare";
        n += std::fs::read_dir(entry.path())
            .expect("reads")
            .filter(|e| {
                all || e
                    .as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".spare")
            })
            .count();
    }
    n
}
