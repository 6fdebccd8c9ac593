use super::*;

fn check(query: &str) -> Request {
    parse(&written_pairs(query)).unwrap_or_else(|e| panic!("{query}: {e}"))
}

fn leaf(column: &str, negated: bool, op: Op, operand: Operand) -> Filter {
    Filter::Leaf {
        column: column.into(),
        path: vec![],
        negated,
        op,
        operand,
    }
}

fn value(v: &str) -> Operand {
    Operand::Value(v.into())
}

#[test]
fn select_lists() {
    assert_eq!(check("").select, vec![]);
    assert_eq!(check("select=*").select, vec![SelectItem::Star]);
    assert_eq!(
        check("select=id,title:name").select,
        vec![
            SelectItem::Column {
                name: "id".into(),
                alias: None,
                path: vec![],
            },
            SelectItem::Column {
                name: "name".into(),
                alias: Some("title".into()),
                path: vec![],
            },
        ]
    );
    assert_eq!(
        check("select=id,owner:users!author_id(id,name),items!inner(*)").select,
        vec![
            SelectItem::Column {
                name: "id".into(),
                alias: None,
                path: vec![],
            },
            SelectItem::Embed {
                relation: "users".into(),
                alias: Some("owner".into()),
                hint: Some("author_id".into()),
                inner: false,
                items: vec![
                    SelectItem::Column {
                        name: "id".into(),
                        alias: None,
                        path: vec![],
                    },
                    SelectItem::Column {
                        name: "name".into(),
                        alias: None,
                        path: vec![],
                    },
                ],
            },
            SelectItem::Embed {
                relation: "items".into(),
                alias: None,
                hint: None,
                inner: true,
                items: vec![SelectItem::Star],
            },
        ]
    );
}

#[test]
fn filters() {
    let request = check(
        "age=gte.18&name=not.ilike.*ann*&id=in.(1,2,\"a,b\")&deleted=is.null&x=eq.\"quoted\"",
    );
    assert_eq!(
        request.filters,
        vec![
            leaf("age", false, Op::Gte, value("18")),
            leaf("name", true, Op::Ilike, value("%ann%")),
            leaf(
                "id",
                false,
                Op::In,
                Operand::List(vec!["1".into(), "2".into(), "a,b".into()])
            ),
            leaf("deleted", false, Op::Is, Operand::Null),
            leaf("x", false, Op::Eq, value("quoted")),
        ]
    );
    assert_eq!(
        check("v=eq.a.b").filters,
        vec![leaf("v", false, Op::Eq, value("a.b"))]
    );
}

#[test]
fn logical_groups_nest() {
    let request =
        check("or=(age.lt.18,and(age.gte.65,not.retired.is.true))&not.and=(a.eq.1,b.eq.2)");
    assert_eq!(
        request.filters,
        vec![
            Filter::Any {
                negated: false,
                items: vec![
                    leaf("age", false, Op::Lt, value("18")),
                    Filter::All {
                        negated: false,
                        items: vec![
                            leaf("age", false, Op::Gte, value("65")),
                            leaf("retired", true, Op::Is, Operand::True),
                        ],
                    },
                ],
            },
            Filter::All {
                negated: true,
                items: vec![
                    leaf("a", false, Op::Eq, value("1")),
                    leaf("b", false, Op::Eq, value("2"))
                ],
            },
        ]
    );
}

#[test]
fn order_limit_offset() {
    let request = check("order=created_at.desc.nullslast,id&limit=20&offset=40");
    assert_eq!(
        request.order,
        vec![
            OrderTerm {
                column: "created_at".into(),
                path: vec![],
                descending: true,
                nulls_first: Some(false)
            },
            OrderTerm {
                column: "id".into(),
                path: vec![],
                descending: false,
                nulls_first: None
            },
        ]
    );
    assert_eq!((request.limit, request.offset), (Some(20), Some(40)));
}

#[test]
fn malformed_input_is_an_error_naming_the_parameter() {
    for (query, param) in [
        ("age=between.1.2", "age"),
        ("age=5", "age"),
        ("limit=-1", "limit"),
        ("offset=x", "offset"),
        ("order=id.sideways", "order"),
        ("or=age.eq.1", "or"),
        ("or=(age.eq.1", "or"),
        ("or=(age)", "or"),
        ("select=id,(", "select"),
        ("select=a::text", "select"),
        ("select=a!inner", "select"),
        ("id=in.1,2", "id"),
        ("deleted=is.maybe", "deleted"),
        ("=eq.1", "filter"),
    ] {
        match parse(&written_pairs(query)) {
            Err(QueryError::Invalid { param: p, .. }) => assert_eq!(p, param, "{query}"),
            Ok(request) => panic!("{query} parsed: {request:?}"),
        }
    }
}

#[test]
fn depth_and_size_are_bounded() {
    let deep = format!("or=({}a.eq.1{})", "or(".repeat(100), ")".repeat(100));
    assert!(parse(&written_pairs(&deep)).is_err());
    let deep_select = format!("select={}id{}", "a(".repeat(100), ")".repeat(100));
    assert!(parse(&written_pairs(&deep_select)).is_err());
    let wide: Vec<(String, String)> = (0..300).map(|i| (format!("c{i}"), "eq.1".into())).collect();
    assert!(parse(&wide).is_err());
}

