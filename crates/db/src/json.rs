//! JSON containment (`@>`), as PostgreSQL defines it for jsonb, so that the `cs`
//! and `cd` filters mean the same on SQLite, where it is registered as the SQL
//! function `gatehouse_json_contains(container, contained)`.

use serde_json::Value;

/// Whether `container` contains `contained`: objects by key (recursively),
/// arrays by element (each wanted element contained by some element, order and
/// duplicates ignored), scalars by equality; a top-level array also contains a
/// scalar it holds.
pub fn contains(container: &Value, contained: &Value) -> bool {
    contains_at(container, contained, true)
}

fn contains_at(container: &Value, contained: &Value, top: bool) -> bool {
    match (container, contained) {
        (Value::Object(have), Value::Object(want)) => want.iter().all(|(key, value)| {
            have.get(key)
                .is_some_and(|inner| contains_at(inner, value, false))
        }),
        (Value::Array(have), Value::Array(want)) => want.iter().all(|value| {
            have.iter().any(|inner| match value {
                Value::Array(_) | Value::Object(_) => contains_at(inner, value, false),
                scalar => inner == scalar,
            })
        }),
        (Value::Array(have), scalar) if top && !scalar.is_object() => have.contains(scalar),
        (have, want) => have == want,
    }
}

/// Whether two JSON arrays have an element in common (PostgreSQL's `&&`).
pub fn overlaps(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Array(a), Value::Array(b)) => {
            a.iter().any(|item| !item.is_null() && b.contains(item))
        }
        _ => false,
    }
}

/// A JSON value as PostgreSQL's `->>` gives it: a string's text, `None` for
/// null, any other value's JSON text. Registered on SQLite as
/// `gatehouse_json_text(json)` over what `->` returns.
pub fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{contains, overlaps};
    use serde_json::json;

    #[test]
    fn arrays_overlap_on_a_shared_element() {
        assert!(overlaps(&json!(["a", "b"]), &json!(["c", "b"])));
        assert!(!overlaps(&json!(["a"]), &json!(["b"])));
        assert!(
            !overlaps(&json!([null]), &json!([null])),
            "null is no element in common"
        );
        assert!(!overlaps(&json!([]), &json!([])));
        assert!(!overlaps(&json!({"a": 1}), &json!({"a": 1})), "arrays only");
    }

    #[test]
    fn postgres_containment_rules() {
        for (a, b, expected) in [
            (
                json!({"a": 1, "b": {"c": 2, "d": 3}}),
                json!({"b": {"c": 2}}),
                true,
            ),
            (json!({"a": 1}), json!({"a": 2}), false),
            (json!([1, 2, 3]), json!([3, 1]), true),
            (json!([1, 2, 3]), json!([1, 1]), true),
            (json!([1, 2]), json!([4]), false),
            (json!([1, [2, 3]]), json!([[3]]), true),
            (json!(["a", "b"]), json!("a"), true),
            (json!({"tags": ["x", "y"]}), json!({"tags": ["y"]}), true),
            (json!("a"), json!("a"), true),
            (json!({"a": 1}), json!([]), false),
            (json!([]), json!([]), true),
        ] {
            assert_eq!(contains(&a, &b), expected, "{a} @> {b}");
        }
    }
}
