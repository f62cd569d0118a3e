//! A partition's chain applied to its full state: each changes file, oldest first, replayed
//! at the versions its records were written at, then the tables and indexes as the last
//! file recorded them (`docs/backup-format.md`).
//!
//! The node that receives a restored state runs it (`Store.StageRestore`): the client
//! sends the full backup's file as it is and each changes file after it, and the node,
//! which decodes the full state anyway, replays the changes onto it. The client never
//! decodes the full state (on 1 GiB, decoding and re-encoding it was a third of a
//! restore). Never touches a location, the network or raft.

use std::collections::BTreeMap;

use weft_proto::v1 as pb;
use weft_store::Store;

use crate::BackupError;
use crate::format;

/// A full state with the changes after it applied so far.
#[derive(Debug)]
pub struct Chain {
    store: Store,
    /// The log index the state holds everything up to.
    through: u64,
    /// The schema the newest changes file recorded.
    schema: Option<pb::BackupSchema>,
}

impl Chain {
    /// Starts from a full backup's state, which holds everything up to log index `through`.
    pub fn new(store: Store, through: u64) -> Chain {
        Chain { store, through, schema: None }
    }

    /// The log index the state holds everything up to, with the changes applied so far.
    pub fn through(&self) -> u64 {
        self.through
    }

    /// Applies the changes file `data` (named `name` in errors), which must follow on from
    /// what is applied so far and, as its sender says, reach `through`. Refused before the
    /// state is touched when it does not decode, link or keep its versions in range; a
    /// change the engine refuses part way leaves the state part applied, and the chain is
    /// then to be dropped.
    pub fn apply(&mut self, data: &[u8], name: &str, through: u64) -> Result<(), BackupError> {
        let changes = format::decode_changes(data, name)?;
        let h = &changes.header;
        if h.after != self.through || h.through != through || h.through < h.after {
            return Err(BackupError::Corrupt(format!(
                "{name}: covers log indexes {}..={}, expected {}..={through}",
                h.after + 1,
                h.through,
                self.through + 1,
            )));
        }
        // Each change was committed at its version, a log index inside the file's range:
        // one outside it is damage, and would start the group at a nonsense index.
        if let Some(c) = changes.changes.iter().find(|c| c.version <= h.after || c.version > h.through) {
            return Err(BackupError::Corrupt(format!(
                "{name}: a change at version {}, outside its log indexes {}..={}",
                c.version,
                h.after + 1,
                h.through
            )));
        }
        apply(&mut self.store, changes.changes).map_err(|why| BackupError::Corrupt(format!("{name}: {why}")))?;
        self.through = h.through;
        self.schema = Some(changes.schema);
        Ok(())
    }

    /// The state, its tables and indexes made those of the newest changes file, and the
    /// log index its group starts at: the chain's last, or the state's highest record
    /// version if that is higher.
    pub fn finish(self) -> Result<(Store, u64), BackupError> {
        let Chain { mut store, through, schema } = self;
        if let Some(schema) = schema {
            reconcile_schema(&mut store, &schema).map_err(BackupError::Corrupt)?;
        }
        let index = through.max(store.version());
        Ok((store, index))
    }
}

/// Applies committed changes, in order, to `store`.
fn apply(store: &mut Store, changes: Vec<pb::Change>) -> Result<(), String> {
    for c in changes {
        let op = match c.kind {
            Some(pb::change::Kind::Put(r)) => pb::op::Kind::Put(pb::Put {
                table: c.table,
                key: r.key,
                value: r.value,
                attrs: r.attrs,
                condition: None,
            }),
            Some(pb::change::Kind::Delete(key)) => {
                pb::op::Kind::Delete(pb::Delete { table: c.table, key, condition: None })
            }
            Some(pb::change::Kind::TableCreated(_)) => {
                store.create_table(&c.table).map_err(|e| format!("creating table {}: {e}", c.table))?;
                continue;
            }
            Some(pb::change::Kind::TableDropped(_)) => {
                store.drop_table(&c.table).map_err(|e| format!("dropping table {}: {e}", c.table))?;
                continue;
            }
            None => return Err(format!("a change of version {} says nothing", c.version)),
        };
        let op = weft_replica::op_from_pb(pb::Op { kind: Some(op) }).map_err(|e| e.to_string())?;
        // At its own version: the restored group starts at the chain's last log index, and
        // its next write must version above every record.
        store.apply_at(&[op], c.version).map_err(|e| format!("version {}: {e}", c.version))?;
    }
    Ok(())
}

