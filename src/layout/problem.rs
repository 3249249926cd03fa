//! One thing wrong with the repository, located as precisely as is known.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Problem {
    /// The file concerned (a tree path), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
    /// The app (or would-be app directory) concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    pub message: String,
}

impl Problem {
    pub fn in_app(app: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            file: None,
            line: None,
            column: None,
            app: Some(app.into()),
            message: message.into(),
        }
    }

    pub fn in_file(
        app: impl Into<String>,
        file: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            file: Some(file.into()),
            ..Problem::in_app(app, message)
        }
    }

    pub fn at(mut self, line: Option<usize>, column: Option<usize>) -> Self {
        self.line = line;
        self.column = column;
        self
    }
}

/// `file:line:column: message`, or `app: message` when no file is concerned.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.app) {
            (Some(file), _) => {
                write!(f, "{file}")?;
                if let Some(line) = self.line {
                    write!(f, ":{line}")?;
                    if let Some(column) = self.column {
                        write!(f, ":{column}")?;
                    }
                }
            }
            (None, Some(app)) => write!(f, "app {app}")?,
            (None, None) => write!(f, "layout")?,
        }
        write!(f, ": {}", self.message)
    }
}
