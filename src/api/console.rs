//! The web console (SPEC §7): a page and its assets, embedded in the binary at build time.
//! (Being built: until then the page answers 404.)

use hyper::{Response, StatusCode};

use super::{Body, admin_error};

/// `GET /` (the page, `asset` empty) and `GET /assets/{asset}`.
pub(super) fn serve(asset: &str) -> Response<Body> {
    admin_error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("the console is not built yet (asked for \"{asset}\")"),
    )
}
