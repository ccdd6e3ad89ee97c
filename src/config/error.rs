//! Configuration errors: each names the file, line, column and key path, so a user
//! can jump straight to the mistake.

use std::fmt;

/// One problem in the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Key path such as `routes[2].upstream`; empty for file-level errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration could not be loaded. `Invalid` lists every problem found.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", format_errors(.0))]
    Invalid(Vec<ConfigError>),
}

fn format_errors(errors: &[ConfigError]) -> String {
    let mut text = String::new();
    for error in errors {
        text.push_str(&error.to_string());
        text.push('\n');
    }
    let count = errors.len();
    text.push_str(&format!(
        "{count} error{} in configuration",
        if count == 1 { "" } else { "s" }
    ));
    text
}
