//! Balancing over real backend processes (examples/backend.rs) behind the real `dragoman serve`,
//! under steady load from tonic clients: one backend killed (SIGKILL) mid-load and restarted on
//! its port; one slow, with `balance: p2c` and with `round_robin`. `tests/balance.rs` covers the
//! same in process; here a backend dies as processes die, its connections reset by the kernel.
//!
//! Figures are printed (`--nocapture` shows them); assertions keep margins for a shared 2-core
//! machine, where backends, gateway and clients share the cores.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;
use support::{BackendProcess, Running, get, root};

/// Clients calling at once, each on its own connection, one call at a time.
const CLIENTS: usize = 8;
/// Each call's deadline.
const DEADLINE: Duration = Duration::from_secs(2);

/// `dragoman serve` (two workers) in front of `backends` for the UserService, with an admin
/// listener; returns the process and the admin listener's address.
async fn serve(dir: &Path, backends: &[&BackendProcess], balance: &str) -> (Running, SocketAddr) {
    let list: Vec<String> = backends.iter().map(|b| format!("http://{}", b.address)).collect();
    let yaml = format!(
        "listen: 127.0.0.1:0\nworkers: 2\nwatch: false\ndescriptors: [{}]\nadmin:\n  listen: 127.0.0.1:0\nservices:\n  - match: shop.users.v1.UserService\n    backends: [{}]\n    balance: {balance}\n",
        root().join("descriptors").display(),
        list.join(", ")
    );
    let config = dir.join(format!("{balance}.yaml"));
    std::fs::write(&config, yaml).expect("config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_dragoman"));
    command.args(["serve", "--config"]).arg(&config);
    let running = tokio::task::spawn_blocking(move || Running::start(command)).await.expect("join");
    let line = running.wait_for_log(|l| l.contains("admin listening")).await;
    let admin = line.split_whitespace().find_map(|w| w.strip_prefix("address=")).expect("address=");
    let admin = admin.parse().expect("admin address");
    (running, admin)
}

/// How one call ended: when, and who served it (`x-backend`) or the code it failed with.
struct Outcome {
    at: Instant,
    served: Result<String, tonic::Code>,
}

