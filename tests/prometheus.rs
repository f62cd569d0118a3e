//! The dashboard and the alert rules against the real thing: `deploy/prometheus/check.sh`
//! installs Debian's Prometheus if it is missing, checks and unit-tests the rules with
//! `promtool`, then scrapes a real playground of this build with a real Prometheus,
//! evaluates every query of `deploy/grafana/weft.json`, checks a node's exposition with
//! `promtool check metrics`, kills a node and waits for `WeftNodeDown` to fire.

#[test]
fn dashboard_queries_and_alerts_work_against_a_real_prometheus() {
    let out = std::process::Command::new("bash")
        .arg("deploy/prometheus/check.sh")
        .arg(env!("CARGO_BIN_EXE_weft"))
        .output()
        .expect("run deploy/prometheus/check.sh");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "deploy/prometheus/check.sh failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}\n{stderr}");
    assert!(stderr.contains("WeftNodeDown fired"), "{stderr}");
}
