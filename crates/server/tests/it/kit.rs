//! The test kit: real servers on ephemeral ports, in process or as the real
//! binary, and a client that talks HTTP to them.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};

use axum::Router;
use gatehouse_db::testing::TestDatabase;
use gatehouse_server::AppState;
use gatehouse_server::config::{Config, Overrides};
use gatehouse_server::server::{self, Running};

pub struct TestServer {
    pub url: String,
    pub publishable: String,
    pub secret: String,
    pub running: Running,
    pub client: reqwest::Client,
    /// Its data folder (removed when the server is dropped).
    pub data_dir: tempfile::TempDir,
}

pub fn no_env(_: &str) -> Option<String> {
    None
}

/// A development config on 127.0.0.1:0 with a fresh data folder. Rate limits are
/// off: every test talks from 127.0.0.1, and `limits.rs` turns them on to test them.
pub fn config(data_dir: &Path) -> Config {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.to_path_buf()),
        ..Overrides::default()
    };
    let mut config = Config::load(&overrides, &no_env).unwrap();
    config.rate_limits = None;
    config
}

/// A development config read from a `gatehouse.toml` holding `text`.
pub fn config_from(data_dir: &Path, text: &str) -> Config {
    let file = data_dir.join("gatehouse.toml");
    std::fs::write(&file, text).unwrap();
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data_dir.to_path_buf()),
        config_file: Some(file),
        ..Overrides::default()
    };
    Config::load(&overrides, &no_env).unwrap()
}

/// A server whose gatehouse.toml is `text`, on the given database.
pub async fn start_declared(text: &str, database: &TestDatabase) -> TestServer {
    start_storage(text, database, None).await
}

pub async fn start() -> TestServer {
    start_with(|_| {}, Router::new()).await
}

pub async fn start_with(
    configure: impl FnOnce(&mut Config),
    custom: Router<AppState>,
) -> TestServer {
    start_on(None, configure, custom).await
}

/// Starts on the given database instead of the data folder's SQLite file.
pub async fn start_on(
    database: Option<&TestDatabase>,
    configure: impl FnOnce(&mut Config),
    custom: Router<AppState>,
) -> TestServer {
    start_sharing(database, None, configure, custom).await
}

/// Starts on the given database and, when given, shares state through Redis.
pub async fn start_sharing(
    database: Option<&TestDatabase>,
    redis: Option<&str>,
    configure: impl FnOnce(&mut Config),
    custom: Router<AppState>,
) -> TestServer {
    start_full(database, redis, None, configure, custom, &[]).await
}

/// The S3-compatible server object tests also run against: `GATEHOUSE_TEST_S3_URL`
/// (`.ci/run` starts moto there; in CI its absence is a failure, not a skip).
pub fn s3_endpoint() -> Option<String> {
    let endpoint = std::env::var("GATEHOUSE_TEST_S3_URL").ok();
    if endpoint.is_none() && std::env::var("CI").is_ok_and(|ci| ci == "true") {
        panic!("CI=true but GATEHOUSE_TEST_S3_URL is not set");
    }
    endpoint
}

/// A server whose gatehouse.toml is `text`, on the given database, keeping
/// object bytes in a fresh bucket of the S3-compatible server at `s3` (moto,
/// which takes an unsigned bucket creation) or else in its data folder.
pub async fn start_storage(text: &str, database: &TestDatabase, s3: Option<&str>) -> TestServer {
    let text = text.to_owned();
    start_full(
        Some(database),
        None,
        s3,
        move |config| {
            let declared = config_from(&config.data_dir, &text);
            config.schema = declared.schema;
            config.policies = declared.policies;
            config.storage = declared.storage;
        },
        Router::new(),
        &[],
    )
    .await
}

/// Takes the tables, policies, functions and triggers `declared` holds.
fn adopt_logic(config: &mut Config, declared: Config) {
    config.schema = declared.schema;
    config.policies = declared.policies;
    config.functions = declared.functions;
    config.functions_dir = declared.functions_dir;
    config.triggers = declared.triggers;
    config.jobs = declared.jobs;
    config.cron = declared.cron;
    config.hooks = declared.hooks;
    config.webhooks = declared.webhooks;
}

/// The example shop (examples/shop: tables, policies, storage policies and
/// functions) on `database`.
pub async fn start_shop(database: &TestDatabase) -> TestServer {
    start_full(
        Some(database),
        None,
        None,
        |config| {
            let overrides = Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                data_dir: Some(config.data_dir.clone()),
                config_file: Some(
                    concat!(
                        env!("CARGO_MANIFEST_DIR"),
                        "/../../examples/shop/gatehouse.toml"
                    )
                    .into(),
                ),
                ..Overrides::default()
            };
            let shop = Config::load(&overrides, &no_env).unwrap();
            config.storage = shop.storage.clone();
            adopt_logic(config, shop);
        },
        Router::new(),
        &[],
    )
    .await
}

/// A server whose gatehouse.toml is `text`, with `modules` (file, source)
/// in the `functions/` folder beside it.
pub async fn start_functions(
    text: &str,
    modules: &[(&str, &str)],
    database: &TestDatabase,
) -> TestServer {
    start_functions_with(text, modules, &[], database).await
}

/// The same, with `env` as its environment (the secrets it reads).
pub async fn start_functions_with(
    text: &str,
    modules: &[(&str, &str)],
    env: &[(&str, &str)],
    database: &TestDatabase,
) -> TestServer {
    let text = text.to_owned();
    let modules: Vec<(String, String)> = modules
        .iter()
        .map(|(file, source)| ((*file).to_owned(), (*source).to_owned()))
        .collect();
    start_full(
        Some(database),
        None,
        None,
        move |config| {
            let folder = config.data_dir.join("functions");
            std::fs::create_dir_all(&folder).unwrap();
            for (file, source) in &modules {
                std::fs::write(folder.join(file), source).unwrap();
            }
            adopt_logic(config, config_from(&config.data_dir, &text));
        },
        Router::new(),
        env,
    )
    .await
}

