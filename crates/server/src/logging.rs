use tracing_subscriber::EnvFilter;

/// Structured JSON logs on standard output, one object per line. `GATEHOUSE_LOG`
/// takes a tracing filter such as `info` or `gatehouse=debug`.
pub fn init() {
    let filter =
        EnvFilter::try_from_env("GATEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}
