//! The table storage policies are written against: Supabase's `storage.objects`
//! as Gatehouse keeps it (`gatehouse_objects`). Policies name these columns;
//! the table itself is Gatehouse's own, created by its migrations.

use gatehouse_core::Identifier;

use crate::{Column, ColumnType, Table};

/// The columns a storage policy may read (not the table's key: policies
/// describe objects, and a new one's id is not known while it is checked):
/// where the object is (`bucket_id`,
/// `name`), who uploaded it (`owner`, the user id as text) and its metadata
/// (`size` in bytes, `content_type`).
pub fn storage_objects() -> Table {
    let column = |name: &str, ty: ColumnType| Column {
        // These names are fixed and valid: the unit test below proves it.
        name: Identifier::new(name).unwrap_or_else(|_| unreachable!("a fixed column name")),
        ty,
        primary_key: false,
        not_null: name != "owner",
        default: None,
        server_set: None,
        references: None,
        checks: vec![],
        searchable: false,
    };
    Table {
        name: Identifier::new("objects").unwrap_or_else(|_| unreachable!("a fixed table name")),
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_objects_table_builds() {
        let table = super::storage_objects();
        assert_eq!(table.columns.len(), 5);
    }
}
