//! Backups of a service and restores from them (`weft ctl backup | backups | restore`, and
//! the cluster manager's schedules): the `weft-backup` crate, re-exported. See its
//! modules, and `docs/backup-format.md` for the format.

pub use weft_backup::*;
