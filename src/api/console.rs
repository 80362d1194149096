//! The web console (SPEC §7): a page and its assets, embedded in the binary at build time, and the
//! two admin endpoints that exist for it (and are plain admin API calls like any other):
//!
//! - `GET /v1/journeys/{id}/layout?version=N`: the journey drawn as a graph ([`layout`]).
//! - `POST /v1/journeys/validate`: a journey document checked as `PUT` would check it (destinations
//!   included) without publishing; its layout when valid, and what publishing would do.
//!
//! Assets are served under content-hashed names (`/assets/app.<hash>.js`, immutable for a year);
//! the page itself is revalidated (`no-cache`, `ETag`). Every console answer carries a strict
//! `Content-Security-Policy`: scripts, styles, images and connections from this origin only, no
//! inline code, no frames, no forms posted anywhere.

pub(super) mod layout;

use std::sync::LazyLock;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use sha2::Digest;

use super::{App, Body, json_response, store_error, views};
use crate::journey::{self, Problem, StepKind};

/// What a console page may load: its own scripts, styles and images, and calls to its own origin.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The embedded files: name, content type, bytes.
const FILES: [(&str, &str, &[u8]); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("console/assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("console/assets/app.css"),
    ),
    (
        "icon.svg",
        "image/svg+xml",
        include_bytes!("console/assets/icon.svg"),
    ),
];

const INDEX: &str = include_str!("console/assets/index.html");

/// One servable file, gzipped once.
struct Asset {
    /// `app.<hash>.js`: the name the page links to.
    hashed: String,
    plain: &'static str,
    content_type: &'static str,
    bytes: Bytes,
    gzipped: Bytes,
    etag: String,
}

impl Asset {
    fn new(plain: &'static str, content_type: &'static str, bytes: Bytes) -> Asset {
        let digest = sha2::Sha256::digest(&bytes);
        let hash: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let hashed = match plain.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{hash}.{ext}"),
            None => format!("{plain}.{hash}"),
        };
        let gzipped = {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            enc.write_all(&bytes).expect("gzip into memory");
            Bytes::from(enc.finish().expect("gzip into memory"))
        };
        Asset {
            hashed,
            plain,
            content_type,
            bytes,
            gzipped,
            etag: format!("\"{hash}\""),
        }
    }
}

struct Assets {
    page: Asset,
    files: Vec<Asset>,
}

static ASSETS: LazyLock<Assets> = LazyLock::new(|| {
    let files: Vec<Asset> = FILES
        .iter()
        .map(|(name, ty, bytes)| Asset::new(name, ty, Bytes::from_static(bytes)))
        .collect();
    // The page links to the assets by their hashed names.
    let mut page = INDEX.to_string();
    for f in &files {
        page = page.replace(
            &format!("{{{{{}}}}}", f.plain),
            &format!("/assets/{}", f.hashed),
        );
    }
    Assets {
        page: Asset::new("index.html", "text/html; charset=utf-8", Bytes::from(page)),
        files,
    }
});

/// `GET /` (the page, `asset` empty) and `GET /assets/{asset}`.
pub(super) fn serve(asset: &str, headers: &HeaderMap) -> Response<Body> {
    let assets = &*ASSETS;
    let (file, immutable) = if asset.is_empty() {
        (&assets.page, false)
    } else if let Some(f) = assets.files.iter().find(|f| f.hashed == asset) {
        (f, true)
    } else if let Some(f) = assets.files.iter().find(|f| f.plain == asset) {
        (f, false)
    } else {
        let mut resp = Response::new(super::full(Bytes::from_static(b"not found\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        secure(resp.headers_mut());
        return resp;
    };
    let gzip = accepts_gzip(headers);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == file.etag)
        });
    let mut resp = if not_modified {
        let mut r = Response::new(super::full(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if gzip {
        let mut r = Response::new(super::full(file.gzipped.clone()));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(super::full(file.bytes.clone()))
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&file.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    secure(h);
    resp
}

/// The headers every console answer carries.
fn secure(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "Cross-Origin-Opener-Policy",
        HeaderValue::from_static("same-origin"),
    );
}

/// Does `Accept-Encoding` take gzip (and not with `q=0`)?
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !q_zero
        })
}

