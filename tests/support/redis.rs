//! A real `redis-server` on a free loopback port, without persistence, for the shared limits'
//! tests. It is ready when it says so and answers PING; it stops on `Drop`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};

pub struct Redis {
    /// `redis://127.0.0.1:PORT/0`.
    pub url: String,
    pub port: u16,
    child: Option<Child>,
}

impl Redis {
    /// Starts a redis-server on a port nobody holds (redis-server cannot pick one itself).
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            // Another process may have taken the port since: try another.
            if let Some(child) = spawn(port) {
                return Redis { url: format!("redis://127.0.0.1:{port}/0"), port, child: Some(child) };
            }
        }
        panic!("redis-server does not start (is it installed? scripts/install-test-tools.sh)");
    }

    /// Kills the server: connections drop, new ones are refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port).expect("redis-server restarts on its port"));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts redis-server on `port` and waits until it is ready: None if it exits first.
fn spawn(port: u16) -> Option<Child> {
    let mut child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (scripts/install-test-tools.sh installs it)");
    let mut log = BufReader::new(child.stdout.take().expect("piped stdout"));
    // Readiness is what the server logs once it listens, not a sleep.
    let mut line = String::new();
    loop {
        line.clear();
        if log.read_line(&mut line).unwrap_or(0) == 0 {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        if line.contains("Ready to accept connections") {
            break;
        }
    }
    // Keep reading its log, so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("redis-server accepts");
    stream.write_all(b"PING\r\n").expect("PING");
    let mut pong = [0; 7];
    stream.read_exact(&mut pong).expect("an answer to PING");
    assert_eq!(&pong, b"+PONG\r\n");
    Some(child)
}
