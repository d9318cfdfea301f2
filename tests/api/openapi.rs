//! The OpenAPI document, the documentation pages and the static files.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{test_config, TestApp, TestDatabase};

/// Paths served for people rather than API clients (the web client at `/` and `/web/`, the admin
/// area, the documentation UI and static files), and the router fallback's private wildcard,
/// which answers 404 to everything.
fn is_not_api(path: &str) -> bool {
    path == "/"
        || path.contains("__private__axum_fallback")
        || [
            "/admin",
            "/static/",
            "/web/",
            "/api/docs",
            "/api/redoc",
            "/api/schema",
        ]
        .iter()
        .any(|prefix| path == prefix.trim_end_matches('/') || path.starts_with(prefix))
}

/// `/api/chats/{id}/` and `/api/chats/{id}` name the same route.
fn normalised(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    let mut out = String::new();
    let mut in_param = false;
    for c in trimmed.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
}

/// Every route the server registers, read from the router itself.
async fn registered_routes() -> BTreeSet<String> {
    let db = TestDatabase::create().await;
    let config = test_config(&db.url);
    let database = mrm_chat::store::Db::connect(&config.database_url, 1)
        .await
        .unwrap();
    let state = mrm_chat::state::AppState::new(database.clone(), config)
        .await
        .unwrap();
    let router = mrm_chat::http::router(state);
    // The router's debug form lists every path it matches.
    let debug = format!("{router:?}");
    let pattern = regex::Regex::new(r#""(/[^"]*)""#).unwrap();
    let routes = pattern
        .captures_iter(&debug)
        .map(|c| c[1].to_owned())
        .collect();
    database.close().await;
    routes
}

#[tokio::test]
async fn every_route_is_in_the_schema() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let schema = app.client().get("/api/schema/?format=json").await.body;
    let documented: BTreeSet<(String, String)> = schema["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), normalised(path)))
        })
        .collect();
    let documented_paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();

    let routes = registered_routes().await;
    assert!(
        routes.len() > 30,
        "the router's routes were found: {routes:?}"
    );
    for route in routes.iter().filter(|r| !is_not_api(r)) {
        assert!(
            documented_paths.contains(&normalised(route)),
            "{route} is not in the schema"
        );
        // Every method the route answers (anything but 405) must be documented too.
        let concrete = route
            .replace("{id}", "1")
            .replace("{user_id}", "1")
            .replace("{chat_id}", "1");
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            let status = alice
                .write(method.clone(), &concrete, Some(&json!({})))
                .await
                .status;
            if status != StatusCode::METHOD_NOT_ALLOWED {
                assert!(
                    documented.contains(&(method.to_string(), normalised(route))),
                    "{method} {route} answers {status} but is not in the schema"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_schema_comes_as_yaml_or_json_with_tags_and_security() {
    let app = TestApp::spawn().await;
    let client = app.client();
    let response = reqwest::get(format!("http://{}/api/schema/", app.addr))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/yaml"));
    let yaml = response.text().await.unwrap();
    assert!(yaml.starts_with("openapi: 3."), "{}", &yaml[..40]);
    assert!(yaml.contains("\n  /api/chats/{id}/send_message/:\n"));

    let doc = client.get("/api/schema/?format=json").await.body;
    assert_eq!(doc["info"]["title"], "MRM Chat API");
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for tag in [
        "Authentication",
        "Users",
        "Chats",
        "Messages",
        "AI Chat",
        "AI Messages",
        "WebSockets",
    ] {
        assert!(tags.contains(&tag), "{tag}");
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["csrf"]["name"], "X-CSRFToken");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    for socket in ["/ws/chat/{id}/", "/ws/ai-chat/{id}/"] {
        let operation = &doc["paths"][socket]["get"];
        assert_eq!(operation["tags"], json!(["WebSockets"]), "{socket}");
        for direction in ["x-client-frames", "x-server-frames"] {
            for frame in operation[direction].as_array().unwrap() {
                let name = frame["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
                assert!(
                    doc["components"]["schemas"][name].is_object(),
                    "{socket}: {name}"
                );
            }
        }
    }
    let send = &doc["paths"]["/api/chats/{id}/send_message/"]["post"];
    assert!(
        send["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .ends_with("MessageView")
    );
}

#[tokio::test]
async fn documentation_pages_are_served_from_this_server() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.addr);
    let page = http.get(format!("{base}/api/docs/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no asset from elsewhere"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let response = http
            .get(format!("{base}/api/docs/{asset}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
    }
    let init = http
        .get(format!("{base}/api/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("/api/schema/?format=json"), "{init}");

    let redoc = http
        .get(format!("{base}/api/redoc/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(redoc.contains("/static/redoc/redoc.standalone.js"));
    assert!(!redoc.contains("https://"), "no asset from elsewhere");
}

#[tokio::test]
async fn static_files_have_etags_cache_headers_and_compression() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::builder().build().unwrap();
    let url = format!("http://{}/static/redoc/redoc.standalone.js", app.addr);
    let response = http
        .get(&url)
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-encoding"], "gzip");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("javascript"));
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let etag = response.headers()["etag"].clone();
    let again = http
        .get(&url)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let missing = http
        .get(format!("http://{}/static/nope.js", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body, json!({"detail": "Not found."}));
}

#[tokio::test]
async fn the_web_client_is_served_at_the_root_under_a_strict_policy() {
    let app = TestApp::spawn().await;
    let http = reqwest::Client::builder().build().unwrap();
    let page = http
        .get(format!("http://{}/", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(page.headers()["cache-control"], "no-cache");
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("https://") && !html.contains("http://"),
        "{html}"
    );
    // Its script and styles, named by their content's hash, are cached for good.
    let assets = regex::Regex::new(r#"(?:src|href)="(/web/assets/[^"]+)""#).unwrap();
    let found: Vec<&str> = assets
        .captures_iter(&html)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert_eq!(found.len(), 2, "{html}");
    for path in found {
        let asset = http
            .get(format!("http://{}{path}", app.addr))
            .header("Accept-Encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(asset.status(), StatusCode::OK, "{path}");
        assert_eq!(
            asset.headers()["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert_eq!(asset.headers()["content-encoding"], "gzip");
    }
    let missing = http
        .get(format!("http://{}/web/assets/nope.js", app.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
}