/// `GET /v1/journeys/{id}/layout?version=N`: the newest version (or version N) laid out.
pub(super) async fn journey_layout(app: &App, id: String, query: Option<&str>) -> Response<Body> {
    let version = match super::version_param(query) {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let (version, definition) = match version {
        Some(v) => match app.store.journey_version(id.clone(), v).await {
            Ok(d) => (v, d),
            Err(e) => return store_error(e),
        },
        None => match app.store.journey(id.clone()).await {
            Ok(d) => (d.summary.version, d.definition),
            Err(e) => return store_error(e),
        },
    };
    match journey::parse(&definition) {
        Ok(j) => json_response(
            StatusCode::OK,
            &views::layout(&id, Some(version), &layout::layout(&j)),
        ),
        // A stored definition was valid when it was published; rules may have grown since.
        Err(problems) => super::journeys::invalid("invalid_journey", &problems),
    }
}

/// `POST /v1/journeys/validate`: the checks of `PUT /v1/journeys/{id}` without publishing.
/// `200 {"valid": true, "id", "publish": "create" | "new_version" | "unchanged", "layout"}`, or
/// the `422` a `PUT` would answer, with every problem and its JSON path.
pub(super) async fn validate(app: &App, req: Request<Incoming>) -> Response<Body> {
    let doc = match super::journeys::json_body(req).await {
        Ok(d) => d,
        Err(resp) => return resp,
    };
    let journey = match journey::parse(&doc) {
        Ok(j) => j,
        Err(problems) => return super::journeys::invalid("invalid_journey", &problems),
    };
    let mut problems = Vec::new();
    for (n, step) in journey.steps.iter().enumerate() {
        if let StepKind::Send { destination, .. } = &step.kind {
            match app.store.destination(destination.clone()).await {
                Ok(_) => {}
                Err(crate::store::StoreError::NotFound(_)) => problems.push(Problem::new(
                    format!("/steps/{n}/destination"),
                    format!("unknown destination \"{destination}\""),
                )),
                Err(e) => return store_error(e),
            }
        }
    }
    if !problems.is_empty() {
        return super::journeys::invalid("invalid_journey", &problems);
    }
    let publish = match app.store.journey(journey.id.clone()).await {
        Ok(current) if current.definition == doc => "unchanged",
        Ok(_) => "new_version",
        Err(crate::store::StoreError::NotFound(_)) => "create",
        Err(e) => return store_error(e),
    };
    let mut body: Value = json!({"valid": true, "id": journey.id, "publish": publish});
    body["layout"] = views::layout(&journey.id, None, &layout::layout(&journey));
    json_response(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_links_to_hashed_assets_that_exist() {
        let assets = &*ASSETS;
        let page = String::from_utf8(assets.page.bytes.to_vec()).unwrap();
        for f in &assets.files {
            if f.plain == "icon.svg" || f.plain.ends_with(".js") || f.plain.ends_with(".css") {
                assert!(
                    page.contains(&format!("/assets/{}", f.hashed)),
                    "{} not linked",
                    f.hashed
                );
            }
        }
        assert!(!page.contains("{{"), "a placeholder is left: {page}");
        // No inline script or style: the CSP forbids them.
        assert!(!page.contains("<script>"));
        assert!(!page.contains("style="));
        assert!(!page.contains("<style"));
    }

    #[test]
    fn gzip_is_taken_unless_refused() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(accepts_gzip(&h("gzip, deflate, br")));
        assert!(accepts_gzip(&h("br;q=1.0, gzip;q=0.8")));
        assert!(!accepts_gzip(&h("gzip;q=0")));
        assert!(!accepts_gzip(&h("br")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn assets_stay_small() {
        let total: usize =
            ASSETS.files.iter().map(|f| f.gzipped.len()).sum::<usize>() + ASSETS.page.gzipped.len();
        assert!(total < 300 * 1024, "{total} bytes gzipped");
    }
}
