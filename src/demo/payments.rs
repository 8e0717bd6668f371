//! shop.payments.v1.PaymentService: card payments with the usual test-card tokens.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::pb::shop::payments::v1::payment_service_server::PaymentService;
use super::pb::shop::payments::v1::{ChargeRequest, GetPaymentRequest, Payment, PaymentState, RefundRequest};
use super::shop::{Shop, lock, now};

pub(super) struct Payments(pub(super) Arc<Shop>);

/// How long "tok_slow" makes a charge take, like a payment processor having a bad day.
const SLOW_PROCESSOR: Duration = Duration::from_secs(3);

/// Counts a charge in [`Shop::charges()`] from its start to its end. Dropped without
/// [`Charging::finish`], the charge counts as cancelled: tonic drops a handler whose caller reset
/// the call or whose deadline passed, so this is how the demo sees a cancellation arrive.
struct Charging<'a> {
    shop: &'a Shop,
    finished: bool,
}

impl<'a> Charging<'a> {
    fn start(shop: &'a Shop) -> Self {
        shop.charges.send_modify(|c| c.in_progress += 1);
        Charging { shop, finished: false }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Charging<'_> {
    fn drop(&mut self) {
        let finished = self.finished;
        self.shop.charges.send_modify(|c| {
            c.in_progress -= 1;
            if finished {
                c.finished += 1;
            } else {
                c.cancelled += 1;
            }
        });
    }
}

impl Payments {
    /// A charge, start to answer.
    async fn process(&self, request: ChargeRequest) -> Result<Payment, Status> {
        let amount = request.amount.filter(|m| !m.currency_code.is_empty() && (m.units > 0 || m.nanos > 0));
        let amount =
            amount.ok_or_else(|| Status::invalid_argument("a positive amount with a currency_code is required"))?;
        if !lock(&self.0.orders).contains_key(&request.order_id) {
            return Err(Status::not_found(format!("no order with id {:?}", request.order_id)));
        }
        match request.card_token.as_str() {
            "tok_visa" => {}
            "tok_slow" => tokio::time::sleep(SLOW_PROCESSOR).await,
            "tok_declined" => return Err(Status::failed_precondition("the card was declined")),
            other => {
                return Err(Status::invalid_argument(format!("unknown card token {other:?}; try tok_visa")));
            }
        }
        let payment = Payment {
            id: self.0.next_id("pay"),
            order_id: request.order_id,
            amount: Some(amount),
            state: PaymentState::Captured as i32,
            create_time: Some(now()),
        };
        lock(&self.0.payments).insert(payment.id.clone(), payment.clone());
        Ok(payment)
    }
}

#[tonic::async_trait]
impl PaymentService for Payments {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Payment>, Status> {
        let charging = Charging::start(&self.0);
        let answer = self.process(request.into_inner()).await;
        charging.finish();
        answer.map(Response::new)
    }

    async fn get_payment(&self, request: Request<GetPaymentRequest>) -> Result<Response<Payment>, Status> {
        let id = request.into_inner().id;
        let payment = lock(&self.0.payments)
            .get(&id)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("no payment with id {id:?}")))?;
        Ok(Response::new(payment))
    }

    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<Payment>, Status> {
        let id = request.into_inner().id;
        let mut payments = lock(&self.0.payments);
        let payment = payments.get_mut(&id).ok_or_else(|| Status::not_found(format!("no payment with id {id:?}")))?;
        if payment.state == PaymentState::Refunded as i32 {
            return Err(Status::failed_precondition(format!("payment {id} was refunded already")));
        }
        payment.state = PaymentState::Refunded as i32;
        Ok(Response::new(payment.clone()))
    }
}
