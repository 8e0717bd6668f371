//! shop.products.v1.ProductService: the catalogue.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::google::api::HttpBody;
use super::pb::shop::products::v1::product_service_server::ProductService;
use super::pb::shop::products::v1::{
    CreateProductRequest, GetProductImageRequest, GetProductRequest, ImportProductsResponse, ListProductsRequest,
    ListProductsResponse, Product,
};
use super::shop::{Shop, eur, lock};

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

    async fn get_product_image(&self, request: Request<GetProductImageRequest>) -> Result<Response<HttpBody>, Status> {
        let id = request.into_inner().id;
        let name = lock(&self.0.products)
            .get(&id)
            .map(|p| p.name.clone())
            .ok_or_else(|| Status::not_found(format!("no product with id {id:?}")))?;
        let escaped = name.replace('&', "&amp;").replace('<', "&lt;");
        let svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"320\" height=\"80\"><rect width=\"320\" height=\"80\" fill=\"#234\"/><text x=\"16\" y=\"48\" fill=\"#fff\" font-size=\"20\">{escaped}</text></svg>"
        );
        Ok(Response::new(HttpBody {
            content_type: "image/svg+xml".into(),
            data: svg.into_bytes(),
            extensions: Vec::new(),
        }))
    }

    async fn import_products(&self, request: Request<HttpBody>) -> Result<Response<ImportProductsResponse>, Status> {
        let body = request.into_inner();
        if !body.content_type.starts_with("text/csv") {
            return Err(Status::invalid_argument(format!("expected text/csv, got {:?}", body.content_type)));
        }
        let text = String::from_utf8(body.data).map_err(|_| Status::invalid_argument("the CSV is not UTF-8"))?;
        let mut added = Vec::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |what: &str| Status::invalid_argument(format!("line {}: {what}", n + 1));
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [name, category, price, stock] = fields[..] else {
                return Err(bad("expected name,category,price,stock"));
            };
            let price: i64 = price.parse().map_err(|_| bad("price is not a whole number"))?;
            let stock: i32 = stock.parse().map_err(|_| bad("stock is not a whole number"))?;
            added.push(Product {
                id: String::new(),
                name: name.into(),
                description: String::new(),
                price: Some(eur(price, 0)),
                category: category.into(),
                stock,
                tags: Vec::new(),
            });
        }
        let mut products = lock(&self.0.products);
        for product in &mut added {
            product.id = self.0.next_id("p");
            products.insert(product.id.clone(), product.clone());
        }
        Ok(Response::new(ImportProductsResponse { products: added }))
    }
}
