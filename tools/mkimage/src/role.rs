//! Rewriting the `role` line of a role config, keeping every other byte of the file.
//!
//! The machines of a pair carry the same config except for `role`, so flipping a machine's role
//! (`mkimage set-role`) and deriving the per-role configs of a network-boot bundle are the same
//! edit: replace the value of the one `role = ...` line, keep its spacing, its comment and its
//! line ending, and check the result with the kernel's own parser.

use understudy_boot_config::{self as config, ConfigError, Role};

/// The roles, in the order menus and messages list them.
pub const ROLES: [Role; 3] = [Role::Primary, Role::Backup, Role::Arbiter];

/// The role spelled `name` (`primary`, `backup` or `arbiter`), as the config spells it.
pub fn role_named(name: &str) -> Option<Role> {
    ROLES.into_iter().find(|role| role.as_str() == name)
}

/// Why a config's role could not be rewritten.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoleLineError {
    #[error("the config is not utf-8 text: is this a role config?")]
    NotText,
    #[error("the config has no `role = ...` line: add one (role = primary, backup or arbiter)")]
    NoRoleLine,
    #[error("the config sets `role` on line {first} and again on line {second}: keep one")]
    TwoRoleLines { first: usize, second: usize },
    #[error("with the new role the config is refused: {0}")]
    Invalid(ConfigError),
}

/// Where the value of the `role` line is: its byte range in the whole text.
fn role_value(text: &str) -> Result<std::ops::Range<usize>, RoleLineError> {
    let mut found: Option<(usize, std::ops::Range<usize>)> = None;
    let mut line_start = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        // The parser's rules: `#` starts a comment, the key is what precedes the first `=`.
        let content = line.split_once('#').map_or(line, |(before, _)| before);
        if let Some((key, value)) = content.split_once('=') {
            if key.trim() == "role" {
                if let Some((first, _)) = found {
                    return Err(RoleLineError::TwoRoleLines {
                        first,
                        second: index + 1,
                    });
                }
                let value_start = line_start + key.len() + 1;
                let leading = value.len() - value.trim_start().len();
                let start = value_start + leading;
                found = Some((index + 1, start..start + value.trim().len()));
            }
        }
        line_start += line.len();
    }
    found
        .map(|(_, range)| range)
        .ok_or(RoleLineError::NoRoleLine)
}

/// The role the config names, read with the kernel's parser.
pub fn role_of(text: &[u8]) -> Result<Role, ConfigError> {
    config::parse_bytes(text).map(|config| config.role)
}

/// `text` with the value of its `role` line replaced by `role`; every other byte is kept. The
/// result must pass the kernel's parser, so a config that was broken elsewhere stays refused.
pub fn config_with_role(text: &[u8], role: Role) -> Result<Vec<u8>, RoleLineError> {
    let text = std::str::from_utf8(text).map_err(|_| RoleLineError::NotText)?;
    let value = role_value(text)?;
    let mut rewritten = String::with_capacity(text.len() + 8);
    rewritten.push_str(&text[..value.start]);
    rewritten.push_str(role.as_str());
    rewritten.push_str(&text[value.end..]);
    let parsed = role_of(rewritten.as_bytes()).map_err(RoleLineError::Invalid)?;
    assert_eq!(
        parsed, role,
        "the rewritten role line must parse as the new role"
    );
    Ok(rewritten.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = include_str!("../../../configs/primary-separate.conf");

    #[test]
    fn rewriting_the_role_changes_only_the_role_value() {
        let backup = config_with_role(PRIMARY.as_bytes(), Role::Backup).unwrap();
        assert_eq!(
            String::from_utf8(backup).unwrap(),
            PRIMARY.replace("\nrole = primary\n", "\nrole = backup\n")
        );
        let again = config_with_role(PRIMARY.as_bytes(), Role::Primary).unwrap();
        assert_eq!(again, PRIMARY.as_bytes());
    }

    #[test]
    fn spacing_comments_and_line_endings_of_the_role_line_are_kept() {
        let text = PRIMARY
            .replace(
                "\nrole = primary\n",
                "\n  role\t=  primary   # this machine\r\n",
            )
            .replace(
                "# primary | backup | arbiter",
                "# role = arbiter would be wrong here",
            );
        let arbiter = config_with_role(text.as_bytes(), Role::Arbiter).unwrap();
        let expected = text.replace("=  primary   #", "=  arbiter   #");
        assert_eq!(String::from_utf8(arbiter).unwrap(), expected);
    }

    #[test]
    fn an_unknown_role_in_the_file_can_be_replaced() {
        let text = PRIMARY.replace("role = primary", "role = leader");
        let backup = config_with_role(text.as_bytes(), Role::Backup).unwrap();
        assert_eq!(role_of(&backup), Ok(Role::Backup));
    }

    #[test]
    fn configs_without_one_role_line_or_broken_elsewhere_are_refused() {
        let none = PRIMARY.replace("role = primary", "# no role");
        assert_eq!(
            config_with_role(none.as_bytes(), Role::Backup),
            Err(RoleLineError::NoRoleLine)
        );
        let two = format!("{PRIMARY}role = backup\n");
        assert!(matches!(
            config_with_role(two.as_bytes(), Role::Backup),
            Err(RoleLineError::TwoRoleLines { first: 6, .. })
        ));
        let broken = PRIMARY.replace("port = 7000", "port = 0");
        assert!(matches!(
            config_with_role(broken.as_bytes(), Role::Backup),
            Err(RoleLineError::Invalid(ConfigError::BadPort { .. }))
        ));
        assert_eq!(
            config_with_role(b"role = \xff\n", Role::Backup),
            Err(RoleLineError::NotText)
        );
    }

    #[test]
    fn role_names_are_the_configs_spelling() {
        for role in ROLES {
            assert_eq!(role_named(role.as_str()), Some(role));
        }
        assert_eq!(role_named("Primary"), None);
        assert_eq!(role_named("leader"), None);
    }
}