/// [`CLIENTS`] tonic clients calling GetUser through the gateway in a loop until dropped.
struct Load {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    async fn start(gateway: SocketAddr) -> Self {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
                .expect("url")
                .timeout(DEADLINE)
                .connect()
                .await
                .expect("the gateway accepts connections");
            let mut client = UserServiceClient::new(channel);
            let (outcomes, stop) = (outcomes.clone(), stop.clone());
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let mut request = tonic::Request::new(GetUserRequest { id: "u-1".into() });
                    request.set_timeout(DEADLINE);
                    let served = match client.get_user(request).await {
                        Ok(reply) => Ok(reply
                            .metadata()
                            .get("x-backend")
                            .map_or("?".into(), |v| v.to_str().unwrap_or("?").to_owned())),
                        Err(status) => Err(status.code()),
                    };
                    let outcome = Outcome { at: Instant::now(), served };
                    outcomes.lock().unwrap_or_else(PoisonError::into_inner).push(outcome);
                }
            }));
        }
        Load { outcomes, stop, clients }
    }

    /// The calls that ended from `from` on (until `to`, if given).
    fn tally(&self, from: Instant, to: Option<Instant>) -> Tally {
        let outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut tally = Tally::default();
        for outcome in outcomes.iter().filter(|o| o.at >= from && to.is_none_or(|to| o.at < to)) {
            match &outcome.served {
                Ok(name) => *tally.served.entry(name.clone()).or_default() += 1,
                Err(code) => *tally.errors.entry(format!("{code:?}")).or_default() += 1,
            }
        }
        tally
    }

    /// The calls that end over the next `window`.
    async fn window(&self, window: Duration) -> Tally {
        let from = Instant::now();
        tokio::time::sleep(window).await;
        self.tally(from, Some(from + window))
    }

    /// Waits (up to `patience`) until the calls ended since `from` satisfy `done`; how long that
    /// took, and those calls.
    async fn wait_until(&self, from: Instant, patience: Duration, done: impl Fn(&Tally) -> bool) -> (Duration, Tally) {
        loop {
            let tally = self.tally(from, None);
            if done(&tally) {
                return (from.elapsed(), tally);
            }
            assert!(from.elapsed() < patience, "not within {patience:?}: {tally}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.clients.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// Calls served per backend name, and failed per code.
#[derive(Default)]
struct Tally {
    served: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
}

impl Tally {
    fn ok(&self) -> usize {
        self.served.values().sum()
    }

    fn errors(&self) -> usize {
        self.errors.values().sum()
    }

    fn by(&self, name: &str) -> usize {
        self.served.get(name).copied().unwrap_or(0)
    }

    /// `name`'s share of the calls served.
    fn share(&self, name: &str) -> f64 {
        self.by(name) as f64 / self.ok().max(1) as f64
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ok (", self.ok())?;
        for (i, name) in self.served.keys().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {} = {:.1} %", self.by(name), 100.0 * self.share(name))?;
        }
        write!(f, "), {} errors {:?}", self.errors(), self.errors)
    }
}

/// How `/admin/backends` shows the endpoint at `address`.
async fn endpoint(admin: SocketAddr, address: SocketAddr) -> serde_json::Value {
    let backends = get(admin, "/admin/backends").await.json();
    let wanted = format!("http://{address}");
    let found = backends["backends"].as_array().and_then(|list| list.iter().find(|b| b["address"] == wanted.as_str()));
    found.cloned().unwrap_or_else(|| panic!("{wanted} not in {backends}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_only_its_calls_in_flight_and_serves_again_once_restarted() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = BackendProcess::start("127.0.0.1:0", "a", "0s");
    let b = BackendProcess::start("127.0.0.1:0", "b", "0s");
    let c = BackendProcess::start("127.0.0.1:0", "c", "0s");
    let (gateway, admin) = serve(dir.path(), &[&a, &b, &c], "p2c").await;
    let load = Load::start(gateway.address).await;

    // Steady: all three serve, nothing fails.
    let patience = Duration::from_secs(10);
    load.wait_until(Instant::now(), patience, |t| ["a", "b", "c"].iter().all(|n| t.by(n) > 0)).await;
    let steady = load.window(Duration::from_secs(1)).await;
    eprintln!("steady:              {steady}");
    assert_eq!(steady.errors(), 0, "{steady}");
    assert!(["a", "b", "c"].iter().all(|n| steady.share(n) > 0.15), "all three share the calls: {steady}");

    // SIGKILL: the calls in flight on it fail (at most one per client, each has one call open),
    // plus any sent in the instant before the gateway saw the connection close; none after.
    a.kill();
    let killed = load.window(Duration::from_secs(1)).await;
    eprintln!("1 s after the kill:  {killed}");
    assert!(killed.errors() <= CLIENTS + 2, "only the calls in flight on it fail: {killed}");

    // Then it is skipped: no call fails, b and c take them all, and the gateway does not dial it
    // per call (the back-off: 500 ms doubling, per worker) — a few dials over seconds of calls.
    let down = endpoint(admin, a.address).await;
    // No connection to it: its last dial failed (`down`), or it was not dialed again at all
    // (`idle`: ejected, or avoided for the failures it cost).
    assert!(down["state"] == "down" || down["state"] == "idle", "{down}");
    assert_eq!(down["connections"], 0, "{down}");
    let dials_before = down["connect_failures"].as_u64().expect("connect_failures");
    let skipped = load.window(Duration::from_secs(2)).await;
    let down = endpoint(admin, a.address).await;
    let dials = down["connect_failures"].as_u64().expect("connect_failures") - dials_before;
    eprintln!("the next 2 s:        {skipped}; dials to the dead one {dials}; it stands {down}");
    assert_eq!(skipped.errors(), 0, "{skipped}");
    assert!(skipped.ok() >= 200, "the load went on: {skipped}");
    assert_eq!(skipped.by("a"), 0, "{skipped}");
    assert!(dials <= 2 * 3, "two workers, each dialing after 0.5, 1, 2 s of back-off at most: {dials}");

    // Restarted on its port: it is called again once its back-off (or ejection, 5 s) ends.
    let restarted = Instant::now();
    // Kept (not `_`): the process lives until the test ends.
    let _a_again = BackendProcess::start(&a.address.to_string(), "a", "0s");
    let (after, back) = load.wait_until(restarted, Duration::from_secs(15), |t| t.by("a") > 0).await;
    eprintln!("restarted:           called again after {after:.1?}; {back}");
    assert_eq!(back.errors(), 0, "{back}");
    // Its share comes back as the balancer's memory of its failures fades (the latency estimate
    // decays over seconds): a second-long window with a fair share of the calls, within 20 s.
    let mut again = load.window(Duration::from_secs(1)).await;
    while again.share("a") <= 0.15 {
        assert!(restarted.elapsed() < Duration::from_secs(20), "a never got its share back: {again}");
        assert_eq!(again.errors(), 0, "{again}");
        again = load.window(Duration::from_secs(1)).await;
    }
    eprintln!("its share again:     after {:.1?}: {again}", restarted.elapsed());
    assert_eq!(again.errors(), 0, "{again}");
}

/// The slow backend's share of the calls over 3 s with this `balance`, after all three have
/// served; no call fails.
async fn slow_share(balance: &str) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let slow = BackendProcess::start("127.0.0.1:0", "slow", "50ms");
    let b = BackendProcess::start("127.0.0.1:0", "b", "0s");
    let c = BackendProcess::start("127.0.0.1:0", "c", "0s");
    let (gateway, _) = serve(dir.path(), &[&slow, &b, &c], balance).await;
    let load = Load::start(gateway.address).await;
    let patience = Duration::from_secs(10);
    load.wait_until(Instant::now(), patience, |t| ["slow", "b", "c"].iter().all(|n| t.by(n) > 0)).await;
    let tally = load.window(Duration::from_secs(3)).await;
    eprintln!("{balance:<12} {tally}");
    assert_eq!(tally.errors(), 0, "{tally}");
    assert!(tally.ok() >= 200, "{tally}");
    tally.share("slow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_process_gets_little_with_p2c_and_a_third_with_round_robin() {
    let p2c = slow_share("p2c").await;
    let round_robin = slow_share("round_robin").await;
    assert!(p2c < 0.15, "p2c gives the slow backend less: {p2c:.3}");
    assert!(round_robin > 0.25, "round-robin gives it about a third: {round_robin:.3}");
}
