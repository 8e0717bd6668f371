//! The demo shop's in-memory state, shared by its four services (one process, one shop).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;
use tonic::Status;

use super::pb::shop::common::v1::Money;
use super::pb::shop::orders::v1::{LineItem, Order, OrderStatus};
use super::pb::shop::payments::v1::Payment;
use super::pb::shop::products::v1::Product;
use super::pb::shop::users::v1::User;

/// Everything the shop knows. Locks are held only for map look-ups, never across an await.
#[derive(Default)]
pub struct Shop {
    pub(super) users: Mutex<BTreeMap<String, User>>,
    pub(super) products: Mutex<BTreeMap<String, Product>>,
    pub(super) orders: Mutex<BTreeMap<String, Order>>,
    pub(super) payments: Mutex<BTreeMap<String, Payment>>,
    /// Last id handed out, per prefix.
    ids: Mutex<BTreeMap<&'static str, u64>>,
    /// Open WatchOrder streams, published so that a test can wait for a cancellation to reach
    /// the backend instead of polling for it.
    pub(super) watches: watch::Sender<usize>,
    /// What the payment processor has done with its charges, published likewise.
    pub(super) charges: watch::Sender<Charges>,
}

/// The payment processor's charges by where they are, as [`Shop::charges()`] publishes them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Charges {
    /// Being processed now.
    pub in_progress: usize,
    /// Answered, whatever the answer (captured, declined, refused).
    pub finished: usize,
    /// Given up before an answer: the caller went away or its deadline passed, and tonic dropped
    /// the handler.
    pub cancelled: usize,
}

impl Shop {
    /// A shop with a customer (`u-1`), four products (`p-1`..`p-4`) and an open order (`o-1`), so the
    /// demo has something to show.
    pub fn seeded() -> Self {
        let shop = Shop::default();
        let user = User {
            id: shop.next_id("u"),
            email: "ada@example.com".into(),
            display_name: "Ada Lovelace".into(),
            create_time: Some(now()),
        };
        let seed = [
            ("The Analytical Engine", "books", 24, 50, &["history", "computing"][..]),
            ("Punched Card Notebook", "stationery", 4, 500, &["paper"][..]),
            ("Brass Gear Set", "hobby", 39, 20, &["metal", "gears"][..]),
            ("Garden Difference Engine", "garden", 129, 3, &["outdoor"][..]),
        ];
        for (name, category, units, stock, tags) in seed {
            let product = Product {
                id: shop.next_id("p"),
                name: name.into(),
                description: format!("{name}, from the demo catalogue."),
                price: Some(eur(units, 990_000_000)),
                category: category.into(),
                stock,
                tags: tags.iter().map(|t| (*t).into()).collect(),
            };
            lock(&shop.products).insert(product.id.clone(), product);
        }
        let order = Order {
            id: shop.next_id("o"),
            user_id: user.id.clone(),
            items: vec![LineItem { product_id: "p-1".into(), quantity: 1, unit_price: Some(eur(24, 990_000_000)) }],
            status: OrderStatus::Placed as i32,
            total: Some(eur(24, 990_000_000)),
            create_time: Some(now()),
        };
        lock(&shop.orders).insert(order.id.clone(), order);
        lock(&shop.users).insert(user.id.clone(), user);
        shop
    }

    /// A fresh id with a prefix: `u-1`, `p-2`, ...
    pub(super) fn next_id(&self, prefix: &'static str) -> String {
        let mut ids = lock(&self.ids);
        let n = ids.entry(prefix).or_default();
        *n += 1;
        format!("{prefix}-{n}")
    }

    /// An order's status right now (an `OrderStatus` number).
    pub fn order_status(&self, id: &str) -> Option<i32> {
        lock(&self.orders).get(id).map(|o| o.status)
    }

    /// The number of open WatchOrder streams, now and as it changes.
    pub fn watches(&self) -> watch::Receiver<usize> {
        self.watches.subscribe()
    }

    /// The payment processor's charges, now and as they change.
    pub fn charges(&self) -> watch::Receiver<Charges> {
        self.charges.subscribe()
    }
}

/// Locks a map; a panic elsewhere while holding it does not make the demo unusable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) fn now() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

pub(super) fn eur(units: i64, nanos: i32) -> Money {
    Money { currency_code: "EUR".into(), units, nanos }
}

/// `a + b`, both in one currency.
pub(super) fn add(a: &Money, b: &Money) -> Result<Money, Status> {
    if !a.currency_code.is_empty() && a.currency_code != b.currency_code {
        return Err(Status::invalid_argument(format!("cannot add {} to {}", b.currency_code, a.currency_code)));
    }
    let total = to_nanos(a) + to_nanos(b);
    Ok(from_nanos(&b.currency_code, total))
}

/// `m * n`.
pub(super) fn times(m: &Money, n: i32) -> Money {
    from_nanos(&m.currency_code, to_nanos(m) * i128::from(n))
}

fn to_nanos(m: &Money) -> i128 {
    i128::from(m.units) * 1_000_000_000 + i128::from(m.nanos)
}

fn from_nanos(currency: &str, n: i128) -> Money {
    Money {
        currency_code: currency.to_owned(),
        units: i64::try_from(n / 1_000_000_000).unwrap_or(i64::MAX),
        nanos: i32::try_from(n % 1_000_000_000).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_arithmetic_carries_nanos() {
        let price = eur(24, 990_000_000);
        assert_eq!(times(&price, 3), eur(74, 970_000_000));
        assert_eq!(add(&eur(0, 0), &price).ok(), Some(price.clone()));
        assert!(add(&price, &Money { currency_code: "USD".into(), units: 1, nanos: 0 }).is_err());
    }
}