/// Makes `store`'s tables and indexes those of `schema`.
fn reconcile_schema(store: &mut Store, schema: &pb::BackupSchema) -> Result<(), String> {
    let want: BTreeMap<&str, &pb::BackupTable> = schema.tables.iter().map(|t| (t.name.as_str(), t)).collect();
    let have: Vec<String> = store.table_names().map(String::from).collect();
    for t in have.iter().filter(|t| !want.contains_key(t.as_str())) {
        store.drop_table(t).map_err(|e| e.to_string())?;
    }
    for (name, t) in want {
        if !have.iter().any(|h| h == name) {
            store.create_table(name).map_err(|e| e.to_string())?;
        }
        let snap = store.snapshot();
        let existing: Vec<weft_store::IndexDef> =
            snap.table(name).map(|t| t.index_defs().cloned().collect()).unwrap_or_default();
        for d in &existing {
            if !t.indexes.iter().any(|i| i.name == d.name) {
                store.drop_index(name, &d.name).map_err(|e| e.to_string())?;
            }
        }
        for i in &t.indexes {
            let def = weft_replica::index_from_pb(Some(i.clone())).map_err(|e| e.to_string())?;
            match existing.iter().find(|d| d.name == i.name) {
                Some(d) if *d == def => {}
                Some(_) => {
                    store.drop_index(name, &i.name).map_err(|e| e.to_string())?;
                    store.create_index(name, def).map_err(|e| e.to_string())?;
                }
                None => store.create_index(name, def).map_err(|e| e.to_string())?,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_replay_and_the_schema_reconciles() {
        let mut s = Store::new(Default::default());
        s.create_table("t").expect("table");
        let put = |k: &str| pb::Change {
            version: 1,
            table: "t".into(),
            kind: Some(pb::change::Kind::Put(pb::Record {
                key: k.as_bytes().to_vec().into(),
                value: b"v".to_vec().into(),
                attrs: vec![pb::Attr {
                    name: "n".into(),
                    value: Some(pb::Scalar { kind: Some(pb::scalar::Kind::I64(3)) }),
                }],
                version: 1,
            })),
        };
        let changes = vec![
            put("a"),
            put("b"),
            pb::Change { version: 2, table: "t".into(), kind: Some(pb::change::Kind::Delete(b"a".to_vec().into())) },
            pb::Change { version: 3, table: "u".into(), kind: Some(pb::change::Kind::TableCreated(true)) },
        ];
        apply(&mut s, changes).expect("applies");
        let schema = pb::BackupSchema {
            tables: vec![pb::BackupTable {
                name: "t".into(),
                indexes: vec![pb::IndexDef {
                    name: "by_n".into(),
                    attr: "n".into(),
                    kind: pb::IndexKind::Ordered as i32,
                }],
            }],
        };
        reconcile_schema(&mut s, &schema).expect("reconciles");
        assert_eq!(s.table_names().collect::<Vec<_>>(), ["t"], "u dropped: the schema does not have it");
        assert_eq!(s.count("t").expect("count"), 1);
        assert!(s.get("t", b"b").expect("get").is_some());
        let snap = s.snapshot();
        assert_eq!(snap.table("t").expect("t").index_defs().count(), 1);
    }
    /// A chain applies its files only in order, link by link: a file that does not follow
    /// on from what is applied, does not reach where its sender says, or holds a change
    /// versioned outside its range is refused before it touches the state; the group
    /// starts at the last link's index.
    #[test]
    fn changes_files_apply_link_by_link() {
        let mut s = Store::new(Default::default());
        s.create_table("t").expect("table");
        // A changes file of one put, at `version`.
        let file_at = |after: u64, through: u64, key: &str, version: u64| {
            let header = pb::BackupChangesHeader { format: format::FORMAT, partition: 7, after, through };
            let put = pb::Change {
                version,
                table: "t".into(),
                kind: Some(pb::change::Kind::Put(pb::Record {
                    key: key.as_bytes().to_vec().into(),
                    value: b"v".to_vec().into(),
                    attrs: vec![],
                    version,
                })),
            };
            let schema = pb::BackupSchema { tables: vec![pb::BackupTable { name: "t".into(), indexes: vec![] }] };
            format::encode_changes(header, &[put], schema)
        };
        let file = |after: u64, through: u64, key: &str| file_at(after, through, key, through);
        let mut chain = Chain::new(s, 10);
        let gap = chain.apply(&file(12, 20, "x"), "gap", 20).expect_err("a gap is refused");
        assert!(gap.to_string().contains("covers log indexes 13..=20, expected 11..=20"), "{gap}");
        let short = chain.apply(&file(10, 15, "x"), "short", 20).expect_err("a file short of its link");
        assert!(short.to_string().contains("short"), "{short}");
        let outside = file_at(10, 20, "x", 21);
        let bad = chain.apply(&outside, "outside", 20).expect_err("a change outside the file's range");
        assert!(bad.to_string().contains("a change at version 21, outside its log indexes 11..=20"), "{bad}");
        assert_eq!(chain.through(), 10, "refused files leave the chain where it was");
        chain.apply(&file(10, 20, "a"), "one", 20).expect("follows on");
        chain.apply(&file(20, 30, "b"), "two", 30).expect("follows on");
        let (store, index) = chain.finish().expect("finishes");
        assert_eq!(index, 30);
        assert_eq!(store.count("t").expect("count"), 2, "only the applied files' records");
        let b = store.get("t", b"b").expect("get").expect("b");
        assert_eq!(b.version(), 30, "at the version it was written at");
    }
}
