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

#[tonic::async_trait]
impl PaymentService for Payments {
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<Payment>, Status> {
        let request = request.into_inner();
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
        Ok(Response::new(payment))
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
