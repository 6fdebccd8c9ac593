use super::*;

const SHOP: &str = r#"
[tables.teams]
columns.id = { type = "uuid", primary_key = true }
columns.name = { type = "text", not_null = true }

[tables.team_members]
columns.id = { type = "uuid", primary_key = true }
columns.team_id = { type = "uuid", not_null = true, references = "teams" }
columns.user_id = { type = "uuid", not_null = true }

[tables.projects]
columns.id = { type = "uuid", primary_key = true }
columns.team_id = { type = "uuid", not_null = true, references = "teams" }
columns.title = { type = "text", not_null = true }
columns.public = { type = "boolean", not_null = true, default = false }
columns.budget = { type = "integer" }

[[tables.projects.policies]]
name = "members see their team's projects"
for = "select"
to = "authenticated"
using = "public OR exists (select 1 from team_members m where m.team_id = projects.team_id and m.user_id = auth.uid())"

[[tables.projects.policies]]
name = "anyone sees public projects"
for = "select"
to = ["anon"]
using = "public = true"

[tables.projects.grants.anon]
select = ["id", "title"]
"#;

fn compile(text: &str) -> Result<Policies, String> {
    let declaration = gatehouse_schema::declaration::parse(text)?;
    let schema = Schema::from_declaration(&declaration).map_err(|e| e.to_string())?;
    Policies::compile(&declaration, &schema).map_err(|e| e.to_string())
}

fn with_policy(
    using: Option<&str>,
    with_check: Option<&str>,
    command: &str,
) -> Result<Policies, String> {
    let mut text = SHOP.to_owned();
    text.push_str(&format!(
        "\n[[tables.projects.policies]]\nname = \"p\"\nfor = \"{command}\"\nto = \"authenticated\"\n"
    ));
    if let Some(using) = using {
        text.push_str(&format!("using = {using:?}\n"));
    }
    if let Some(check) = with_check {
        text.push_str(&format!("with_check = {check:?}\n"));
    }
    compile(&text)
}

#[test]
fn deny_by_default() {
    let policies = compile(SHOP).unwrap();
    let projects = policies.for_table("projects").unwrap();
    assert!(
        projects
            .using(Command::Select, Role::Authenticated)
            .is_some()
    );
    assert!(projects.using(Command::Select, Role::Anon).is_some());
    for command in [Command::Insert, Command::Update, Command::Delete] {
        assert!(
            projects.using(command, Role::Authenticated).is_none(),
            "{command:?}"
        );
        assert!(projects.using(command, Role::Anon).is_none());
    }
    let teams = policies.for_table("teams").unwrap();
    assert!(
        teams.using(Command::Select, Role::Authenticated).is_none(),
        "no policy, no access"
    );
}

#[test]
fn exists_resolves_inner_and_outer_columns() {
    let policies = compile(SHOP).unwrap();
    let using = policies
        .for_table("projects")
        .unwrap()
        .using(Command::Select, Role::Authenticated)
        .map(std::borrow::Cow::into_owned)
        .unwrap();
    let Condition::Or(parts) = using else {
        panic!("{using:?}")
    };
    let Condition::Exists { table, condition } = &parts[1] else {
        panic!("{parts:?}")
    };
    assert_eq!(table.as_str(), "team_members");
    let Condition::And(inner) = condition.as_ref() else {
        panic!()
    };
    let Condition::Compare { left, right, .. } = &inner[0] else {
        panic!()
    };
    assert!(matches!(left, Term::Column { depth: 1, name, .. } if name.as_str() == "team_id"));
    assert!(matches!(right, Term::Column { depth: 0, name, .. } if name.as_str() == "team_id"));
    let Condition::Compare { right, .. } = &inner[1] else {
        panic!()
    };
    assert_eq!(right, &Term::Context(ContextValue::Uid));
}

#[test]
fn policy_columns_are_reported_for_indexing() {
    let columns = compile(SHOP).unwrap().filtered_columns();
    let names: Vec<String> = columns.iter().map(|(t, c)| format!("{t}.{c}")).collect();
    assert_eq!(
        names,
        [
            "projects.public",
            "projects.team_id",
            "team_members.team_id",
            "team_members.user_id"
        ]
    );
}

