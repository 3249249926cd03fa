use std::path::PathBuf;

/// Why the configuration could not be loaded. Every message names the input at
/// fault (`file:line:column`, an environment variable, a flag, a config key or a
/// secret file) and never carries a secret: URLs are shown without userinfo and
/// variables by name only.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {} is larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    /// A YAML syntax error, an unknown key or a bad value in the config file:
    /// `file:line:column: message` (line and column where known).
    #[error("{}: {message}", location(path, *line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("flag {flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error(
        "no repository URL: set repo.url in the config file, the CANOPY_REPO_URL environment variable, or the --repo-url flag"
    )]
    MissingRepoUrl,
    /// A value read from a secret's variable or file that is not valid, or
    /// values that are fine alone but contradict each other once layered.
    #[error("{key}: {message}")]
    Value { key: String, message: String },
    #[error("{key}: environment variable {var} is unset or empty")]
    SecretEnvMissing { key: String, var: String },
    #[error("{key}: failed to read {}", path.display())]
    SecretFileRead {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: {} {problem}", path.display())]
    SecretFileInvalid {
        key: String,
        path: PathBuf,
        problem: &'static str,
    },
}

fn location(path: &std::path::Path, line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{}:{line}:{column}", path.display()),
        (Some(line), None) => format!("{}:{line}", path.display()),
        _ => path.display().to_string(),
    }
}
