//! The staff UI and HQ's console in a real browser (tests/ui: ui.test.mjs, hq.test.mjs): the real binary, Debian's Chromium via
//! playwright-core, axe-core on every page, real MQTT devices. A test binary of its own, named so that
//! cargo runs it last (test binaries run in name order): after the `it` suite instead of beside
//! the process-killing sync tests, which on two cores slowed the browser's live updates past the
//! tests' waits, and so that a machine without the browser tools still runs every other test
//! before this one fails.

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_storebox");

/// A missing tool is a failure, never a skip.
#[test]
fn browser_tests_in_chromium() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui");
    let hint = "run scripts/test (it installs Chromium, Node.js and tests/ui's packages, then runs the suite)";
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({node:?}); {hint}"
    );
    assert!(
        ui.join("node_modules/playwright-core").is_dir()
            && ui.join("node_modules/axe-core").is_dir(),
        "tests/ui/node_modules is missing; {hint}"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing; {hint}"
    );
    let out = std::process::Command::new("node")
        .args(["--test", "ui.test.mjs", "hq.test.mjs"])
        .current_dir(&ui)
        .env("STOREBOX_BIN", BIN)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node --test");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Show the node test runner's report and summary lines in cargo's output (written to the
    // process's stdout directly, which the test harness does not capture).
    use std::io::Write;
    let _ = std::io::stdout().write_all(out.stdout.as_slice());
    let _ = std::io::stdout().flush();
    assert!(
        out.status.success(),
        "browser tests failed (screenshots in target/ui-screenshots):\n{stdout}\n{stderr}"
    );
}
