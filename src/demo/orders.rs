//! shop.orders.v1.OrderService: one method of each of the four gRPC kinds.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream;
use tonic::{Request, Response, Status, Streaming};

use super::pb::shop::common::v1::Money;
use super::pb::shop::orders::v1::order_service_server::OrderService;
use super::pb::shop::orders::v1::{
    AddLineItemRequest, Cart, CartAction, CreateOrderRequest, GetOrderRequest, LineItem, Order, OrderEvent,
    OrderStatus, WatchOrderRequest, cart_action,
};
use super::shop::{Shop, add, lock, now, times};

pub(super) struct Orders(pub(super) Arc<Shop>);

type ReplyStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl Orders {
    /// A line item priced from the catalogue.
    fn priced(&self, item: LineItem) -> Result<LineItem, Status> {
        if item.quantity <= 0 {
            return Err(Status::invalid_argument(format!("quantity of {} must be positive", item.product_id)));
        }
        let products = lock(&self.0.products);
        let product = products
            .get(&item.product_id)
            .ok_or_else(|| Status::not_found(format!("no product with id {:?}", item.product_id)))?;
        Ok(LineItem { unit_price: product.price.clone(), ..item })
    }
}

fn total(items: &[LineItem]) -> Result<Money, Status> {
    items.iter().try_fold(Money::default(), |sum, item| {
        add(&sum, &times(&item.unit_price.clone().unwrap_or_default(), item.quantity))
    })
}

/// Counts an open WatchOrder stream for as long as it lives.
struct Watching(Arc<Shop>);

impl Watching {
    fn new(shop: Arc<Shop>) -> Self {
        shop.watches.send_modify(|open| *open += 1);
        Watching(shop)
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watches.send_modify(|open| *open -= 1);
    }
}

#[tonic::async_trait]
impl OrderService for Orders {
    async fn create_order(&self, request: Request<CreateOrderRequest>) -> Result<Response<Order>, Status> {
        let request = request.into_inner();
        if request.user_id.is_empty() {
            return Err(Status::invalid_argument("user_id is required"));
        }
        if request.items.is_empty() {
            return Err(Status::invalid_argument("an order needs at least one item"));
        }
        let items = request.items.into_iter().map(|i| self.priced(i)).collect::<Result<Vec<_>, _>>()?;
        let order = Order {
            id: self.0.next_id("o"),
            user_id: request.user_id,
            total: Some(total(&items)?),
            items,
            status: OrderStatus::Placed as i32,
            create_time: Some(now()),
        };
        lock(&self.0.orders).insert(order.id.clone(), order.clone());
        Ok(Response::new(order))
    }

    async fn get_order(&self, request: Request<GetOrderRequest>) -> Result<Response<Order>, Status> {
        let id = request.into_inner().id;
        let order = lock(&self.0.orders)
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no order with id {id:?}")))?;
        Ok(Response::new(order))
    }

    type WatchOrderStream = ReplyStream<OrderEvent>;

    async fn watch_order(
        &self,
        request: Request<WatchOrderRequest>,
    ) -> Result<Response<Self::WatchOrderStream>, Status> {
        let request = request.into_inner();
        let interval = match request.interval {
            None => Duration::from_secs(1),
            Some(d) => Duration::try_from(d)
                .ok()
                .filter(|d| *d <= Duration::from_secs(60))
                .ok_or_else(|| Status::invalid_argument("interval must be between 0 and 60s"))?,
        };
        let status = lock(&self.0.orders)
            .get(&request.id)
            .map(|o| o.status)
            .ok_or_else(|| Status::not_found(format!("no order with id {:?}", request.id)))?;
        let state = (Watching::new(self.0.clone()), request.id, status, true);
        // Each step: wait (except before the first event), advance, report; stop after delivery.
        let events = stream::unfold(state, move |(watching, id, status, first)| async move {
            if !first {
                if status >= OrderStatus::Delivered as i32 {
                    return None;
                }
                tokio::time::sleep(interval).await;
            }
            let status = if first { status } else { status + 1 };
            if let Some(order) = lock(&watching.0.orders).get_mut(&id) {
                order.status = status;
            }
            let event = OrderEvent { order_id: id.clone(), status, time: Some(now()) };
            Some((Ok(event), (watching, id, status, false)))
        });
        Ok(Response::new(Box::pin(events)))
    }

    async fn add_line_items(&self, request: Request<Streaming<AddLineItemRequest>>) -> Result<Response<Order>, Status> {
        let mut requests = request.into_inner();
        let mut order_id: Option<String> = None;
        let mut added = Vec::new();
        while let Some(request) = requests.message().await? {
            match &order_id {
                None => order_id = Some(request.order_id.clone()),
                Some(id) if *id != request.order_id => {
                    return Err(Status::invalid_argument("all line items of one call must be for the same order"));
                }
                Some(_) => {}
            }
            let item = request.item.ok_or_else(|| Status::invalid_argument("item is required"))?;
            added.push(self.priced(item)?);
        }
        let id = order_id.ok_or_else(|| Status::invalid_argument("no line items were sent"))?;
        let mut orders = lock(&self.0.orders);
        let order = orders.get_mut(&id).ok_or_else(|| Status::not_found(format!("no order with id {id:?}")))?;
        if order.status != OrderStatus::Placed as i32 {
            return Err(Status::failed_precondition(format!("order {id} is no longer open")));
        }
        order.items.extend(added);
        order.total = Some(total(&order.items)?);
        Ok(Response::new(order.clone()))
    }

    type LiveCartStream = ReplyStream<Cart>;

    async fn live_cart(
        &self,
        request: Request<Streaming<CartAction>>,
    ) -> Result<Response<Self::LiveCartStream>, Status> {
        let orders = Orders(self.0.clone());
        let state = Some((request.into_inner(), Cart::default(), orders));
        // One answer per action; the first error ends the stream.
        let carts = stream::unfold(state, |state| async move {
            let (mut actions, mut cart, orders) = state?;
            let action = match actions.message().await {
                Ok(Some(action)) => action,
                Ok(None) => return None,
                Err(status) => return Some((Err(status), None)),
            };
            match apply(&orders, &mut cart, action) {
                Ok(()) => Some((Ok(cart.clone()), Some((actions, cart, orders)))),
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(carts)))
    }
}

fn apply(orders: &Orders, cart: &mut Cart, action: CartAction) -> Result<(), Status> {
    match action.action {
        Some(cart_action::Action::Add(item)) => {
            let item = orders.priced(item)?;
            match cart.items.iter_mut().find(|i| i.product_id == item.product_id) {
                Some(existing) => existing.quantity += item.quantity,
                None => cart.items.push(item),
            }
        }
        Some(cart_action::Action::RemoveProductId(id)) => cart.items.retain(|i| i.product_id != id),
        Some(cart_action::Action::Clear(_)) => cart.items.clear(),
        None => {
            return Err(Status::invalid_argument("a cart action needs one of add, remove_product_id, clear"));
        }
    }
    cart.total = Some(total(&cart.items)?);
    cart.revision += 1;
    Ok(())
}
