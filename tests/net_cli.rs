//! `understudy run-guest --net`: a bad network option is refused before the guest starts,
//! with an error that names the bad part once.

use std::process::{Command, Output};

use understudy_machine::program::echo_guest;

fn run_guest_with_net(net: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("understudy-net-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("echo.elf");
    std::fs::write(&kernel, echo_guest(1)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_understudy"))
        .args([
            "run-guest",
            "--kernel",
            kernel.to_str().unwrap(),
            "--net",
            net,
        ])
        .output()
        .expect("understudy starts")
}

#[test]
fn run_guest_refuses_a_malformed_forward_and_shows_the_expected_form() {
    let output = run_guest_with_net("user:hostfwd=tcp:8080");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("\"hostfwd=tcp:8080\""), "{stderr}");
    assert!(
        stderr.contains("hostfwd=tcp:HOSTPORT-GUESTPORT"),
        "{stderr}"
    );
}

#[test]
fn run_guest_refuses_an_unknown_backend() {
    let output = run_guest_with_net("vde:/tmp/switch");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("unknown network backend \"vde\""),
        "{stderr}"
    );
}

#[test]
fn run_guest_reports_a_forward_port_in_use_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = run_guest_with_net(&format!("user:hostfwd=tcp:{port}-80"));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        stderr
            .matches(&format!("cannot listen on 127.0.0.1:{port}"))
            .count(),
        1,
        "{stderr}"
    );
}
