//! What the bench binaries share.

/// The value after `--name` on the command line, parsed, or `default` (cargo bench adds its own
/// arguments, such as `--bench`, which are passed over).
pub fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|x| x == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
