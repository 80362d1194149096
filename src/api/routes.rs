//! The routes: which path and method name which endpoint, decided before any credential is
//! looked at, so that an unknown path is a `404` and a known path with the wrong method a `405`
//! (with `Allow`), whatever credentials the request carries.

use hyper::Method;

use crate::ingest::Endpoint;
use crate::journey::Status;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Anyone (`/healthz`).
    Open,
    /// A write key (the Segment ingest API checks it itself: header or body).
    WriteKey,
    /// An admin token.
    Admin,
}

/// Every endpoint, with the ids its path carries (percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    Ingest(Endpoint),
    Healthz,
    Metrics,
    Backup,
    Simulate,
    Profile(String),
    Timeline(String),
    Journeys,
    PutJourney(String),
    Journey(String),
    Archive(String),
    SetStatus(String, Status),
    Stats(String),
    Instance(String),
    Deliveries,
    Delivery(String),
    RetryDelivery(String),
    Destinations,
    PutDestination(String),
    Destination(String),
    DeleteDestination(String),
    JourneyVersion(String, String),
    JourneyInstances(String),
    Profiles,
    ForgetProfile(String),
    RetryFailed,
    Keys,
    AddKey,
    RevokeKey(String),
    Stream,
    TestDestination(String),
    /// The web console (SPEC §7): its page, and its assets by name.
    Console(String),
    Backtest,
    /// A journey drawn as a graph, for the console.
    JourneyLayout(String),
    /// A journey document checked as `PUT` would, without publishing.
    ValidateJourney,
}

impl Route {
    pub(super) fn access(&self) -> Access {
        match self {
            Route::Ingest(_) => Access::WriteKey,
            Route::Healthz | Route::Console(_) => Access::Open,
            _ => Access::Admin,
        }
    }
}

/// The methods a router may be asked about when a path matched but its method did not.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

/// What a request names.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resolved {
    Route(Route),
    /// The path exists, for these other methods.
    WrongMethod(Vec<Method>),
    NotFound,
}

/// Resolves a request's method and path.
pub(super) fn resolve(method: &Method, path: &str) -> Resolved {
    let path = path.trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    if let Some(route) = route(method, &segments) {
        return Resolved::Route(route);
    }
    let allowed: Vec<Method> = METHODS
        .into_iter()
        .filter(|m| m != method && route(m, &segments).is_some())
        .collect();
    if allowed.is_empty() {
        Resolved::NotFound
    } else {
        Resolved::WrongMethod(allowed)
    }
}

