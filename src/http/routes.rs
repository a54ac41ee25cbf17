//! Every route the gateway serves, each declared once with the [`Access`] it needs. The
//! app registers routes only from [`declare`], wrapping each in its own
//! [`Door`](crate::auth::door::Door); [`table`] lists the same declarations for the
//! access test and the table in docs/security.md. A route cannot be added without saying
//! who may reach it: [`Route`] has no default access.

use actix_web::http::Method;
use actix_web::{FromRequest, Handler, Responder};

pub use super::route::{Declare, Route};
use super::{cache, health, invocations, keys, live, mcp, openapi, servers, tools, upstreams};
use crate::auth::{Access, Role};

/// Every route, in the order the router tries them. Patterns with parameters cost a
/// regex match each, so the hot one (a tool call) goes first; no two patterns here match
/// the same path and method.
pub fn declare(d: &mut impl Declare) {
    use Access::{LiveStream, Open, Probe};
    let (get, post, put, delete) = (
        Some(Method::GET),
        Some(Method::POST),
        Some(Method::PUT),
        Some(Method::DELETE),
    );
    let viewer = Access::Role(Role::Viewer);
    let operator = Access::Role(Role::Operator);
    let admin = Access::Role(Role::Admin);
    let r = Route::new;

    d.route(
        r(
            operator,
            post.clone(),
            "/api/v1/servers/{name}/tools/{tool}/call",
        ),
        tools::call,
    );
    // `/mcp` takes every method (POST, GET for the stream, DELETE); rmcp answers 405 to
    // the others.
    d.route(r(operator, None, "/mcp"), crate::mcp::bridge::handle);
    d.route(r(operator, None, "/mcp/"), crate::mcp::bridge::handle);

    d.route(r(Probe, get.clone(), "/healthz"), health::healthz);
    d.route(r(Probe, get.clone(), "/readyz"), health::readyz);
    d.route(r(Open, get.clone(), "/"), live::dashboard);
    d.route(r(LiveStream, get.clone(), "/ws"), live::websocket);
    // Every server's series: an operator's view, not a narrowed key's.
    d.route(r(admin, get.clone(), "/metrics"), live::prometheus);

    d.route(r(viewer, get.clone(), "/api/v1/servers"), servers::list);
    d.route(r(admin, post.clone(), "/api/v1/servers"), servers::create);
    d.route(
        r(viewer, get.clone(), "/api/v1/servers/{name}"),
        servers::get,
    );
    d.route(r(admin, put, "/api/v1/servers/{name}"), servers::update);
    d.route(
        r(admin, delete.clone(), "/api/v1/servers/{name}"),
        servers::delete,
    );
    d.route(
        r(admin, post.clone(), "/api/v1/servers/{name}/reset"),
        upstreams::reset,
    );
    d.route(
        r(admin, post.clone(), "/api/v1/servers/{name}/reload"),
        upstreams::reload,
    );
    d.route(
        r(viewer, get.clone(), "/api/v1/servers/{name}/events"),
        upstreams::events,
    );
    d.route(r(viewer, get.clone(), "/api/v1/tools"), tools::catalogue);
    d.route(r(viewer, get.clone(), "/api/v1/cache/stats"), cache::stats);
    d.route(r(admin, delete.clone(), "/api/v1/cache"), cache::clear);
    d.route(
        r(admin, delete.clone(), "/api/v1/cache/servers/{name}"),
        cache::clear_server,
    );
    d.route(
        r(
            admin,
            delete.clone(),
            "/api/v1/cache/servers/{name}/tools/{tool}",
        ),
        cache::clear_tool,
    );
    d.route(
        r(admin, get.clone(), "/api/v1/invocations"),
        invocations::list,
    );
    d.route(r(viewer, get.clone(), "/api/v1/mcp"), mcp::status);
    d.route(
        r(viewer, get.clone(), "/api/v1/openapi.json"),
        openapi::document,
    );
    d.route(r(admin, get, "/api/v1/keys"), keys::list);
    d.route(r(admin, post, "/api/v1/keys"), keys::create);
    d.route(r(admin, delete, "/api/v1/keys/{name}"), keys::revoke);
}

/// The declarations as a list, in order.
pub fn table() -> Vec<Route> {
    struct List(Vec<Route>);
    impl Declare for List {
        fn route<F, Args>(&mut self, route: Route, _handler: F)
        where
            F: Handler<Args>,
            Args: FromRequest + 'static,
            F::Output: Responder + 'static,
        {
            self.0.push(route);
        }
    }
    let mut list = List(Vec::new());
    declare(&mut list);
    list.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_is_declared_twice() {
        let routes = table();
        for (i, a) in routes.iter().enumerate() {
            for b in &routes[i + 1..] {
                assert!(
                    !(a.path == b.path && (a.method == b.method || a.method.is_none())),
                    "{a:?} and {b:?}"
                );
            }
        }
    }

    #[test]
    fn what_changes_state_or_shows_secrets_needs_admin() {
        for route in table() {
            let admin_only = route.path.starts_with("/api/v1/keys")
                || route.path == "/api/v1/invocations"
                || route.path == "/metrics"
                || (route.path.starts_with("/api/v1/")
                    && !route.path.ends_with("/call")
                    && route.method != Some(Method::GET));
            if admin_only {
                assert_eq!(route.access, Access::Role(Role::Admin), "{route:?}");
            }
        }
    }
}
