//! One route's declaration, and where declarations go. Apart from the table in
//! [`super::routes`] so that what reads declarations (the app's registration, the OpenAPI
//! document) needs only this, not the handlers the table names.

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Responder};

use crate::auth::Access;

/// One route: who may reach it, its method (`None`: every method) and path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub access: Access,
    pub method: Option<Method>,
    pub path: &'static str,
}

impl Route {
    pub fn new(access: Access, method: Option<Method>, path: &'static str) -> Self {
        Self {
            access,
            method,
            path,
        }
    }
}

/// Where declarations go: the app, or a list.
pub trait Declare {
    fn route<F, Args>(&mut self, route: Route, handler: F)
    where
        F: Handler<Args>,
        Args: FromRequest + 'static,
        F::Output: Responder + 'static;
}
