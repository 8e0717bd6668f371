//! shop.products.v1.ProductService: the catalogue.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::shop::products::v1::product_service_server::ProductService;
use super::pb::shop::products::v1::{
    CreateProductRequest, GetProductRequest, ListProductsRequest, ListProductsResponse, Product,
};
use super::shop::{Shop, lock};

pub(super) struct Products(pub(super) Arc<Shop>);

#[tonic::async_trait]
impl ProductService for Products {
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<Product>, Status> {
        let id = request.into_inner().id;
        let products = lock(&self.0.products);
        let product =
            products.get(&id).cloned().ok_or_else(|| Status::not_found(format!("no product with id {id:?}")))?;
        Ok(Response::new(product))
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let category = request.into_inner().category;
        let products = lock(&self.0.products);
        let products = products.values().filter(|p| category.is_empty() || p.category == category).cloned().collect();
        Ok(Response::new(ListProductsResponse { products }))
    }

    async fn create_product(&self, request: Request<CreateProductRequest>) -> Result<Response<Product>, Status> {
        let mut product =
            request.into_inner().product.ok_or_else(|| Status::invalid_argument("product is required"))?;
        if product.name.trim().is_empty() {
            return Err(Status::invalid_argument("product.name is required"));
        }
        if product.price.as_ref().is_none_or(|p| p.currency_code.is_empty()) {
            return Err(Status::invalid_argument("product.price with a currency_code is required"));
        }
        product.id = self.0.next_id("p");
        lock(&self.0.products).insert(product.id.clone(), product.clone());
        Ok(Response::new(product))
    }
}