#[test]
fn grants_limit_columns_per_role() {
    let policies = compile(SHOP).unwrap();
    let projects = policies.for_table("projects").unwrap();
    let anon: Vec<&str> = projects
        .readable_columns(Role::Anon)
        .unwrap()
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(anon, ["id", "title"]);
    assert!(projects.readable_columns(Role::Authenticated).is_none());
}

#[test]
fn the_language_accepts_its_whole_subset() {
    for using in [
        "budget > 10 AND budget <= 1000",
        "NOT (budget < 0) OR budget IS NULL",
        "title IN ('a', 'b''s') AND budget NOT IN (1, 2)",
        "auth.role() = 'authenticated'",
        "auth.jwt() ->> 'tenant' = title",
        "budget IS NOT NULL and public = false",
        "projects.budget <> -5",
        "EXISTS (SELECT 1 FROM team_members WHERE user_id = auth.uid() AND team_members.team_id = projects.team_id)",
        "true",
    ] {
        with_policy(Some(using), None, "select").unwrap_or_else(|e| panic!("{using}: {e}"));
    }
}

#[test]
fn mistakes_are_named() {
    for (using, expected) in [
        ("usr_id = auth.uid()", "unknown column usr_id"),
        ("title = 5", "cannot compare"),
        ("public = 'yes'", "cannot compare"),
        ("budget = NULL", "IS NULL"),
        ("budget = auth.uid()", "cannot compare"),
        ("budget", "a condition is"),
        ("title = 'x' ;drop table projects", "unexpected"),
        ("lower(title) = 'x'", "unknown function lower()"),
        ("auth.email() = title", "unknown function auth.email()"),
        ("exists (select * from teams where true)", "unexpected '*'"),
        ("exists (select id from teams where true)", "SELECT 1"),
        (
            "exists (select 1 from nowhere where true)",
            "unknown table nowhere",
        ),
        ("title = 'unterminated", "unterminated string"),
        ("(title = 'a'", "expected ')'"),
        ("title = ", "found the end"),
        ("x.title = 'a'", "unknown column x.title"),
    ] {
        let error = with_policy(Some(using), None, "select").unwrap_err();
        assert!(error.contains(expected), "{using}: {error}");
        assert!(
            error.starts_with("table projects, policy \"p\": using:"),
            "{error}"
        );
    }
}

#[test]
fn commands_take_the_clauses_postgres_allows() {
    assert!(with_policy(None, Some("budget > 0"), "insert").is_ok());
    assert!(
        with_policy(Some("budget > 0"), None, "insert")
            .unwrap_err()
            .contains("with_check only")
    );
    assert!(
        with_policy(Some("true"), Some("true"), "select")
            .unwrap_err()
            .contains("using only")
    );
    assert!(
        with_policy(None, None, "delete")
            .unwrap_err()
            .contains("need using")
    );
    let update = with_policy(Some("budget > 0"), None, "update").unwrap();
    let projects = update.for_table("projects").unwrap();
    assert_eq!(
        projects
            .with_check(Command::Update, Role::Authenticated)
            .map(std::borrow::Cow::into_owned),
        projects
            .using(Command::Update, Role::Authenticated)
            .map(std::borrow::Cow::into_owned),
        "with check defaults to using"
    );
    assert!(
        with_policy(Some("true"), None, "truncate")
            .unwrap_err()
            .contains("unknown command")
    );
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    let deep = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(
        with_policy(Some(&deep), None, "select")
            .unwrap_err()
            .contains("too deeply")
    );
    let nots = format!("{}true", "not ".repeat(10_000));
    assert!(
        with_policy(Some(&nots), None, "select")
            .unwrap_err()
            .contains("too deeply")
    );
}

#[test]
fn an_all_policy_with_only_using_checks_new_rows_with_it() {
    let policies = with_policy(Some("budget > 0"), None, "all").unwrap();
    let projects = policies.for_table("projects").unwrap();
    let using = projects
        .using(Command::Select, Role::Authenticated)
        .map(std::borrow::Cow::into_owned);
    assert!(using.is_some());
    let insert = projects
        .with_check(Command::Insert, Role::Authenticated)
        .map(std::borrow::Cow::into_owned)
        .unwrap();
    assert_ne!(
        insert,
        Condition::Const(true),
        "an insert must not be let through unchecked"
    );
    let Condition::Compare { left, .. } = insert else {
        panic!("{insert:?}")
    };
    assert!(matches!(left, Term::Column { name, .. } if name.as_str() == "budget"));
}

