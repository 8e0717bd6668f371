//! shop.users.v1.UserService: customer accounts.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::pb::shop::users::v1::user_service_server::UserService;
use super::pb::shop::users::v1::{CreateUserRequest, GetUserRequest, ListUsersRequest, ListUsersResponse, User};
use super::shop::{Shop, lock, now};

pub(super) struct Users(pub(super) Arc<Shop>);

#[tonic::async_trait]
impl UserService for Users {
    async fn create_user(&self, request: Request<CreateUserRequest>) -> Result<Response<User>, Status> {
        let request = request.into_inner();
        if !request.email.contains('@') {
            return Err(Status::invalid_argument(format!("email {:?} is not an email address", request.email)));
        }
        let mut users = lock(&self.0.users);
        if users.values().any(|u| u.email == request.email) {
            return Err(Status::already_exists(format!("a user with email {} exists", request.email)));
        }
        let user = User {
            id: self.0.next_id("u"),
            email: request.email,
            display_name: request.display_name,
            create_time: Some(now()),
        };
        users.insert(user.id.clone(), user.clone());
        Ok(Response::new(user))
    }

    async fn get_user(&self, request: Request<GetUserRequest>) -> Result<Response<User>, Status> {
        let id = request.into_inner().id;
        let users = lock(&self.0.users);
        let user = users.get(&id).cloned().ok_or_else(|| Status::not_found(format!("no user with id {id:?}")))?;
        Ok(Response::new(user))
    }

    async fn list_users(&self, request: Request<ListUsersRequest>) -> Result<Response<ListUsersResponse>, Status> {
        let request = request.into_inner();
        let size = match request.page_size {
            0 => 50,
            n if n < 0 => return Err(Status::invalid_argument("page_size must not be negative")),
            n => n as usize,
        };
        let users = lock(&self.0.users);
        let after = request.page_token;
        let mut page: Vec<User> =
            users.values().filter(|u| after.is_empty() || u.id > after).take(size + 1).cloned().collect();
        let next_page_token = if page.len() > size {
            page.truncate(size);
            page.last().map(|u| u.id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(ListUsersResponse { users: page, next_page_token }))
    }
}
