//! Reads field offsets from a tracepoint's `format` file, so the programs follow the running
//! kernel's record layout instead of one frozen at build time.
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("cannot read {path}")]
    Read { path: String, #[source] source: std::io::Error },
    #[error("field `{field}` not found in {path}")]
    NoField { path: String, field: String },
}

/// The `offset:` of `field` in `<tracefs>/events/<category>/<name>/format`.
pub fn field_offset(tracefs: &Path, category: &str, name: &str, field: &str) -> Result<u32, FormatError> {
    let path = tracefs.join("events").join(category).join(name).join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Read { path: path.display().to_string(), source })?;
    parse_offset(&text, field).ok_or_else(|| FormatError::NoField { path: path.display().to_string(), field: field.to_owned() })
}

/// Finds `field:<type> <field>;\toffset:N;` and returns N.
fn parse_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")).and_then(|o| o.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXEC: &str = "name: sched_process_exec\nID: 365\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:24;\tsize:16;\tsigned:0;\n";

    #[test]
    fn offsets() {
        assert_eq!(parse_offset(EXEC, "filename"), Some(8));
        assert_eq!(parse_offset(EXEC, "pid"), Some(12));
        assert_eq!(parse_offset(EXEC, "comm"), Some(24));
        assert_eq!(parse_offset(EXEC, "nope"), None);
    }
}