fn storage_policy(using: &str) -> Result<TablePolicies, String> {
    let declaration = gatehouse_schema::declaration::parse(SHOP)?;
    let schema = Schema::from_declaration(&declaration).map_err(|e| e.to_string())?;
    let policy = PolicyDecl {
        name: "p".into(),
        commands: gatehouse_schema::declaration::OneOrMany::One("select".into()),
        roles: gatehouse_schema::declaration::OneOrMany::One("authenticated".into()),
        using: Some(using.into()),
        with_check: None,
    };
    Policies::compile_objects(&[policy], &schema).map_err(|e| e.to_string())
}

#[test]
fn storage_policies_read_path_parts_as_supabase_writes_them() {
    let own_folder = |text: &str| {
        let policies = storage_policy(text).expect(text);
        let Some(Condition::And(parts)) = policies
            .using(Command::Select, Role::Authenticated)
            .map(std::borrow::Cow::into_owned)
        else {
            panic!("{text}: not a conjunction");
        };
        parts[1].clone()
    };
    let expected = Condition::Compare {
        left: Term::Path {
            part: PathPart::Folder(1),
            column: Box::new(Term::Column {
                depth: 0,
                name: gatehouse_core::Identifier::new("name").expect("name"),
                ty: gatehouse_schema::ColumnType::Text,
            }),
        },
        op: CmpOp::Eq,
        right: Term::Context(ContextValue::Uid),
    };
    for text in [
        "bucket_id = 'avatars' and (storage.foldername(name))[1] = auth.uid()",
        "bucket_id = 'avatars' and storage.foldername(name)[1] = auth.uid()",
        "bucket_id = 'avatars' and ( storage . foldername ( name ) ) [ 1 ] = auth.uid()",
    ] {
        assert_eq!(own_folder(text), expected, "{text}");
    }
    for good in [
        "storage.extension(name) in ('png', 'jpg')",
        "storage.filename(name) <> 'secret.txt' and size < 1000000 and content_type = 'image/png'",
        "owner = auth.uid()",
        "exists (select 1 from team_members m where m.user_id = auth.uid() and storage.foldername(name)[2] = 'team')",
        "(storage.extension(name) = 'png')",
        "(storage.filename(name) in ('a', 'b')) and (size < 10)",
        "((storage.foldername(name))[1] = auth.uid() or owner = auth.uid())",
    ] {
        assert!(
            storage_policy(good).is_ok(),
            "{good}: {:?}",
            storage_policy(good)
        );
    }
    for (bad, why) in [
        ("storage.foldername(name) = 'a'", "is a list"),
        ("storage.foldername(name)[0] = 'a'", "from 1 to 64"),
        ("storage.foldername(name)[65] = 'a'", "from 1 to 64"),
        ("storage.filename(size) = 'a'", "text column"),
        ("storage.filename('a') = 'a'", "take a column"),
        (
            "storage.basename(name) = 'a'",
            "unknown function storage.basename",
        ),
        ("storage.filename(name)[1] = 'a'", "only storage.foldername"),
        ("secret = 'x'", "unknown column secret"),
        ("metadata = 'x'", "unknown column metadata"),
        ("id = 'x'", "unknown column id"),
    ] {
        let error = storage_policy(bad).expect_err(bad);
        assert!(error.contains(why), "{bad}: {error}");
    }
}

#[test]
fn deciding_unknown_terms_respects_negation() {
    let policies = storage_policy(
        "size < 100 and not (content_type = 'text/html') and auth.jwt() ->> 'tier' is null",
    )
    .expect("compiles");
    let condition = policies
        .using(Command::Select, Role::Authenticated)
        .map(std::borrow::Cow::into_owned)
        .expect("a policy");
    let size_or_type = |term: &Term| match term {
        Term::Column { name, .. } => matches!(name.as_str(), "size" | "content_type"),
        _ => false,
    };
    let claims = |term: &Term| matches!(term, Term::Context(ContextValue::Claim(_)));
    let and = |condition: Condition| match condition {
        Condition::And(items) => items,
        other => panic!("not a conjunction: {other:?}"),
    };
    // A precheck assumes the best of what it cannot see: under NOT, the opposite.
    let permissive = condition.deciding(&size_or_type, true);
    let outer = and(permissive);
    assert_eq!(
        and(outer[0].clone()),
        [
            Condition::Const(true),
            Condition::Not(Box::new(Condition::Const(false)))
        ]
    );
    // Claims a signed URL cannot carry count against the condition, even IS NULL.
    let strict = condition.deciding(&claims, false);
    assert_eq!(and(strict)[1], Condition::Const(false));
}