async fn start_full(
    database: Option<&TestDatabase>,
    redis: Option<&str>,
    s3: Option<&str>,
    configure: impl FnOnce(&mut Config),
    custom: Router<AppState>,
    env: &[(&str, &str)],
) -> TestServer {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = config(data_dir.path());
    configure(&mut config);
    let from_env = |name: &str| {
        env.iter()
            .find(|(variable, _)| *variable == name)
            .map(|(_, value)| (*value).to_owned())
    };
    let mut secrets = gatehouse_server::secrets::resolve(&config, &from_env).unwrap();
    if let Some(database) = database {
        secrets.database = database.location();
    }
    secrets.redis = redis.map(|url| url.to_owned().into());
    if let Some(endpoint) = s3 {
        let bucket = format!("gatehouse-test-{}", uuid::Uuid::new_v4().simple());
        let created = reqwest::Client::new()
            .put(format!("{endpoint}/{bucket}"))
            .send()
            .await
            .unwrap();
        assert!(
            created.status().is_success(),
            "creating {bucket}: {created:?}"
        );
        config.storage.s3 = Some(gatehouse_server::config::S3Location {
            bucket,
            region: "us-east-1".into(),
            endpoint: Some(endpoint.to_owned()),
        });
        secrets.s3_keys = Some(("testing".to_owned().into(), "testing".to_owned().into()));
    }
    let running = server::start(&config, secrets, custom).await.unwrap();
    let read = |file: &str| std::fs::read_to_string(config.data_dir.join(file)).unwrap();
    TestServer {
        url: format!("http://{}", running.addr),
        publishable: read("publishable.key"),
        secret: read("secret.key"),
        running,
        client: reqwest::Client::new(),
        data_dir,
    }
}

impl TestServer {
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.url))
    }

    /// An access token for `user`, signed with the server's development key, as
    /// the auth endpoints will issue it.
    pub fn token_for(&self, user: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "sub": user, "role": "authenticated", "aud": "authenticated",
            "iss": format!("{}/auth/v1", self.url), "iat": now, "exp": now + 600,
        });
        self.running.state.signing_keys().sign(&claims).unwrap()
    }

    /// A request to the data API as `user` (None: anon with the publishable key).
    pub fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        user: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let request = self
            .client
            .request(method, format!("{}/rest/v1/{path}", self.url))
            .header("apikey", &self.publishable);
        match user {
            Some(user) => request.bearer_auth(self.token_for(user)),
            None => request.bearer_auth(&self.publishable),
        }
    }
}

impl TestServer {
    /// Rows read through the data API with the secret key (the server's own
    /// standing: tables without client policies too).
    pub async fn all_rows(&self, query: &str) -> serde_json::Value {
        let response = self
            .client
            .get(format!("{}/rest/v1/{query}", self.url))
            .header("apikey", &self.secret)
            .bearer_auth(&self.secret)
            .send()
            .await
            .unwrap();
        json(response).await
    }

    /// What `/metrics` shows, read with the secret key.
    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .header("apikey", &self.secret)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Reads a JSON body, failing the test with the text when it is not JSON.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The real `gatehouse` binary, started in `dir` with only the given environment.
pub struct Process {
    pub child: Child,
    pub url: String,
    pub banner: Vec<String>,
    /// Held open: a closed pipe would make the server's next message fail.
    _stderr: BufReader<ChildStderr>,
}

pub fn gatehouse(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    command.current_dir(dir).args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied());
    command
}

impl Process {
    /// Starts `gatehouse serve` on an ephemeral port and waits for its banner.
    pub fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Process {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = gatehouse(dir, &all, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut banner = Vec::new();
        let url = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                panic!("gatehouse exited before it listened: {banner:?}");
            }
            banner.push(line.trim_end().to_owned());
            // The listening address, which the public URL need not resolve to.
            if let Some(addr) = line.trim().strip_prefix("Listening on:") {
                break format!("http://{}", addr.trim());
            }
        };
        while banner.len() < 6 {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                break;
            }
            banner.push(line.trim_end().to_owned());
        }
        Process {
            child,
            url,
            banner,
            _stderr: stderr,
        }
    }

    pub fn banner_value(&self, label: &str) -> String {
        self.banner
            .iter()
            .find_map(|line| line.trim().strip_prefix(label))
            .map(|value| value.trim().to_owned())
            .unwrap_or_else(|| panic!("no {label} in {:?}", self.banner))
    }

    /// Sends SIGTERM and returns the exit status and everything logged to stdout.
    pub fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        (self.child.wait().unwrap(), stdout)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status a storage refusal names. Supabase Storage sends refusals as 400
/// with the real status in the body's `statusCode`, and so does Gatehouse.
pub async fn storage_refusal(response: reqwest::Response) -> u16 {
    assert_eq!(response.status(), 400, "storage refusals go out as 400");
    let body = json(response).await;
    body["statusCode"].as_str().unwrap().parse().unwrap()
}

/// Inserts `rows` into `table` with the secret key, as the app's own server seeds data.
pub async fn seed(server: &TestServer, table: &str, rows: serde_json::Value) -> reqwest::Response {
    server
        .client
        .post(format!("{}/rest/v1/{table}", server.url))
        .header("apikey", &server.secret)
        .bearer_auth(&server.secret)
        .json(&rows)
        .send()
        .await
        .unwrap()
}
