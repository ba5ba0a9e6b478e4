//! etcd as the arbiter: a real three-member etcd cluster (Debian's `etcd-server`) on
//! loopback, and a pair of `understudy run` processes (the built-in echo guest, idle) with
//! `arbiter_backend = etcd` and no arbiter process. Failover is decided by etcd's
//! transaction, survives the loss of one member and a restart of the whole cluster; without
//! quorum nobody goes live and the primary serves on.
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{free_port, work_dir};
use understudy::pair::etcd::Etcd;
use understudy_ft::arbiter::ArbiterRecord;
use understudy_ft::{Epoch, NodeId};
use understudy_machine::program::echo_guest;

/// Clusters and pairs load both cores; one test at a time keeps their timing honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const CHANNEL_KEY: &str = "5c0f6f3e2a9b8d71c4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b";
const MEMBERS: usize = 3;
/// How long a cluster may take to elect a leader and answer.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the pair may take to form, to see a change, or to go live.
const PAIR_TIMEOUT: Duration = Duration::from_secs(60);
/// How long nobody may go live without quorum for the test to believe it.
const NO_GO_LIVE_WAIT: Duration = Duration::from_secs(8);

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// Three etcd members on loopback, killed when the test ends.
struct Cluster {
    dir: PathBuf,
    members: Vec<Member>,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let members = (0..MEMBERS)
            .map(|index| Member {
                name: format!("m{index}"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            })
            .collect();
        let mut cluster = Cluster {
            dir: dir.to_owned(),
            members,
        };
        for index in 0..MEMBERS {
            cluster.launch(index);
        }
        cluster.wait_healthy();
        cluster
    }

    fn launch(&mut self, index: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let member = &mut self.members[index];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", member.name))).unwrap();
        member.child = Some(
            Command::new("etcd")
                .args(["--name", &member.name])
                .arg("--data-dir")
                .arg(self.dir.join(format!("{}.etcd", member.name)))
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer,
                    "--initial-advertise-peer-urls",
                    &peer,
                ])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", "understudy-test"])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("etcd runs (install etcd-server)"),
        );
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        while !self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .all(|m| health(m.client_port))
        {
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..MEMBERS {
            self.kill(index);
        }
    }
}

/// etcd's `/health`: `{"health":"true"}` once the member has a leader.
fn health(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// Primary and backup processes, killed when the test ends.
struct Pair {
    dir: PathBuf,
    primary: Option<Child>,
    backup: Option<Child>,
}

impl Pair {
    fn start(dir: &Path, host: u8, endpoints: &str, prefix: &str) -> Pair {
        std::fs::write(dir.join("echo.elf"), echo_guest(3)).unwrap();
        let port = free_port();
        let config = |role: &str| {
            let text = format!(
                "role = {role}\nprimary = 127.0.0.{host}/8\nbackup = 127.0.0.{}/8\n\
                 arbiter = 127.0.0.{}:{port}\nport = {port}\ndisk = separate\n\
                 channel_key = {CHANNEL_KEY}\n\
                 arbiter_key_primary = {}\narbiter_key_backup = {}\npeer_timeout_ms = 300\n\
                 guest_kernel = echo.elf\nstate_dir = {role}-state\n\
                 arbiter_backend = etcd\netcd_endpoints = {endpoints}\netcd_prefix = {prefix}\n",
                host + 1,
                host + 2,
                "11".repeat(32),
                "22".repeat(32),
            );
            let path = dir.join(format!("{role}.conf"));
            std::fs::write(&path, text).unwrap();
            Command::new(env!("CARGO_BIN_EXE_understudy"))
                .args(["run", "--config"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join(format!("{role}.log"))).unwrap())
                .spawn()
                .unwrap()
        };
        let backup = Some(config("backup"));
        let primary = Some(config("primary"));
        Pair {
            dir: dir.to_owned(),
            primary,
            backup,
        }
    }

    /// A key of a replica's status file ("" when missing).
    fn status(&self, role: &str, key: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(format!("{role}-state/status")))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Pair) -> bool) {
        let deadline = Instant::now() + PAIR_TIMEOUT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within {} s; primary: {}, backup: {}",
                PAIR_TIMEOUT.as_secs(),
                std::fs::read_to_string(self.dir.join("primary.log")).unwrap_or_default(),
                std::fs::read_to_string(self.dir.join("backup.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill_primary(&mut self) {
        if let Some(mut child) = self.primary.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for child in [&mut self.primary, &mut self.backup].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn both_can_fail_over(pair: &Pair) -> bool {
    pair.status("primary", "failover_available") == "true"
        && pair.status("backup", "failover_available") == "true"
}

#[test]
fn failover_is_decided_by_etcd_and_the_epoch_outlives_a_member_and_a_cluster_restart() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = work_dir("pair-etcd-failover");
    let mut cluster = Cluster::start(&dir);
    let prefix = "/understudy/test-failover";
    let mut pair = Pair::start(&dir, 111, &cluster.endpoints(), prefix);
    pair.wait_until("the pair forming with etcd", both_can_fail_over);

    // One member down: the other two are a quorum, and the decision is still theirs.
    cluster.kill(2);
    pair.kill_primary();
    pair.wait_until("the backup going live", |pair| {
        pair.status("backup", "role") == "solo primary"
    });
    assert_eq!(pair.status("backup", "epoch"), "2");
    let endpoints = cluster
        .members
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.client_port))
        .collect();
    let etcd = Etcd::new(endpoints, prefix);
    let granted = Some(ArbiterRecord {
        epoch: Epoch(2),
        owner: NodeId(2),
    });
    assert_eq!(etcd.read_record().unwrap(), granted);

    // The whole cluster stopped and started again: the decision is on its members' disks.
    for index in 0..MEMBERS {
        cluster.kill(index);
    }
    for index in 0..MEMBERS {
        cluster.launch(index);
    }
    cluster.wait_healthy();
    assert_eq!(etcd.read_record().unwrap(), granted);
}

#[test]
fn without_an_etcd_quorum_nobody_goes_live_and_the_primary_serves_on() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = work_dir("pair-etcd-quorum");
    let mut cluster = Cluster::start(&dir);
    let prefix = "/understudy/test-quorum";
    let mut pair = Pair::start(&dir, 121, &cluster.endpoints(), prefix);
    pair.wait_until("the pair forming with etcd", both_can_fail_over);

    cluster.kill(1);
    cluster.kill(2);
    pair.wait_until("both replicas saying failover is unavailable", |pair| {
        pair.status("primary", "failover_available") == "false"
            && pair.status("backup", "failover_available") == "false"
    });
    // The primary is not disturbed by the arbiter's absence.
    assert_eq!(pair.status("primary", "role"), "primary");
    assert_eq!(pair.status("primary", "epoch"), "1");

    pair.kill_primary();
    std::thread::sleep(NO_GO_LIVE_WAIT);
    assert_eq!(pair.status("backup", "role"), "claiming backup");
    assert_eq!(pair.status("backup", "epoch"), "1");
}
