//! `shipgate demo` is the README's first command: it must pass, as the real binary.

#[tokio::test]
async fn the_demo_passes_every_step() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_shipgate"))
        .arg("demo")
        .output()
        .await
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("demo passed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    for step in [
        "routed by SKU, submitted once",
        "a stockout opens an exception and holds the order in Shopify",
        "an agent down for a simulated day gets the submission once",
        "nothing reached Shopify before a passing check and the carrier's own pickup scan",
        "the gate was never bypassed",
    ] {
        assert!(stdout.contains(step), "missing step {step:?}:\n{stdout}");
    }
}