#[test]
fn binding_a_caller_leaves_only_what_reads_rows() {
    let policies = storage_policy(
        "(auth.role() = 'authenticated' and owner = auth.uid()) \
         or (auth.uid() is null and bucket_id = 'public') \
         or auth.jwt() ->> 'tier' = 'gold'",
    )
    .expect("compiles");
    let condition = policies
        .using(Command::Select, Role::Authenticated)
        .map(std::borrow::Cow::into_owned)
        .expect("a policy");
    let owner = || Term::Column {
        depth: 0,
        name: gatehouse_core::Identifier::new("owner").unwrap(),
        ty: gatehouse_schema::ColumnType::Text,
    };
    let user = |value: &ContextValue| match value {
        ContextValue::Uid => Some("u1".to_owned()),
        ContextValue::Role => Some("authenticated".to_owned()),
        ContextValue::Claim(_) => None,
    };
    // The role test and the uid test are settled; the claim stays, as NULL.
    assert_eq!(
        condition.binding(&user),
        Condition::Or(vec![
            Condition::Compare {
                left: owner(),
                op: CmpOp::Eq,
                right: Term::Bound(Some("u1".into())),
            },
            Condition::Compare {
                left: Term::Bound(None),
                op: CmpOp::Eq,
                right: Term::Value(gatehouse_schema::Literal::Text("gold".into())),
            },
        ])
    );
    // For a caller with another role and no id only the NULL claim test is left.
    let stranger = |value: &ContextValue| match value {
        ContextValue::Role => Some("anon".to_owned()),
        _ => None,
    };
    let bound = condition.binding(&stranger);
    let Condition::Or(items) = bound else {
        panic!("not a disjunction: {bound:?}")
    };
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(matches!(items[1], Condition::Compare { .. }));
    // A claim that settles it settles the whole condition.
    let gold = |value: &ContextValue| match value {
        ContextValue::Claim(_) => Some("gold".to_owned()),
        _ => None,
    };
    assert_eq!(condition.binding(&gold), Condition::Const(true));
    // NOT over a settled part flips it; over an open part it stays.
    let negated = Condition::Not(Box::new(condition));
    assert_eq!(negated.binding(&gold), Condition::Const(false));
}

#[test]
fn quoted_names_reach_columns_with_capitals_and_spaces() {
    let text = r#"
[tables."Team Members"]
columns.id = { type = "uuid", primary_key = true }
columns.userId = { type = "uuid", not_null = true }
columns."team name" = { type = "text", not_null = true }

[tables.Boards]
columns.id = { type = "uuid", primary_key = true }
columns."team name" = { type = "text", not_null = true }

[[tables.Boards.policies]]
name = "members see their team's boards"
for = "select"
to = "authenticated"
using = "exists (select 1 from \"Team Members\" \"m\" where \"m\".\"team name\" = \"Boards\".\"team name\" and m.\"userId\" = auth.uid())"
"#;
    let policies = compile(text).unwrap();
    let using = policies
        .for_table("Boards")
        .unwrap()
        .using(Command::Select, Role::Authenticated)
        .map(std::borrow::Cow::into_owned)
        .unwrap();
    let Condition::Exists { table, .. } = &using else {
        panic!("{using:?}")
    };
    assert_eq!(table.as_str(), "Team Members");
    // Bare names fold to lowercase, as in SQL, so they miss a column with capitals.
    let folded = text.replace(r#"m.\"userId\""#, "m.userId");
    let error = compile(&folded).unwrap_err();
    assert!(error.contains("userid"), "{error}");
    let unterminated = text.replace(r#"m.\"userId\" = auth"#, r#"m.\"userId = auth"#);
    assert!(compile(&unterminated).is_err());
}
