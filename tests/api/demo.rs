//! `shipgate demo` is the README's first command: it must pass, as the real binary.

/// Returns an error rather than panicking, so that a failure ends with the failing steps and the
/// demo's last log lines instead of a backtrace (CI shows only the tail of the output).
#[tokio::test]
async fn the_demo_passes_every_step() -> Result<(), String> {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
        .arg("demo")
        .output()
        .await
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let failed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("FAIL") || l.starts_with("demo failed"))
        .collect();
    let mut problems = Vec::new();
    if !output.status.success() {
        problems.push(format!("the demo exited with {}", output.status));
    }
    if !stdout.contains("demo passed") {
        problems.push("no \"demo passed\" line".to_string());
    }
    for step in [
        "routed by SKU, submitted once",
        "a stockout opens an exception and holds the order in Shopify",
        "an address the agent cannot ship to is held (INCORRECT_ADDRESS)",
        "an agent down for a simulated day gets the submission once",
        "nothing reached Shopify before a passing check and the carrier's own pickup scan",
        "the gate was never bypassed",
    ] {
        if !stdout.contains(step) {
            problems.push(format!("missing step {step:?}"));
        }
    }
    if problems.is_empty() && failed.is_empty() {
        return Ok(());
    }
    let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
    Err(format!(
        "{}\n--- the whole timeline:\n{stdout}\n--- the last log lines:\n{}\n--- failing steps:\n{}\n{}",
        problems.join("; "),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        failed.join("\n"),
        problems.join("; "),
    ))
}
