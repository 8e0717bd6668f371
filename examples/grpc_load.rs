//! The load generator of `bench/balance.sh`: unary `GetUser` calls from a fixed number of callers
//! for a fixed time, with the latency percentiles h2load does not print, and who served the calls
//! (the `x-backend` reply metadata examples/backend.rs sends).
//!
//! ```text
//! grpc_load --target 127.0.0.1:8080 [--callers 16] [--connections 4] [--duration 10s] [--warmup 1s]
//! ```
//! Each caller makes one call at a time; the callers share `--connections` HTTP/2 connections.
//! Calls that end during the warm-up are not counted. Prints one line of figures, then one of
//! shares:
//! ```text
//! req/s 4321  calls 43210  errors 0  p50 0.91ms  p90 10.85ms  p99 11.32ms  max 14.02ms
//! served a 14403 (33.3%)  b 14404 (33.3%)  slow 14403 (33.3%)
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use dragoman::demo::pb::shop::users::v1::GetUserRequest;
use dragoman::demo::pb::shop::users::v1::user_service_client::UserServiceClient;

#[derive(Parser)]
struct Args {
    /// The gateway (or backend), `host:port`.
    #[arg(long)]
    target: String,
    /// Calls in flight at once, one per caller.
    #[arg(long, default_value_t = 16)]
    callers: usize,
    /// HTTP/2 connections the callers share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// How long calls are counted.
    #[arg(long, default_value = "10s")]
    duration: humantime::Duration,
    /// How long calls run before they are counted (connections dialed, pools warm).
    #[arg(long, default_value = "1s")]
    warmup: humantime::Duration,
}

/// What one caller saw: latencies of the calls answered, failures, and who answered.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    errors: u64,
    served: BTreeMap<String, u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.target))?;
        channels.push(endpoint.connect().await?);
    }
    let counted_from = Instant::now() + Duration::from(args.warmup);
    let end = counted_from + Duration::from(args.duration);
    let mut callers = tokio::task::JoinSet::new();
    for i in 0..args.callers {
        let mut client = UserServiceClient::new(channels[i % channels.len()].clone());
        callers.spawn(async move {
            let mut seen = Seen::default();
            while Instant::now() < end {
                let sent = Instant::now();
                let reply = client.get_user(GetUserRequest { id: "u-1".into() }).await;
                if sent < counted_from {
                    continue;
                }
                match reply {
                    Ok(reply) => {
                        seen.latencies.push(sent.elapsed());
                        let name = reply.metadata().get("x-backend").and_then(|v| v.to_str().ok()).unwrap_or("?");
                        *seen.served.entry(name.to_owned()).or_default() += 1;
                    }
                    Err(_) => seen.errors += 1,
                }
            }
            seen
        });
    }
    let mut all = Seen::default();
    while let Some(seen) = callers.join_next().await {
        let seen = seen?;
        all.latencies.extend(seen.latencies);
        all.errors += seen.errors;
        for (name, calls) in seen.served {
            *all.served.entry(name).or_default() += calls;
        }
    }
    report(&mut all, Duration::from(args.duration));
    Ok(())
}

fn report(all: &mut Seen, duration: Duration) {
    let latencies = &mut all.latencies;
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    let rate = latencies.len() as f64 / duration.as_secs_f64();
    println!(
        "req/s {rate:.0}  calls {}  errors {}  p50 {:.2}ms  p90 {:.2}ms  p99 {:.2}ms  max {:.2}ms",
        latencies.len(),
        all.errors,
        at(0.50),
        at(0.90),
        at(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    let total = latencies.len().max(1) as f64;
    let shares: Vec<String> = all
        .served
        .iter()
        .map(|(name, calls)| format!("{name} {calls} ({:.1}%)", 100.0 * *calls as f64 / total))
        .collect();
    println!("served {}", shares.join("  "));
}
