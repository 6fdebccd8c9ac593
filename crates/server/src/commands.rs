//! One module per subcommand.

pub mod audit;
pub mod init;
pub mod jobs;
pub mod keys;
pub mod migrate;
pub mod policy_test;
pub mod serve;