fn route(method: &Method, segments: &[&str]) -> Option<Route> {
    let id = |s: &str| super::path_segment(s);
    Some(match (method, segments) {
        (&Method::POST, ["v1", name]) if super::ingest::endpoint(name).is_some() => {
            Route::Ingest(super::ingest::endpoint(name)?)
        }
        (&Method::GET, ["healthz"]) => Route::Healthz,
        (&Method::GET, []) => Route::Console(String::new()),
        (&Method::GET, ["assets", name]) => Route::Console(id(name)),
        (&Method::POST, ["v1", "journeys", "backtest"]) => Route::Backtest,
        (&Method::POST, ["v1", "journeys", "validate"]) => Route::ValidateJourney,
        (&Method::GET, ["v1", "journeys", j, "layout"]) => Route::JourneyLayout(id(j)),
        (&Method::GET, ["metrics"]) => Route::Metrics,
        (&Method::GET, ["v1", "backup"]) => Route::Backup,
        (&Method::POST, ["v1", "simulate"]) => Route::Simulate,
        (&Method::GET, ["v1", "profiles", p]) => Route::Profile(id(p)),
        (&Method::GET, ["v1", "profiles", p, "timeline"]) => Route::Timeline(id(p)),
        (&Method::GET, ["v1", "journeys"]) => Route::Journeys,
        (&Method::PUT, ["v1", "journeys", j]) => Route::PutJourney(id(j)),
        (&Method::GET, ["v1", "journeys", j]) => Route::Journey(id(j)),
        (&Method::DELETE, ["v1", "journeys", j]) => Route::Archive(id(j)),
        (&Method::POST, ["v1", "journeys", j, "pause"]) => Route::SetStatus(id(j), Status::Paused),
        (&Method::POST, ["v1", "journeys", j, "resume"]) => Route::SetStatus(id(j), Status::Active),
        (&Method::GET, ["v1", "journeys", j, "stats"]) => Route::Stats(id(j)),
        (&Method::GET, ["v1", "instances", i]) => Route::Instance(id(i)),
        (&Method::GET, ["v1", "deliveries"]) => Route::Deliveries,
        (&Method::GET, ["v1", "deliveries", d]) => Route::Delivery(id(d)),
        (&Method::POST, ["v1", "deliveries", d, "retry"]) => Route::RetryDelivery(id(d)),
        (&Method::GET, ["v1", "destinations"]) => Route::Destinations,
        (&Method::PUT, ["v1", "destinations", d]) => Route::PutDestination(id(d)),
        (&Method::GET, ["v1", "destinations", d]) => Route::Destination(id(d)),
        (&Method::DELETE, ["v1", "destinations", d]) => Route::DeleteDestination(id(d)),
        (&Method::POST, ["v1", "destinations", d, "test"]) => Route::TestDestination(id(d)),
        (&Method::GET, ["v1", "journeys", j, "versions", n]) => Route::JourneyVersion(id(j), id(n)),
        (&Method::GET, ["v1", "journeys", j, "instances"]) => Route::JourneyInstances(id(j)),
        (&Method::GET, ["v1", "profiles"]) => Route::Profiles,
        (&Method::DELETE, ["v1", "profiles", p]) => Route::ForgetProfile(id(p)),
        (&Method::POST, ["v1", "deliveries", "retry"]) => Route::RetryFailed,
        (&Method::GET, ["v1", "keys"]) => Route::Keys,
        (&Method::POST, ["v1", "keys"]) => Route::AddKey,
        (&Method::DELETE, ["v1", "keys", k]) => Route::RevokeKey(id(k)),
        (&Method::GET, ["v1", "stream"]) => Route::Stream,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods() {
        use crate::ingest::CallType;
        let cases = [
            (
                Method::POST,
                "/v1/track",
                Resolved::Route(Route::Ingest(Endpoint::Single(CallType::Track))),
            ),
            (
                Method::POST,
                "/v1/b",
                Resolved::Route(Route::Ingest(Endpoint::Batch)),
            ),
            (
                Method::GET,
                "/v1/track",
                Resolved::WrongMethod(vec![Method::POST]),
            ),
            (Method::GET, "/healthz/", Resolved::Route(Route::Healthz)),
            (
                Method::POST,
                "/healthz",
                Resolved::WrongMethod(vec![Method::GET]),
            ),
            (
                Method::PATCH,
                "/v1/journeys/a",
                Resolved::WrongMethod(vec![Method::GET, Method::PUT, Method::DELETE]),
            ),
            (
                Method::GET,
                "/v1/profiles/a%40b.c",
                Resolved::Route(Route::Profile("a@b.c".into())),
            ),
            (Method::GET, "/v1/nothing", Resolved::NotFound),
            (
                Method::GET,
                "/",
                Resolved::Route(Route::Console(String::new())),
            ),
            (
                Method::GET,
                "/assets/app.js",
                Resolved::Route(Route::Console("app.js".into())),
            ),
            (Method::POST, "/", Resolved::WrongMethod(vec![Method::GET])),
            (
                Method::GET,
                "/v1/journeys/a/layout",
                Resolved::Route(Route::JourneyLayout("a".into())),
            ),
            (
                Method::POST,
                "/v1/journeys/validate",
                Resolved::Route(Route::ValidateJourney),
            ),
        ];
        for (method, path, want) in cases {
            assert_eq!(resolve(&method, path), want, "{method} {path}");
        }
    }
}
