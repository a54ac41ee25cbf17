//! The OpenAPI 3.1 document of the HTTP API. Paths, parameters and bodies come from the
//! handlers' own `#[utoipa::path]` annotations and the types they answer with; who may
//! reach each operation (its security and its 401/403/429 answers) comes from the route
//! table in [`super::routes`], the same declarations the router registers. It is served at
//! `GET /api/v1/openapi.json` and written to `docs/openapi.json` by `omni-bridge openapi`.
//!
//! Routes that are not JSON over HTTP stay out, see [`OUT_OF_SCOPE`].

use actix_web::http::Method;
use actix_web::{HttpResponse, web};
use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use super::route::Route;
use super::{cache, health, invocations, keys, live, mcp, servers, tools, upstreams};
use crate::auth::{Access, Role};
use crate::error::ErrorBody;

/// Routes the document leaves out, and why: none of them is a JSON request answered with
/// JSON, which is all OpenAPI (and schemathesis) can describe and check.
/// - `/` is the dashboard's HTML page;
/// - `/ws` is a WebSocket upgrade; its messages are documented in docs/dashboard.md;
/// - `/mcp` and `/mcp/` speak MCP's Streamable HTTP (JSON-RPC, SSE streams, sessions) on
///   every method, which the MCP specification describes and MCP clients test.
pub const OUT_OF_SCOPE: [&str; 4] = ["/", "/ws", "/mcp", "/mcp/"];

/// The name of the security scheme: `Authorization: Bearer obk_...` (see `auth::guard`).
const SCHEME: &str = "api_key";

/// What `ServerName::parse` accepts, for the document's path parameters.
const SERVER_NAME_PATTERN: &str = "^[a-z0-9-]+$";
const SERVER_NAME_MAX: usize = 64;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "omni-bridge",
        description = "An MCP gateway: one front door for many MCP servers. Every error answer \
            is `{\"error\": {\"code\", \"message\", \"field\"?}}` with a stable kebab-case `code`.",
    ),
    paths(
        health::healthz,
        health::readyz,
        live::prometheus,
        document,
        servers::list,
        servers::create,
        servers::get,
        servers::update,
        servers::delete,
        upstreams::reset,
        upstreams::reload,
        upstreams::events,
        tools::catalogue,
        tools::call,
        cache::stats,
        cache::clear,
        cache::clear_server,
        cache::clear_tool,
        invocations::list,
        mcp::status,
        keys::list,
        keys::create,
        keys::revoke,
    ),
    components(schemas(ErrorBody))
)]
struct ApiDoc;

/// The document, with what `routes` declare about who may reach each operation.
pub fn build(routes: &[Route]) -> String {
    let mut doc = ApiDoc::openapi();
    utoipa::Modify::modify(&FromRouteTable(routes), &mut doc);
    let mut text = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

/// The built document, as the app holds it (see `http::openapi_json`).
#[derive(Clone, Copy)]
pub struct Document(pub &'static str);

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", operation_id = "openapi_document", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API",
        content_type = "application/json", body = Object)))]
pub async fn document(doc: web::Data<Document>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0)
}

/// The operation of `method` in `item`, if the document has one.
pub fn operation_mut<'a>(item: &'a mut PathItem, method: &Method) -> Option<&'a mut Operation> {
    match *method {
        Method::GET => item.get.as_mut(),
        Method::POST => item.post.as_mut(),
        Method::PUT => item.put.as_mut(),
        Method::DELETE => item.delete.as_mut(),
        Method::PATCH => item.patch.as_mut(),
        Method::HEAD => item.head.as_mut(),
        Method::OPTIONS => item.options.as_mut(),
        _ => None,
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// Adds what the route table knows to every operation: who may call it (security, and
/// the answers of the door in front of it), and the errors every handler of its shape
/// can give. A handler's own annotation wins where both name a status.
struct FromRouteTable<'a>(&'a [Route]);

impl utoipa::Modify for FromRouteTable<'_> {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                SCHEME,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .bearer_format("obk_...")
                        .description(Some(
                            "An API key (`omni-bridge keys create`). Needed once any key exists; \
                             a gateway on loopback with no key ever created runs open.",
                        ))
                        .build(),
                ),
            );
        for route in self.0 {
            let Some(method) = &route.method else {
                continue;
            };
            let Some(op) = doc
                .paths
                .paths
                .get_mut(route.path)
                .and_then(|item| operation_mut(item, method))
            else {
                continue;
            };
            describe(op, route);
        }
    }
}

