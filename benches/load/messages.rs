//! Realistic messages: the track calls and batches the phases send, and the generator that
//! spreads their users and properties.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::loadgen::MakeJob;

/// splitmix64: a tiny deterministic generator, enough to spread users and properties.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const EVENTS: [&str; 5] = [
    "Product Viewed",
    "Product Added",
    "Cart Modified",
    "Checkout Started",
    "Order Completed",
];
const PRODUCTS: [(&str, &str, &str); 4] = [
    ("Cotton T-Shirt", "Apparel", "24.99"),
    ("Water Bottle", "Outdoor", "18.50"),
    ("Headphones", "Electronics", "199.00"),
    ("Coffee Set", "Kitchen", "42.00"),
];

pub fn iso_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Appends one track message (about 330 bytes of JSON; about 410 once the server adds its fields) to `out`. `extra` is spliced in after the
/// type (used for the server fields of the phase-1 rows).
pub fn write_track(
    out: &mut String,
    rng: &mut Rng,
    users: u64,
    message_id: &str,
    timestamp: &str,
    extra: &str,
) -> u64 {
    let user = rng.below(users);
    let event = EVENTS[rng.below(EVENTS.len() as u64) as usize];
    let (name, category, price) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    let _ = write!(
        out,
        concat!(
            r#"{{"type":"track",{}"event":"{}","userId":"user-{:06}","messageId":"{}","timestamp":"{}","#,
            r#""properties":{{"product_id":"sku-{:05}","name":"{}","category":"{}","price":{},"quantity":{},"#,
            r#""cart_ID":"cart-{:08x}"}},"context":{{"library":{{"name":"analytics-node","version":"6.2.0"}}}}}}"#
        ),
        extra,
        event,
        user,
        message_id,
        timestamp,
        rng.below(100_000),
        name,
        category,
        price,
        1 + rng.below(4),
        user.wrapping_mul(2_654_435_761) & 0xffff_ffff,
    );
    user
}

/// Product-like properties (about 120 bytes of JSON) for journey events; they become the
/// instance's journey context.
pub fn write_props(out: &mut String, rng: &mut Rng) {
    let (name, category, price) = PRODUCTS[rng.below(PRODUCTS.len() as u64) as usize];
    let _ = write!(
        out,
        r#""product_id":"sku-{:05}","name":"{}","category":"{}","price":{},"quantity":{},"cart_ID":"cart-{:08x}""#,
        rng.below(100_000),
        name,
        category,
        price,
        1 + rng.below(4),
        rng.next() & 0xffff_ffff
    );
}

/// One track message for the journey phases: `event` for `user`, with `props` (without braces).
pub fn write_journey_event(out: &mut String, event: &str, user: &str, ts: &str, props: &str) {
    let _ = write!(
        out,
        r#"{{"type":"track","event":"{event}","userId":"{user}","messageId":"{}","timestamp":"{ts}","properties":{{{props}}},"context":{{"library":{{"name":"analytics-node","version":"6.2.0"}}}}}}"#,
        uuid::Uuid::new_v4()
    );
}

/// Writes the properties (without braces) of the message for user number `u`.
pub type Props = Arc<dyn Fn(u64, &mut Rng, &mut String) + Send + Sync>;

/// [`write_props`] for every user: product-like properties.
pub fn product_props() -> Props {
    Arc::new(|_, rng, out| write_props(out, rng))
}

/// A batch job that enters users `first..first+count` with `event`, `per` messages a request.
/// `props` writes each message's properties given the user number.
pub fn batch_jobs(
    event: &'static str,
    prefix: String,
    first: u64,
    count: u64,
    per: u64,
    props: Props,
) -> (u64, MakeJob) {
    let jobs = count.div_ceil(per);
    let make: MakeJob = Arc::new(move |job, out| {
        let ts = iso_now();
        let mut rng = Rng(0x7a11_0000 ^ job);
        out.push_str(r#"{"batch":["#);
        let from = first + job * per;
        let to = (from + per).min(first + count);
        let mut p = String::with_capacity(256);
        for u in from..to {
            if u > from {
                out.push(',');
            }
            p.clear();
            props(u, &mut rng, &mut p);
            write_journey_event(out, event, &format!("{prefix}{u:07}"), &ts, &p);
        }
        let _ = write!(out, r#"],"sentAt":"{ts}"}}"#);
        to - from
    });
    (jobs, make)
}
