//! Embedded resources along declared foreign keys, in both directions:
//! `orders?select=*,order_items(*)` (one-to-many, an array) and
//! `order_items?select=*,orders(*)` (many-to-one, an object or null). Each
//! embedded table is read with its own select policy, so embedding never shows
//! a row the caller could not read directly.

use gatehouse_query::{Filter, OrderTerm, Paging, SelectItem};
use gatehouse_schema::{Column, Schema, Table};

use crate::RestError;

pub(crate) struct Link<'a> {
    /// The key the embedded rows get in the parent object.
    pub key: String,
    pub target: &'a Table,
    /// The parent's column the child refers to (one-to-many) or that refers to the
    /// child (many-to-one).
    pub parent_column: &'a Column,
    pub child_column: &'a Column,
    /// One-to-many: an array of children; else one object or null.
    pub many: bool,
    /// `!inner`: parents without a match are dropped.
    pub inner: bool,
    pub items: &'a [SelectItem],
    /// Filters on the embedded table (`items.quantity=gt.1`), the prefix removed.
    pub filters: Vec<Filter>,
    /// `items.order=…`: the order of each parent's children.
    pub order: Vec<OrderTerm>,
    /// `items.limit=…` and `items.offset=…`: per parent row, as in PostgREST.
    pub limit: Option<u64>,
    pub offset: u64,
    /// Paging for embeds nested deeper, the prefix removed.
    pub nested: Vec<(String, Paging)>,
    /// Many-to-many: `target` is the junction table, and each of its rows
    /// leads on to a row of this table through this column.
    pub through: Option<(&'a Table, &'a Column)>,
}

/// The key a junction row's far-side row gets while a many-to-many embed is read.
pub(crate) const FAR_SIDE: &str = "far_side";

fn no_relationship(parent: &Table, relation: &str) -> RestError {
    RestError::Relationship(format!(
        "Could not find a relationship between '{}' and '{relation}' in the schema cache",
        parent.name
    ))
}

/// The embeds of one select list, resolved against the schema.
pub(crate) fn links<'a>(
    schema: &'a Schema,
    parent: &'a Table,
    select: &'a [SelectItem],
) -> Result<Vec<Link<'a>>, RestError> {
    let mut links = Vec::new();
    for item in select {
        let SelectItem::Embed {
            relation,
            alias,
            hint,
            inner,
            items,
        } = item
        else {
            continue;
        };
        let key = || alias.clone().unwrap_or_else(|| relation.clone());
        // `country:country_id(name)`: the foreign-key column names the embed.
        if schema.table(relation).is_none()
            && let Some(column) = parent.column(relation)
            && let Some(fk) = &column.references
        {
            let target = schema
                .table(fk.table.as_str())
                .ok_or_else(|| no_relationship(parent, relation))?;
            let referenced = target
                .column(fk.column.as_str())
                .ok_or_else(|| no_relationship(parent, relation))?;
            links.push(Link::new(
                key(),
                *inner,
                items,
                target,
                (column, referenced, false),
            ));
            continue;
        }
        let target = schema
            .table(relation)
            .ok_or_else(|| no_relationship(parent, relation))?;
        let hinted = |column: &Column| hint.as_ref().is_none_or(|h| h == column.name.as_str());
        let mut candidates: Vec<(&Column, &Column, bool)> = Vec::new();
        // Many-to-one: the parent refers to the target.
        for column in parent.columns.iter().filter(|c| hinted(c)) {
            if let Some(fk) = column
                .references
                .as_ref()
                .filter(|fk| fk.table == target.name)
                && let Some(referenced) = target.column(fk.column.as_str())
            {
                candidates.push((column, referenced, false));
            }
        }
        // One-to-many: the target refers to the parent.
        for column in target.columns.iter().filter(|c| hinted(c)) {
            if let Some(fk) = column
                .references
                .as_ref()
                .filter(|fk| fk.table == parent.name)
                && let Some(referenced) = parent.column(fk.column.as_str())
                && !candidates
                    .iter()
                    .any(|(p, c, _)| p.name == referenced.name && c.name == column.name)
            {
                candidates.push((referenced, column, true));
            }
        }
        let (parent_column, child_column, many) = match candidates.as_slice() {
            [one] => *one,
            [] => {
                let (junction, to_parent, to_target, referenced) = junction(schema, parent, target)
                    .ok_or_else(|| no_relationship(parent, relation))?;
                let mut link = Link::new(
                    key(),
                    *inner,
                    items,
                    junction,
                    (referenced, to_parent, true),
                );
                link.through = Some((target, to_target));
                links.push(link);
                continue;
            }
            _ => {
                return Err(RestError::Relationship(format!(
                    "more than one relationship between '{}' and '{relation}': name the column, as {relation}!column(...)",
                    parent.name
                )));
            }
        };
        links.push(Link::new(
            key(),
            *inner,
            items,
            target,
            (parent_column, child_column, many),
        ));
    }
    Ok(links)
}

