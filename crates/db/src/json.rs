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

/// Whether two JSON values are equal as PostgreSQL's jsonb compares them:
/// object members in any order, numbers by value (`1` equals `1.0`).
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(key, v)| y.get(key).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Whether array `have` contains every element of `want`, as PostgreSQL's
/// arrays do (`@>`): NULL equals nothing, so a NULL wanted is never contained.
pub fn array_contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Array(have), Value::Array(want)) => want
            .iter()
            .all(|item| !item.is_null() && have.contains(item)),
        _ => false,
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
    use super::{array_contains, contains, overlaps, same};
    use serde_json::json;

    #[test]
    fn jsonb_equality_ignores_member_order_and_number_form() {
        assert!(same(
            &json!({"a": 1, "b": [1.0, "x"]}),
            &json!({"b": [1, "x"], "a": 1.0})
        ));
        assert!(
            !same(&json!([1, 2]), &json!([2, 1])),
            "arrays keep their order"
        );
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": null})));
        assert!(!same(&json!("1"), &json!(1)));
    }

    #[test]
    fn array_containment_never_matches_null() {
        assert!(array_contains(&json!(["a", null, "b"]), &json!(["b", "a"])));
        assert!(!array_contains(&json!([null]), &json!([null])));
        assert!(array_contains(&json!(["a"]), &json!([])));
        assert!(!array_contains(&json!(["a"]), &json!(["a", "c"])));
    }

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