#[test]
fn embedded_paging() {
    let request =
        check("select=*,items(*)&items.order=qty.desc&items.limit=2&items.offset=1&a.b.limit=3");
    assert_eq!(
        request.embedded,
        vec![
            (
                "items".to_owned(),
                Paging::Order(vec![OrderTerm {
                    column: "qty".into(),
                    path: vec![],
                    descending: true,
                    nulls_first: None
                }])
            ),
            ("items".to_owned(), Paging::Limit(2)),
            ("items".to_owned(), Paging::Offset(1)),
            ("a.b".to_owned(), Paging::Limit(3)),
        ]
    );
    assert!(request.filters.is_empty());
}

#[test]
fn names_with_capitals_spaces_and_other_scripts() {
    let request = check(
        "select=createdAt,\"Order Items\"(\"unit price\",prénom)&\"my col\"=eq.1&createdAt=gt.2024&or=(\"my col\".eq.2,prénom.eq.x)&order=\"my col\".desc,createdAt",
    );
    assert_eq!(
        request.select,
        vec![
            SelectItem::Column {
                name: "createdAt".into(),
                alias: None,
                path: vec![],
            },
            SelectItem::Embed {
                relation: "Order Items".into(),
                alias: None,
                hint: None,
                inner: false,
                items: vec![
                    SelectItem::Column {
                        name: "unit price".into(),
                        alias: None,
                        path: vec![],
                    },
                    SelectItem::Column {
                        name: "prénom".into(),
                        alias: None,
                        path: vec![],
                    },
                ],
            },
        ]
    );
    assert_eq!(
        request.filters,
        vec![
            leaf("my col", false, Op::Eq, value("1")),
            leaf("createdAt", false, Op::Gt, value("2024")),
            Filter::Any {
                negated: false,
                items: vec![
                    leaf("my col", false, Op::Eq, value("2")),
                    leaf("prénom", false, Op::Eq, value("x")),
                ],
            },
        ]
    );
    let columns: Vec<&str> = request.order.iter().map(|t| t.column.as_str()).collect();
    assert_eq!(columns, ["my col", "createdAt"]);
}

#[test]
fn json_paths_in_select_filters_and_order() {
    let step = |key: JsonKey, as_text| JsonStep { key, as_text };
    let field = |name: &str| JsonKey::Field(name.into());
    let request = check(
        "select=address->city,zip:address->>postcode,data->tags->0,data->tags->-1&address->>postcode=eq.90210&data->\"a b\"->1=eq.2&order=data->>rank.desc",
    );
    let paths: Vec<(Option<String>, Vec<JsonStep>)> = request
        .select
        .iter()
        .map(|item| match item {
            SelectItem::Column { alias, path, .. } => (alias.clone(), path.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        paths,
        vec![
            (None, vec![step(field("city"), false)]),
            (Some("zip".into()), vec![step(field("postcode"), true)]),
            (
                None,
                vec![step(field("tags"), false), step(JsonKey::Index(0), false)]
            ),
            (
                None,
                vec![step(field("tags"), false), step(JsonKey::Index(-1), false)]
            ),
        ]
    );
    let Filter::Leaf { column, path, .. } = &request.filters[1] else {
        panic!()
    };
    assert_eq!(column, "data");
    assert_eq!(
        path,
        &vec![step(field("a b"), false), step(JsonKey::Index(1), false)]
    );
    assert_eq!(request.order[0].path, vec![step(field("rank"), true)]);
    for bad in [
        "select=id&select=name",
        "limit=1&limit=2",
        "select=data->>a->b",
        "select=data->",
        "data->>a->b=eq.1",
        "data->=eq.1",
        "order=data->>a->>b",
    ] {
        assert!(parse(&written_pairs(bad)).is_err(), "{bad}");
    }
}

#[test]
fn conditions_on_embedded_resources() {
    let request = check("items.or=(qty.gt.1,name.eq.tea)&a.b.not.and=(x.eq.1,y.is.null)");
    assert_eq!(
        request.embedded,
        vec![
            (
                "items".to_owned(),
                Paging::Where(Filter::Any {
                    negated: false,
                    items: vec![
                        leaf("qty", false, Op::Gt, value("1")),
                        leaf("name", false, Op::Eq, value("tea")),
                    ],
                })
            ),
            (
                "a.b".to_owned(),
                Paging::Where(Filter::All {
                    negated: true,
                    items: vec![
                        leaf("x", false, Op::Eq, value("1")),
                        leaf("y", false, Op::Is, Operand::Null),
                    ],
                })
            ),
        ]
    );
    assert!(request.filters.is_empty());
}

#[test]
fn search_filters_carry_their_language_and_query_as_written() {
    let search = |language: Option<&str>, query: &str| Operand::Search {
        language: language.map(str::to_owned),
        query: query.to_owned(),
    };
    let decoded = [(
        "body".to_owned(),
        "fts(english).fat & (cat | rat)".to_owned(),
    )];
    assert_eq!(
        parse(&decoded).unwrap().filters,
        vec![leaf(
            "body",
            false,
            Op::Fts,
            search(Some("english"), "fat & (cat | rat)")
        )]
    );
    assert_eq!(
        check("body=not.wfts.\"a b\" or c").filters,
        vec![leaf("body", true, Op::Wfts, search(None, "\"a b\" or c"))]
    );
    assert_eq!(
        check("or=(body.plfts.a,body.phfts(simple).b c)").filters[0],
        Filter::Any {
            negated: false,
            items: vec![
                leaf("body", false, Op::Plfts, search(None, "a")),
                leaf("body", false, Op::Phfts, search(Some("simple"), "b c")),
            ]
        }
    );
    for bad in ["body=fts().a", "body=fts(english.a", "body=eq(english).a"] {
        assert!(parse(&written_pairs(bad)).is_err(), "{bad}");
    }
}
