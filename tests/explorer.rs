//! The cluster explorer in a real browser: headless Chromium (Debian's, installed by
//! `tests/browser/chromium.sh` if missing) loads node 1's page over TLS, with a user's bearer
//! token in the address's fragment, runs its script, and the DOM it renders is checked
//! against what `weft ctl --json` says of the same cluster: every node with its state,
//! replica and primary counts, every replica of every partition with its node and role, the
//! cluster manager. Without a token the page shows its sign-in form and no data. A
//! screenshot is kept at `target/explorer.png`.

mod common;

use std::time::Duration;

use common::{LocalNode, ctl_json, free_addrs, wait_for, weft};
use serde_json::Value;

fn chromium() -> String {
    let out = std::process::Command::new("bash").arg("tests/browser/chromium.sh").output().expect("chromium.sh");
    assert!(out.status.success(), "tests/browser/chromium.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The DOM Chromium renders for `url` once its script ran (its fetches are waited for
/// within a virtual-time budget), and a screenshot of it when asked.
fn render(browser: &str, url: &str, screenshot: Option<&str>) -> String {
    let profile = tempfile::tempdir().expect("a profile directory");
    let mut cmd = std::process::Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        // The test CA is not in the system's trust store; the connection is TLS all the same.
        "--ignore-certificate-errors",
        "--virtual-time-budget=10000",
        "--window-size=1400,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()));
    match screenshot {
        Some(path) => cmd.arg(format!("--screenshot={path}")),
        None => cmd.arg("--dump-dom"),
    };
    let out = cmd.arg(url).output().expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the page must show, from `weft ctl --json`: one marker per node and replica.
fn expected(ep: &str) -> Vec<String> {
    let status = ctl_json(ep, &["status"]);
    let mut want = vec![format!("data-manager=\"{}\"", status["manager_node"])];
    for n in ctl_json(ep, &["nodes"]).as_array().expect("nodes") {
        want.push(format!(
            "data-node=\"{}\" data-state=\"{}\" data-replicas=\"{}\" data-primaries=\"{}\"",
            n["id"],
            n["state"].as_str().unwrap_or(""),
            n["replicas"],
            n["primaries"]
        ));
    }
    for p in ctl_json(ep, &["partitions"]).as_array().expect("partitions") {
        for r in p["replicas"].as_array().expect("replicas") {
            want.push(format!(
                "class=\"replica\" data-partition=\"{}\" data-node=\"{}\" data-role=\"{}\"",
                p["id"],
                r["node"],
                r["role"].as_str().unwrap_or("")
            ));
        }
    }
    want
}

#[tokio::test(flavor = "multi_thread")]
async fn the_explorer_shows_in_a_browser_what_weft_ctl_says() {
    let browser = chromium();
    let addrs = free_addrs(6);
    let (metrics, seeds) = (addrs[5].clone(), addrs[..3].join(","));
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_weft"));
    let _nodes: Vec<LocalNode> = (1..=5u64)
        .map(|i| {
            let (ud, fd) = (format!("ud{i}"), format!("fd{i}"));
            let mut extra = vec!["--ud", &ud, "--fd", &fd, "--seeds", &seeds, "--balance-every", "0"];
            if i == 1 {
                extra.extend(["--metrics", &metrics]);
            }
            LocalNode::start_at(bin, i, &addrs[i as usize - 1], &extra).expect("start node")
        })
        .collect();
    let ep = addrs[0].clone();
    wait_for(Duration::from_secs(60), "five nodes up", || {
        let ep = ep.clone();
        async move {
            let (ok, out, _) = weft(&["ctl", "--endpoint", &ep, "--json", "nodes"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            (ok && v.as_array()?.iter().filter(|n| n["state"] == "up").count() == 5).then_some(())
        }
    })
    .await;
    ctl_json(&ep, &["create-service", "shop", "--partitions", "3"]);
    wait_for(Duration::from_secs(60), "every partition with a primary and its replicas", || {
        let ep = ep.clone();
        async move {
            let parts = ctl_json(&ep, &["partitions", "--service", "shop"]);
            let parts = parts.as_array()?;
            let ready = parts.len() == 3
                && parts.iter().all(|p| {
                    let roles: Vec<&str> =
                        p["replicas"].as_array().into_iter().flatten().filter_map(|r| r["role"].as_str()).collect();
                    roles.len() == 4
                        && roles.contains(&"primary")
                        && roles.iter().all(|r| *r == "primary" || *r == "secondary")
                });
            ready.then_some(())
        }
    })
    .await;
    let added = ctl_json(&ep, &["user", "add", "viewer", "--with-token"]);
    let token = added["token"].as_str().unwrap_or_else(|| panic!("a token: {added}")).to_string();

    // Without a token (and without a certificate) the page asks for one and shows nothing.
    let page = format!("https://{metrics}/");
    let dom = render(&browser, &page, None);
    assert!(dom.contains("data-loaded=\"0\""), "no data without a token: {dom}");
    assert!(!dom.contains("<section id=\"login\" hidden"), "the sign-in form shows: {dom}");
    assert!(!dom.contains("data-node="), "no node is shown: {dom}");

    // With the token: what the page shows is what weft ctl says. The cluster is idle, but
    // a comparison may straddle a change; it is made again before it counts as a failure.
    let url = format!("{page}#token={token}");
    let mut missing = Vec::new();
    for _ in 0..3 {
        let want = expected(&ep);
        let dom = render(&browser, &url, None);
        assert!(dom.contains("data-loaded=\"1\""), "the page loaded its data: {dom}");
        missing = want.into_iter().filter(|w| !dom.contains(w.as_str())).collect();
        if missing.is_empty() {
            let replicas = dom.matches("class=\"replica\"").count();
            assert!(replicas >= 3 * 4, "every replica of the service is drawn: {replicas}");
            assert!(dom.contains("data-service=\"shop\"") && !dom.contains("data-alarm="), "{dom}");
            break;
        }
    }
    assert!(missing.is_empty(), "the page does not show what weft ctl says: {missing:?}");

    // A screenshot, kept for a person to look at (CI may keep it as an artifact).
    let shot = concat!(env!("CARGO_TARGET_TMPDIR"), "/../explorer.png");
    render(&browser, &url, Some(shot));
    let len = std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0);
    assert!(len > 10_000, "a screenshot of the page: {len} bytes at {shot}");
}
