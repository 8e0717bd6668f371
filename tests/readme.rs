//! The README does not lie: its grpcurl examples run against the real `dragoman demo`, and its
//! config example is a valid config.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{root, stderr, stdout};

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The lines of the README's code blocks of one language.
fn blocks(language: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in readme().lines() {
        match (&mut current, line.trim_start()) {
            (None, l) if l == format!("```{language}") => current = Some(String::new()),
            (Some(block), "```") => {
                out.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// Kills the demo when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn grpcurl_examples_work_against_the_demo() {
    let port = support::dead_port();
    let address = format!("127.0.0.1:{port}");
    let _demo = Running(
        Command::new(env!("CARGO_BIN_EXE_dragoman"))
            .current_dir(root())
            .args(["demo", "--listen", &address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("demo starts"),
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the demo listens");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tools = support::grpcurl().parent().expect("tools folder").to_owned();
    let path = format!("{}:{}", tools.display(), std::env::var("PATH").unwrap_or_default());
    let examples: Vec<String> = blocks("sh")
        .iter()
        .flat_map(|b| b.lines().map(str::to_owned).collect::<Vec<_>>())
        .filter(|l| l.starts_with("grpcurl "))
        .collect();
    assert!(examples.len() >= 10, "the README shows grpcurl examples: {examples:?}");
    for example in examples {
        // The two examples that show errors must fail; every other must get a 2xx.
        let shows_error = example.contains("u-404") || example.contains(r#""email": 5"#);
        let mut command = example.replace("127.0.0.1:8080", &address);
        if example.starts_with("curl ") {
            command = command.replacen("curl ", "curl --fail-with-body ", 1);
        }
        // Not sh: the curl examples use bash's $'...' quoting.
        let out = Command::new("bash").arg("-c").arg(&command).env("PATH", &path).output().expect("bash runs");
        assert_eq!(!out.status.success(), shows_error, "README example: {example}\n{}{}", stdout(&out), stderr(&out));
        assert!(!stdout(&out).trim().is_empty(), "README example printed nothing: {example}");
    }
}

#[test]
fn config_example_is_valid() {
    let yaml = blocks("yaml").into_iter().next().expect("a yaml block");
    let dir = tempfile::tempdir().expect("tmp");
    // What the example refers to: a CA file and the descriptors folder.
    std::fs::create_dir_all(dir.path().join("certs")).expect("dir");
    let ca = rcgen::generate_simple_self_signed(vec!["billing.internal".to_owned()]).expect("cert");
    std::fs::write(dir.path().join("certs/internal-ca.pem"), ca.cert.pem()).expect("write");
    let config_path = dir.path().join("gateway.yaml");
    std::fs::write(&config_path, &yaml).expect("write");
    let config = dragoman::config::Config::load(&config_path).expect("the README's config is valid");
    assert_eq!(config.services.len(), 3);
    assert!(config.services[2].tls.is_some());
    assert_eq!(config.rule_for("shop.products.v1.ProductService").map(|r| r.index), Some(0));
    assert_eq!(config.rule_for("shop.orders.v1.OrderService").map(|r| r.index), Some(1));
}
