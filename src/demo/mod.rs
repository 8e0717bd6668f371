//! The embedded demo: an e-commerce shop of four gRPC services (users, products, orders,
//! payments) with in-memory state, each served by tonic on its own loopback port — real backends
//! the gateway reaches over real sockets, exactly as it would reach a deployment's.
//!
//! It exists so that every feature can be tried and tested against something that works; it is
//! not part of the gateway's request path.

mod orders;
mod payments;
mod products;
mod shop;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

pub use shop::{Charges, Shop};

/// The demo's descriptor set as built from `proto/` (checked in as `descriptors/shop.binpb`).
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shop.binpb"));

/// Code generated from `proto/` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, unreachable_pub, missing_docs)]
pub mod pb {
    pub mod google {
        pub mod api {
            include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
        }
    }
    pub mod shop {
        pub mod common {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/shop.common.v1.rs"));
            }
        }
        pub mod users {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/shop.users.v1.rs"));
            }
        }
        pub mod products {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/shop.products.v1.rs"));
            }
        }
        pub mod orders {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/shop.orders.v1.rs"));
            }
        }
        pub mod payments {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/shop.payments.v1.rs"));
            }
        }
    }
}

/// Messages up to this size pass (the gateway streams larger ones too; tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// The demo services' full names, in the order of [`Backends::addresses`].
pub const SERVICES: [&str; 4] = [
    "shop.users.v1.UserService",
    "shop.products.v1.ProductService",
    "shop.orders.v1.OrderService",
    "shop.payments.v1.PaymentService",
];

/// The four running demo backends. Dropping it stops them.
pub struct Backends {
    pub shop: Arc<Shop>,
    /// Address of each service in [`SERVICES`] order.
    pub addresses: [SocketAddr; 4],
    stop: watch::Sender<bool>,
}

impl Backends {
    /// Starts each service on its own 127.0.0.1 port.
    pub async fn start() -> std::io::Result<Self> {
        let shop = Arc::new(Shop::seeded());
        let (stop, stopped) = watch::channel(false);
        let users = pb::shop::users::v1::user_service_server::UserServiceServer::new(users::Users(shop.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let products =
            pb::shop::products::v1::product_service_server::ProductServiceServer::new(products::Products(shop.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
        let orders = pb::shop::orders::v1::order_service_server::OrderServiceServer::new(orders::Orders(shop.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let payments =
            pb::shop::payments::v1::payment_service_server::PaymentServiceServer::new(payments::Payments(shop.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
        let addresses = [
            spawn(tonic::service::Routes::new(users), stopped.clone()).await?,
            spawn(tonic::service::Routes::new(products), stopped.clone()).await?,
            spawn(tonic::service::Routes::new(orders), stopped.clone()).await?,
            spawn(tonic::service::Routes::new(payments), stopped).await?,
        ];
        Ok(Backends { shop, addresses, stop })
    }

    /// A config's `services:` section routing each demo service to its backend.
    pub fn services_yaml(&self) -> String {
        let mut out = String::from("services:\n");
        for (name, address) in SERVICES.iter().zip(self.addresses) {
            out.push_str(&format!("  - match: {name}\n    backends: [http://{address}]\n"));
        }
        out
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn spawn(routes: tonic::service::Routes, mut stopped: watch::Receiver<bool>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tonic::transport::Server::builder().add_routes(routes);
    tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(e) = server.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop).await {
            tracing::error!(error = %e, "demo backend failed");
        }
    });
    Ok(address)
}
