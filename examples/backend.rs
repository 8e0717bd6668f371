//! A demo `UserService` backend as a process of its own, for tests and benchmarks that kill,
//! restart and slow down real backends (`tests/backend_processes.rs`, `bench/balance.sh`); not
//! part of the gateway.
//!
//! ```text
//! backend [--listen 127.0.0.1:0] [--name NAME] [--delay 20ms]
//! ```
//! Prints `listening <address>` as its first line on stdout once it accepts connections (port 0
//! picks a free one). `GetUser` answers a user made up from the id after `--delay`; every reply,
//! refusals included, carries `x-backend: NAME`, so a client can count who served it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dragoman::demo::pb::shop::users::v1::user_service_server::{UserService, UserServiceServer};
use dragoman::demo::pb::shop::users::v1::{
    CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User,
};
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::{Request, Response, Status};

#[derive(Parser)]
struct Args {
    /// Where to listen; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Sent back as `x-backend` on every reply.
    #[arg(long, default_value = "backend")]
    name: AsciiMetadataValue,
    /// How long each call waits before it is answered.
    #[arg(long, default_value = "0s")]
    delay: humantime::Duration,
}

struct Backend {
    name: AsciiMetadataValue,
    delay: Duration,
}

impl Backend {
    fn metadata(&self) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("x-backend", self.name.clone());
        metadata
    }

    fn refuse(&self, method: &str) -> Status {
        Status::with_metadata(
            tonic::Code::Unimplemented,
            format!("{method}: this backend answers GetUser only"),
            self.metadata(),
        )
    }
}

#[tonic::async_trait]
impl UserService for Backend {
    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let id = request.into_inner().id;
        let user =
            User { display_name: format!("User {id}"), email: format!("{id}@example.com"), id, create_time: None };
        let mut response = Response::new(user);
        *response.metadata_mut() = self.metadata();
        Ok(response)
    }

    async fn create_user(&self, _: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        Err(self.refuse("CreateUser"))
    }

    async fn list_users(&self, _: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        Err(self.refuse("ListUsers"))
    }
}

// One thread: several of these share a small machine with the gateway and the load generator.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // The line tests and scripts read the address from: the socket already accepts connections.
    println!("listening {}", listener.local_addr()?);
    let backend = Backend { name: args.name, delay: args.delay.into() };
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(backend))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
