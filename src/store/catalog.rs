//! The live catalog: the journeys the engine runs, held by the writer thread, with the event
//! names any of them listens to. Read from the tables at start and after a failed commit;
//! publishing, pausing and archiving keep it in step within their own writer jobs, after all
//! their SQL. Archived journeys are not held: their instances have all ended.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rusqlite::Connection;

use super::{Result, StoreError};
use crate::engine::Catalog;
use crate::journey::{Journey, Status, StepKind};

/// One journey as the writer holds it.
#[derive(Debug, Clone)]
struct LiveJourney {
    status: Status,
    version: i64,
    versions: HashMap<i64, Arc<Journey>>,
}

#[derive(Debug, Default)]
pub(super) struct LiveCatalog {
    journeys: BTreeMap<String, LiveJourney>,
    /// Event names that any held version uses (entry, hold branch, exit): other events skip the
    /// engine entirely.
    interesting: HashSet<String>,
}

impl LiveCatalog {
    /// Reads every journey that is not archived, with its versions.
    pub(super) fn load(conn: &Connection) -> Result<LiveCatalog> {
        let mut catalog = LiveCatalog::default();
        let mut stmt = conn.prepare(
            "SELECT j.journey_id, j.status, j.version, v.version, v.definition
             FROM journeys j JOIN journey_versions v ON v.journey_id = j.journey_id
             WHERE j.status != 'archived'",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let id: String = r.get(0)?;
            let status: String = r.get(1)?;
            let status = Status::parse(&status).ok_or_else(|| {
                StoreError::Corrupt(format!("journey \"{id}\" has status \"{status}\""))
            })?;
            let current: i64 = r.get(2)?;
            let version: i64 = r.get(3)?;
            let journey = parse_stored(&id, version, &r.get::<_, String>(4)?)?;
            catalog
                .journeys
                .entry(id)
                .or_insert_with(|| LiveJourney {
                    status,
                    version: current,
                    versions: HashMap::new(),
                })
                .versions
                .insert(version, Arc::new(journey));
        }
        catalog.reindex();
        Ok(catalog)
    }

    /// Whether any journey listens to events of this name.
    pub(super) fn interested_in(&self, event: &str) -> bool {
        self.interesting.contains(event)
    }

    /// A new version was published (or an archived journey revived with it).
    pub(super) fn published(&mut self, journey: Journey, version: i64, status: Status) {
        let entry = self
            .journeys
            .entry(journey.id.clone())
            .or_insert_with(|| LiveJourney {
                status,
                version,
                versions: HashMap::new(),
            });
        entry.status = status;
        entry.version = version;
        entry.versions.insert(version, Arc::new(journey));
        self.reindex();
    }

    pub(super) fn set_status(&mut self, id: &str, status: Status) {
        if status == Status::Archived {
            self.journeys.remove(id);
            self.reindex();
        } else if let Some(j) = self.journeys.get_mut(id) {
            j.status = status;
        }
    }

    fn reindex(&mut self) {
        self.interesting.clear();
        for j in self.journeys.values() {
            for v in j.versions.values() {
                self.interesting.insert(v.entry.event.clone());
                self.interesting
                    .extend(v.exit.events.iter().map(|e| e.event.clone()));
                for step in &v.steps {
                    if let StepKind::HoldUntil { branches, .. } = &step.kind {
                        self.interesting
                            .extend(branches.iter().map(|b| b.event.clone()));
                    }
                }
            }
        }
    }
}

/// A stored definition, which validated when it was published.
fn parse_stored(id: &str, version: i64, definition: &str) -> Result<Journey> {
    let what = || format!("version {version} of journey \"{id}\"");
    let doc = super::json_column(definition, what)?;
    crate::journey::parse(&doc)
        .map_err(|p| StoreError::Corrupt(format!("{} no longer validates: {p:?}", what())))
}

impl Catalog for LiveCatalog {
    fn version(&self, journey_id: &str, version: i64) -> Option<Arc<Journey>> {
        self.journeys
            .get(journey_id)
            .and_then(|j| j.versions.get(&version).cloned())
    }

    fn entries_for(&self, event: &str) -> Vec<(i64, Arc<Journey>, bool)> {
        self.journeys
            .values()
            .filter_map(|j| {
                let v = j.versions.get(&j.version)?;
                (v.entry.event == event).then(|| (j.version, v.clone(), j.status == Status::Active))
            })
            .collect()
    }
}