/// The bounds the handlers put on names in paths: server names as `ServerName::parse`
/// has them, tool and key names as `text::name` (its bound is in bytes, the document's in
/// characters: a longer name of wide characters is a documented 400).
fn bound_path_names(op: &mut Operation, path: &str) {
    for param in op.parameters.iter_mut().flatten() {
        let RefOr::T(param) = param else { continue };
        if !matches!(param.parameter_in, ParameterIn::Path) {
            continue;
        }
        let server = param.name == "name" && !path.starts_with("/api/v1/keys/");
        let mut schema = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1));
        schema = if server {
            schema
                .max_length(Some(SERVER_NAME_MAX))
                .pattern(Some(SERVER_NAME_PATTERN))
                .examples(["demo"])
        } else {
            let schema = schema.max_length(Some(super::text::MAX_NAME));
            if param.name == "tool" {
                schema.examples(["echo"])
            } else {
                schema
            }
        };
        param.schema = Some(RefOr::T(schema.build().into()));
    }
}

fn describe(op: &mut Operation, route: &Route) {
    bound_path_names(op, route.path);
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    };
    if let Access::Role(role) = route.access {
        add(
            "401",
            "`unauthorized`: no key, or an unknown or revoked one",
        );
        add(
            "403",
            "`forbidden` (the key's role is too low), `host-not-allowed`, `origin-not-allowed`",
        );
        add("429", "`rate-limited`, with `Retry-After`");
        if route.path.contains('{') {
            add("400", "`invalid-field`: a malformed name in the path");
        }
        if op.request_body.is_some() {
            add("400", "`invalid-body`, `invalid-field`");
            add("408", "`body-timeout`");
            add("413", "`payload-too-large`");
        }
        add(
            "503",
            "`store-busy` (with `Retry-After`) or `store-unavailable`",
        );
        let needs = match role {
            Role::Viewer => "Needs a key with the role viewer, operator or admin.",
            Role::Operator => "Needs a key with the role operator or admin.",
            Role::Admin => "Needs a key with the role admin.",
        };
        op.description = Some(match op.description.take() {
            Some(text) => format!("{text}\n\n{needs}"),
            None => needs.to_owned(),
        });
        op.security = Some(vec![SecurityRequirement::new::<_, [&str; 0], &str>(
            SCHEME,
            [],
        )]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{openapi_json as document_json, routes};

    fn documented() -> Vec<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        out.sort();
        out
    }

    /// Every route the router serves is in the document, and nothing else is.
    #[test]
    fn the_document_has_exactly_the_routers_routes() {
        let mut served: Vec<(String, String)> = routes::table()
            .into_iter()
            .filter(|r| !OUT_OF_SCOPE.contains(&r.path))
            .map(|r| {
                let method = r.method.expect("only /mcp takes every method");
                (method.to_string(), r.path.to_owned())
            })
            .collect();
        served.sort();
        assert_eq!(documented(), served);
        // And what is left out is served: the list names no route that went away.
        for path in OUT_OF_SCOPE {
            assert!(routes::table().iter().any(|r| r.path == path), "{path}");
        }
    }

    /// The committed copy is what this code serves, so a change to the API shows up in
    /// review as a change to `docs/openapi.json`.
    #[test]
    fn docs_openapi_json_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == document_json(),
            "docs/openapi.json differs from the document the code builds; regenerate it with \
             `cargo run -- openapi > docs/openapi.json` and commit it"
        );
    }

    /// The document's bound on server names in paths is the parser's.
    #[test]
    fn server_name_bounds_are_the_parsers() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        let param = doc["paths"]["/api/v1/servers/{name}"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "name")
            .unwrap();
        let validator = jsonschema::validator_for(&param["schema"]).unwrap();
        let long = "a".repeat(SERVER_NAME_MAX + 1);
        for sample in [
            "demo",
            "a-1",
            "0",
            "",
            "Demo",
            "a_b",
            "a b",
            "é",
            &long[1..],
            &long,
        ] {
            assert_eq!(
                validator.is_valid(&serde_json::json!(sample)),
                crate::registry::ServerName::parse(sample).is_ok(),
                "{sample:?}"
            );
        }
    }

    /// Each operation behind a role says so; the probes need nothing.
    #[test]
    fn security_follows_the_route_table() {
        let doc: serde_json::Value = serde_json::from_str(document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for route in routes::table() {
            let Some(method) = route.method.as_ref() else {
                continue;
            };
            if OUT_OF_SCOPE.contains(&route.path) {
                continue;
            }
            let op = &doc["paths"][route.path][method.as_str().to_lowercase()];
            let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let role = matches!(route.access, Access::Role(_));
            assert_eq!(secured, role, "{route:?}");
            if role {
                for status in ["401", "403"] {
                    assert_eq!(
                        op["responses"][status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{route:?} {status}"
                    );
                }
            }
        }
    }
}