/// A junction between `parent` and `target`, as PostgREST finds one: a table
/// whose primary key holds a reference to each. Returns it, its column to the
/// parent, its column to the target, and the parent's referenced column.
fn junction<'a>(
    schema: &'a Schema,
    parent: &'a Table,
    target: &'a Table,
) -> Option<(&'a Table, &'a Column, &'a Column, &'a Column)> {
    let mut found = schema.tables.iter().filter_map(|junction| {
        let to = |table: &Table, skip: Option<&Column>| {
            junction.key_columns().into_iter().find(|column| {
                skip.is_none_or(|skip| skip.name != column.name)
                    && column
                        .references
                        .as_ref()
                        .is_some_and(|fk| fk.table == table.name)
            })
        };
        let to_parent = to(parent, None)?;
        let to_target = to(target, Some(to_parent))?;
        let fk = to_parent.references.as_ref()?;
        Some((
            junction,
            to_parent,
            to_target,
            parent.column(fk.column.as_str())?,
        ))
    });
    let one = found.next()?;
    // Two junctions would make the embed ambiguous: refuse rather than guess.
    found.next().is_none().then_some(one)
}

impl<'a> Link<'a> {
    /// An embed under `key` reaching `target` through (parent column, child
    /// column, one-to-many).
    fn new(
        key: String,
        inner: bool,
        items: &'a [SelectItem],
        target: &'a Table,
        (parent_column, child_column, many): (&'a Column, &'a Column, bool),
    ) -> Self {
        Link {
            key,
            target,
            parent_column,
            child_column,
            many,
            inner,
            items,
            filters: Vec::new(),
            order: Vec::new(),
            limit: None,
            offset: 0,
            nested: Vec::new(),
            through: None,
        }
    }
}

/// Moves filters written on an embed (`items.quantity=gt.1`) to that embed; the
/// rest stay with the parent.
pub(crate) fn distribute(
    filters: Vec<Filter>,
    links: &mut [Link<'_>],
) -> Result<Vec<Filter>, RestError> {
    let mut own = Vec::new();
    for filter in filters {
        let target = match &filter {
            Filter::Leaf { column, .. } => column.split_once('.').map(|(head, _)| head.to_owned()),
            _ => None,
        };
        match target {
            None => own.push(filter),
            Some(head) => {
                let link = links
                    .iter_mut()
                    .find(|link| link.key == head)
                    .ok_or_else(|| {
                        RestError::Relationship(format!("'{head}' is not embedded in this select"))
                    })?;
                if let Filter::Leaf {
                    column,
                    path,
                    negated,
                    op,
                    operand,
                } = filter
                {
                    let rest = column[head.len() + 1..].to_owned();
                    link.filters.push(Filter::Leaf {
                        column: rest,
                        path,
                        negated,
                        op,
                        operand,
                    });
                }
            }
        }
    }
    Ok(own)
}

/// Hands `path.order|limit|offset|or|and` modifiers to the embed they name.
pub(crate) fn page(
    embedded: Vec<(String, Paging)>,
    links: &mut [Link<'_>],
) -> Result<(), RestError> {
    for (path, paging) in embedded {
        let (head, rest) = path.split_once('.').unwrap_or((path.as_str(), ""));
        let link = links
            .iter_mut()
            .find(|link| link.key == head)
            .ok_or_else(|| {
                RestError::Relationship(format!("'{head}' is not embedded in this select"))
            })?;
        if !rest.is_empty() {
            link.nested.push((rest.to_owned(), paging));
            continue;
        }
        match paging {
            Paging::Order(terms) => link.order = terms,
            Paging::Limit(limit) => link.limit = Some(limit),
            Paging::Offset(offset) => link.offset = offset,
            Paging::Where(condition) => link.filters.push(condition),
        }
    }
    Ok(())
}
