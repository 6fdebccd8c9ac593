//! The tables storage and realtime policies are written against, as Supabase
//! names them: `storage.objects` (kept by Gatehouse as `gatehouse_objects`,
//! created by its migrations) and `realtime.messages` (never stored: a
//! channel's topic and the kind of message, decided when a client joins,
//! sends or tracks). Policies name these columns.

use gatehouse_core::Identifier;

use crate::{Column, ColumnType, Table};

/// The columns a storage policy may read (not the table's key: policies
/// describe objects, and a new one's id is not known while it is checked):
/// where the object is (`bucket_id`,
/// `name`), who uploaded it (`owner`, the user id as text) and its metadata
/// (`size` in bytes, `content_type`).
pub fn storage_objects() -> Table {
    let column = |name: &str, ty: ColumnType| fixed_column(name, ty, name != "owner");
    Table {
        name: fixed_name("objects"),
        columns: vec![
            column("bucket_id", ColumnType::Text),
            column("name", ColumnType::Text),
            column("owner", ColumnType::Text),
            column("size", ColumnType::Bigint),
            column("content_type", ColumnType::Text),
        ],
        indexes: vec![],
    }
}

/// The columns a realtime policy may read: the channel's `topic` (its name,
/// as `realtime.topic()` gives it in Supabase) and the `extension` a message
/// belongs to (`broadcast` or `presence`).
pub fn realtime_messages() -> Table {
    Table {
        name: fixed_name("messages"),
        columns: vec![
            fixed_column("topic", ColumnType::Text, true),
            fixed_column("extension", ColumnType::Text, true),
        ],
        indexes: vec![],
    }
}

fn fixed_name(name: &str) -> Identifier {
    // These names are fixed and valid: the unit tests below prove it.
    Identifier::new(name).unwrap_or_else(|_| unreachable!("a fixed name"))
}

fn fixed_column(name: &str, ty: ColumnType, not_null: bool) -> Column {
    Column {
        name: fixed_name(name),
        ty,
        primary_key: false,
        not_null,
        default: None,
        server_set: None,
        references: None,
        checks: vec![],
        searchable: false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_objects_table_builds() {
        let table = super::storage_objects();
        assert_eq!(table.columns.len(), 5);
        assert_eq!(super::realtime_messages().columns.len(), 2);
    }
}
